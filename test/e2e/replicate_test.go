package e2e

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"
)

// platformImage is a random image (two layers) whose config names platform p, as docker needs
// to pick it from an index and to accept it.
func platformImage(t *testing.T, p v1.Platform) v1.Image {
	t.Helper()
	img, err := random.Image(256<<10, 2)
	require.NoError(t, err)
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = p.OS, p.Architecture
	img, err = mutate.ConfigFile(img, cf)
	require.NoError(t, err)
	return img
}

// replicateReport is the part of `replicate run -o json` the test reads.
type replicateReport struct {
	Digest     string `json:"digest"`
	UpToDate   bool   `json:"up_to_date"`
	Copied     int    `json:"copied"`
	Present    int    `json:"present"`
	Failed     int    `json:"failed"`
	Bytes      int64  `json:"bytes"`
	TagWritten bool   `json:"tag_written"`
	Blobs      []struct {
		Digest string `json:"digest"`
		Size   int64  `json:"size"`
		Copied bool   `json:"copied"`
	} `json:"blobs"`
}

// TestReplicateRunBetweenTwoClusters pushes a two-platform image to one `dev up` cluster (A),
// copies it to another (B) with `krakenctl replicate run`, and pulls it from an agent of B,
// where nothing was pushed: the index resolves to what was pushed, and docker pulls the
// linux/amd64 image with the image ID pushed. A second run is up to date and sends nothing.
func TestReplicateRunBetweenTwoClusters(t *testing.T) {
	t.Parallel()
	a, b := devUp(t, 1), devUp(t, 1)
	fileA, fileB := filepath.Join(a.dir, "endpoints.yaml"), filepath.Join(b.dir, "endpoints.yaml")

	amd64 := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	arm64 := platformImage(t, v1.Platform{OS: "linux", Architecture: "arm64"})
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	ref, err := name.ParseReference(a.proxy()+"/team/app:v1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.WriteIndex(ref, idx, remote.WithContext(t.Context())))
	idxDigest, err := idx.Digest()
	require.NoError(t, err)
	// The graph: the index, two manifests, two configs, four layers.
	var total int64
	raw, err := idx.RawManifest()
	require.NoError(t, err)
	total += int64(len(raw))
	for _, img := range []v1.Image{amd64, arm64} {
		m, err := img.Manifest()
		require.NoError(t, err)
		rm, err := img.RawManifest()
		require.NoError(t, err)
		total += int64(len(rm)) + m.Config.Size
		for _, l := range m.Layers {
			total += l.Size
		}
	}

	// Nothing of the image is on B.
	agentB := b.ep.Agents[0]
	onB, err := name.ParseReference(agentB+"/team/app:v1", name.Insecure)
	require.NoError(t, err)
	_, err = remote.Index(onB, remote.WithContext(t.Context()))
	require.Error(t, err, "B has the tag before the copy")

	out := runCmd(t, nil, bin, "replicate", "run", "team/app:v1", "--endpoints-file", fileA, "--to", fileB, "-o", "json")
	var rep replicateReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.Equal(t, idxDigest.String(), rep.Digest)
	require.False(t, rep.UpToDate)
	require.True(t, rep.TagWritten)
	require.Equal(t, 9, rep.Copied, out)
	require.Zero(t, rep.Present)
	require.Zero(t, rep.Failed)
	require.Len(t, rep.Blobs, 9)
	require.Equal(t, total, rep.Bytes)

	// B's agent resolves the tag and serves the graph, verified by go-containerregistry.
	got, err := remote.Index(onB, remote.WithContext(t.Context()))
	require.NoError(t, err)
	gotDigest, err := got.Digest()
	require.NoError(t, err)
	require.Equal(t, idxDigest, gotDigest)
	amdDigest, err := amd64.Digest()
	require.NoError(t, err)
	pulled, err := got.Image(amdDigest)
	require.NoError(t, err)
	layers, err := pulled.Layers()
	require.NoError(t, err)
	for _, l := range layers {
		rc, err := l.Compressed()
		require.NoError(t, err)
		require.NoError(t, rc.Close())
	}

	// Again: the destination holds the tag at the same value, so nothing moves.
	out = runCmd(t, nil, bin, "replicate", "run", "team/app:v1", "--endpoints-file", fileA, "--to", fileB, "-o", "json")
	rep = replicateReport{}
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.True(t, rep.UpToDate)
	require.Zero(t, rep.Bytes)
	require.Zero(t, rep.Copied)
	require.Empty(t, rep.Blobs)
	table := runCmd(t, nil, bin, "replicate", "run", "team/app:v1", "--endpoints-file", fileA, "--to", fileB)
	require.Contains(t, table, "is up to date on "+fileB)

	t.Run("docker", func(t *testing.T) {
		d := newDockerCLI(t)
		pull := agentB + "/team/app:v1"
		t.Cleanup(func() { _, _ = tryCmd(t, d.env, "docker", "image", "rm", "--force", pull) })
		d.run("pull", "--platform", "linux/amd64", "--quiet", pull)
		cfg, err := amd64.ConfigName()
		require.NoError(t, err)
		require.Equal(t, cfg.String(), d.imageID(pull), "the image ID pushed to A, pulled from B")
		require.Equal(t, "2", d.layers(pull))
		d.rmi(pull) // the cleanup's context is over by then: it cannot remove it
	})
}
