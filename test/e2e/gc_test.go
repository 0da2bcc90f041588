package e2e

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/gc"
)

// gcCluster is a `dev up` process with one origin (so no replica waits for its delayed
// write-back) and helpers to push, pull and look into the origin.
type gcCluster struct {
	*devCluster
	t  *testing.T
	hc *http.Client
}

func (c *gcCluster) ref(s string) name.Reference {
	c.t.Helper()
	ref, err := name.ParseReference(c.proxy()+"/"+s, name.Insecure)
	require.NoError(c.t, err)
	return ref
}

func (c *gcCluster) push(img v1.Image, repoTag string) digest.Digest {
	c.t.Helper()
	require.NoError(c.t, remote.Write(c.ref(repoTag), img, remote.WithContext(c.t.Context())))
	d, err := img.Digest()
	require.NoError(c.t, err)
	return digest.Digest(d.String())
}

func (c *gcCluster) pullAll(repoTag string) error {
	img, err := remote.Image(c.ref(repoTag), remote.WithContext(c.t.Context()))
	if err != nil {
		return err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		r, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, r)
		_ = r.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// stored reports whether the origin's own store holds d; the check reads it, which counts as a
// use, so call it only where that cannot change what a run decides.
func (c *gcCluster) stored(ns string, d digest.Digest) bool {
	_, err := client.NewOrigin(c.ep.Origins[0], c.hc).StatLocal(c.t.Context(), ns, d)
	return err == nil
}

// settled waits until no blob awaits its write-back (the origin holds those, and a GC keeps
// them), so that what the runs below decide does not depend on timing.
func (c *gcCluster) settled(ds ...digest.Digest) {
	c.t.Helper()
	o := client.NewOrigin(c.ep.Origins[0], c.hc)
	require.Eventually(c.t, func() bool {
		for _, d := range ds {
			res, err := o.GCDelete(c.t.Context(), d, time.Now().Add(time.Hour), true)
			if err != nil || res.Kept == api.GCKeptInUse {
				return false
			}
		}
		return true
	}, time.Minute, 20*time.Millisecond, "write-backs done")
}

func imageBlobs(t *testing.T, img v1.Image) []digest.Digest {
	t.Helper()
	m, err := img.Manifest()
	require.NoError(t, err)
	out := []digest.Digest{digest.Digest(m.Config.Digest.String())}
	for _, l := range m.Layers {
		out = append(out, digest.Digest(l.Digest.String()))
	}
	d, err := img.Digest()
	require.NoError(t, err)
	return append(out, digest.Digest(d.String()))
}

// gcReport is the part of `krakenctl gc -o json` two runs on the same state agree on.
type gcReport struct {
	Marked int `json:"marked"`
	Rows   []struct {
		Name       string         `json:"name"`
		Scanned    int            `json:"scanned"`
		Referenced int            `json:"referenced"`
		Collected  int            `json:"collected"`
		Bytes      int64          `json:"bytes_freed"`
		Kept       map[string]int `json:"kept"`
		Errors     int            `json:"errors"`
	} `json:"rows"`
}

// TestGCDryRunAgreesAndRacingPushLosesNothing drives the real binary against a real `dev up`
// process. `krakenctl gc --dry-run` reports what `krakenctl gc` then collects on the same
// state: the blobs of a deleted manifest and a lone blob, from the origin and the fs backend,
// while the tagged image still pulls. Then the fault of issue 17: a GC paused between its mark
// and its sweep while a client pushes a manifest referencing an old blob that nothing
// referenced when the mark ran; the blob survives and the image pulls.
func TestGCDryRunAgreesAndRacingPushLosesNothing(t *testing.T) {
	t.Parallel()
	dc := devUp(t, 0, "--origins", "1")
	c := &gcCluster{devCluster: dc, t: t, hc: &http.Client{Timeout: time.Minute}}
	ep := filepath.Join(dc.dir, "endpoints.yaml")

	keep, err := random.Image(4096, 2)
	require.NoError(t, err)
	drop, err := random.Image(4096, 2)
	require.NoError(t, err)
	c.push(keep, "team/keep:v1")
	dropDigest := c.push(drop, "team/drop:v1")
	dref, err := name.NewDigest(c.proxy()+"/team/drop@"+dropDigest.String(), name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Delete(dref, remote.WithContext(t.Context())))
	garbage := imageBlobs(t, drop)
	c.settled(append(imageBlobs(t, keep), garbage...)...)

	var dry, real gcReport
	out := runCmd(t, nil, bin, "gc", "--dry-run", "--grace", "0s", "--endpoints-file", ep, "-o", "json")
	require.NoError(t, json.Unmarshal([]byte(out), &dry), out)
	out = runCmd(t, nil, bin, "gc", "--grace", "0s", "--endpoints-file", ep, "-o", "json")
	require.NoError(t, json.Unmarshal([]byte(out), &real), out)
	require.Equal(t, dry, real, "the dry run reports what the run does")
	require.Len(t, real.Rows, 2, "the origin and the backend: %s", out)
	for _, r := range real.Rows {
		require.Equal(t, len(garbage), r.Collected, "%s: %s", r.Name, out)
		require.Zero(t, r.Errors)
	}
	for _, d := range garbage {
		require.False(t, c.stored("team/drop", d), d)
	}
	require.NoError(t, c.pullAll("team/keep:v1"))

	// The race: an old blob, in team/race and referenced by nothing.
	victim, err := random.Layer(8192, "application/vnd.oci.image.layer.v1.tar")
	require.NoError(t, err)
	require.NoError(t, remote.WriteLayer(c.ref("team/race").Context(), victim, remote.WithContext(t.Context())))
	vd, err := victim.Digest()
	require.NoError(t, err)
	c.settled(digest.Digest(vd.String()))
	img, err := mutate.AppendLayers(empty.Image, victim)
	require.NoError(t, err)

	cl := client.NewCluster(dc.ep.Origins, c.hc)
	ix := client.NewBuildIndexes(dc.ep.BuildIndex, c.hc, client.BuildIndexesOptions{})
	w, err := gc.NewWalker(cl, ix, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	deps := gc.ClusterDeps(cl, ix, w)
	pushed := false
	deps.AfterMark = func(context.Context) error {
		// The client finds the layer in the repository, uploads only the config, and puts the
		// manifest: the proxy touches the layer before linking it.
		c.push(img, "team/race:v1")
		pushed = true
		return nil
	}
	col, err := gc.New(gc.Config{Backends: true}, deps)
	require.NoError(t, err)
	rep, err := col.Run(t.Context())
	require.NoError(t, err)
	require.True(t, pushed)
	require.Zero(t, rep.Totals().Errors, "%+v", rep.Rows)
	require.Zero(t, rep.Totals().Collected, "nothing else was garbage: %+v", rep.Rows)
	require.NoError(t, c.pullAll("team/race:v1"))
	require.True(t, c.stored("team/race", digest.Digest(vd.String())))
}
