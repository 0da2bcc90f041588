package seed_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/dev"
	"github.com/krakenctl/krakenctl/server/dev/devtest"
	"github.com/krakenctl/krakenctl/server/seed"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newSeeder(t *testing.T, c *dev.Cluster, cfg seed.Config, progress func(seed.Progress)) *seed.Seeder {
	t.Helper()
	hc := &http.Client{}
	s, err := seed.New(cfg, seed.Deps{
		Origins:    client.NewCluster(c.Endpoints(), hc),
		BuildIndex: client.NewBuildIndexes([]string{c.BuildIndexAddr()}, hc, client.BuildIndexesOptions{}),
		HTTPClient: hc,
		Progress:   progress,
	})
	require.NoError(t, err)
	return s
}

// graph lists every blob of an image index as go-containerregistry sees it: the index, each
// platform manifest, its config and its layers.
func graph(t *testing.T, idx v1.ImageIndex) map[digest.Digest]seed.Kind {
	t.Helper()
	out := map[digest.Digest]seed.Kind{}
	d, err := idx.Digest()
	require.NoError(t, err)
	out[digest.Digest(d.String())] = seed.KindIndex
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	for _, desc := range im.Manifests {
		out[digest.Digest(desc.Digest.String())] = seed.KindManifest
		img, err := idx.Image(desc.Digest)
		require.NoError(t, err)
		m, err := img.Manifest()
		require.NoError(t, err)
		out[digest.Digest(m.Config.Digest.String())] = seed.KindConfig
		for _, l := range m.Layers {
			out[digest.Digest(l.Digest.String())] = seed.KindLayer
		}
	}
	return out
}

// ownersHolding returns, for d, the owners per the ring and those of them whose own store
// holds it (no pull-through).
func ownersHolding(t *testing.T, c *dev.Cluster, ns string, d digest.Digest) (owners, holding []string) {
	t.Helper()
	cl := client.NewCluster(c.Endpoints(), &http.Client{})
	st, err := cl.Ring(t.Context(), d)
	require.NoError(t, err)
	for _, o := range st.Owners {
		if _, err := cl.Origin(o).StatLocal(t.Context(), ns, d); err == nil {
			holding = append(holding, o)
		}
	}
	return st.Owners, holding
}

// TestSeedMultiArch pushes a multi-arch image through the proxy, seeds it by tag with every
// agent, and finds every blob of the graph on every owning origin and committed on every agent
// before anything pulled it.
func TestSeedMultiArch(t *testing.T) {
	c := devtest.StartConfig(t, dev.Config{Origins: 3, Agents: 2, BuildIndex: true, Proxy: true, Dir: t.TempDir()})
	idx, err := random.Index(64<<10, 2, 2)
	require.NoError(t, err)
	ref, err := name.ParseReference(c.ProxyAddr()+"/team/app:v1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.WriteIndex(ref, idx, remote.WithContext(t.Context())))
	want := graph(t, idx)
	require.Len(t, want, 1+2*(1+1+2))

	for d := range want {
		for _, a := range c.Agents() {
			ts, err := client.NewAgent(a, nil).Torrents(t.Context(), d)
			if err == nil {
				require.Empty(t, ts, "agent %s has %s before the seed", a, d)
			}
		}
	}

	var mu sync.Mutex
	finished := map[digest.Digest]int{}
	s := newSeeder(t, c, seed.Config{Agents: c.Agents()}, func(p seed.Progress) {
		if p.Finished {
			mu.Lock()
			finished[p.Blob.Digest]++
			mu.Unlock()
		}
	})
	rep, err := s.Seed(t.Context(), []seed.Target{{Repo: "team/app", Tag: "v1"}})
	require.NoError(t, err)
	require.Zero(t, rep.Failed)

	got := map[digest.Digest]seed.Kind{}
	for _, b := range rep.Blobs {
		got[b.Digest] = b.Kind
		require.Empty(t, b.Error)
		require.Positive(t, b.Size)
		require.Equal(t, len(b.Origins), seed.Warmed(b.Origins), "%s", b.Digest)
		require.Len(t, b.Agents, 2)
		require.Equal(t, 2, seed.Warmed(b.Agents), "%s", b.Digest)
	}
	require.Equal(t, want, got)
	for d := range want {
		require.Equal(t, 1, finished[d], "progress finished %s once", d)
		owners, holding := ownersHolding(t, c, "team/app", d)
		require.Len(t, owners, c.Replicas())
		require.ElementsMatch(t, owners, holding, "owners of %s holding it", d)
		for _, a := range c.Agents() {
			ts, err := client.NewAgent(a, nil).Torrents(t.Context(), d)
			require.NoError(t, err)
			require.Len(t, ts, 1)
			require.Equal(t, "seeding", ts[0].State, "agent %s, %s", a, d)
			require.NotNil(t, ts[0].Finished)
		}
	}

	// A second seed finds everything hot and changes nothing.
	rep, err = s.Seed(t.Context(), []seed.Target{{Repo: "team/app", Tag: "v1"}})
	require.NoError(t, err)
	require.Len(t, rep.Blobs, len(want))

	// A signature-like artifact whose subject is the index: seeded with --referrers only.
	sig, err := random.Image(1024, 1)
	require.NoError(t, err)
	subject, err := partial.Descriptor(idx)
	require.NoError(t, err)
	sigImg, ok := mutate.Subject(sig, *subject).(v1.Image)
	require.True(t, ok)
	sigRef, err := name.ParseReference(c.ProxyAddr()+"/team/app:sig", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(sigRef, sigImg, remote.WithContext(t.Context())))
	sigDigest, err := sigImg.Digest()
	require.NoError(t, err)
	sigManifest, err := sigImg.Manifest()
	require.NoError(t, err)
	withRefs := maps.Clone(want)
	withRefs[digest.Digest(sigDigest.String())] = seed.KindManifest
	withRefs[digest.Digest(sigManifest.Config.Digest.String())] = seed.KindConfig
	withRefs[digest.Digest(sigManifest.Layers[0].Digest.String())] = seed.KindLayer

	idxDigest, err := idx.Digest()
	require.NoError(t, err)
	for _, refs := range []bool{false, true} {
		s := newSeeder(t, c, seed.Config{Referrers: refs}, nil)
		rep, err = s.Seed(t.Context(), []seed.Target{{Repo: "team/app", Digest: digest.Digest(idxDigest.String())}})
		require.NoError(t, err)
		got := map[digest.Digest]seed.Kind{}
		for _, b := range rep.Blobs {
			got[b.Digest] = b.Kind
		}
		if refs {
			require.Equal(t, withRefs, got)
		} else {
			require.Equal(t, want, got)
		}
	}
}

// TestSeedPullsThroughAndReportsMissing puts an image in the storage backend only, with one
// layer missing: the seed pulls the manifest, the config and the other layer onto every owner,
// fails the missing layer with an error naming it and each origin, and fails overall.
func TestSeedPullsThroughAndReportsMissing(t *testing.T) {
	dir := t.TempDir()
	c := devtest.StartConfig(t, dev.Config{Origins: 3, BuildIndex: true, Dir: dir})
	be, err := fs.New(fs.Config{Root: filepath.Join(dir, "backend")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = be.Close() })
	put := func(b []byte) digest.Digest {
		d := digest.FromBytes(b)
		require.NoError(t, be.Upload(t.Context(), "team/old", d.Encoded(), bytes.NewReader(b), int64(len(b))))
		return d
	}
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := make([]byte, 100<<10)
	_, _ = rand.Read(layer)
	lost := digest.FromString("never stored anywhere")
	cd, ld := put(config), put(layer)
	manifest := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d},`+
		`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":21},`+
		`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":5,"urls":["https://example.com/x"]}]}`,
		cd, len(config), ld, len(layer), lost, digest.FromString("foreign"))
	md := put(manifest)
	for _, d := range []digest.Digest{md, cd, ld} {
		_, holding := ownersHolding(t, c, "team/old", d)
		require.Empty(t, holding, "%s is only in the backend", d)
	}
	// By digest: the build-index would refuse a tag of a manifest whose layer is missing.
	s := newSeeder(t, c, seed.Config{Parallel: 2}, nil)
	rep, err := s.Seed(t.Context(), []seed.Target{{Repo: "team/old", Digest: md}, {Repo: "team/old", Digest: cd, Blob: true}})
	require.Error(t, err)
	require.ErrorContains(t, err, lost.String())
	require.Equal(t, 1, rep.Failed)
	require.Len(t, rep.Blobs, 4, "manifest, config, two layers; the foreign layer and the repeated config are left out")
	for _, b := range rep.Blobs {
		owners, holding := ownersHolding(t, c, "team/old", b.Digest)
		if b.Digest == lost {
			require.Equal(t, seed.KindLayer, b.Kind)
			require.Zero(t, seed.Warmed(b.Origins))
			require.Len(t, b.Origins, len(owners))
			for _, o := range owners {
				require.Contains(t, b.Error, "origin "+o)
			}
			require.Contains(t, b.Error, "storage backend")
			require.Empty(t, holding)
			continue
		}
		require.Empty(t, b.Error)
		require.ElementsMatch(t, owners, holding, "owners of %s %s holding it", b.Kind, b.Digest)
	}
}

func TestSeedUnknownTag(t *testing.T) {
	c := devtest.StartConfig(t, dev.Config{Origins: 1, BuildIndex: true, Dir: t.TempDir()})
	s := newSeeder(t, c, seed.Config{}, nil)
	rep, err := s.Seed(t.Context(), []seed.Target{{Repo: "team/none", Tag: "v9"}})
	require.ErrorIs(t, err, seed.ErrUnknownTag)
	require.ErrorContains(t, err, `team/none:v9`)
	require.Empty(t, rep.Blobs)
}

// TestSeedHostileManifest seeds a chain of nested indexes deeper than the bound: the walk
// stops there with ErrGraphTooLarge; with the default bound it walks all of them.
func TestSeedHostileManifest(t *testing.T) {
	c := devtest.StartConfig(t, dev.Config{Origins: 1, BuildIndex: true, Dir: t.TempDir()})
	cl := client.NewCluster(c.Endpoints(), &http.Client{})
	push := func(b []byte) digest.Digest {
		d := digest.FromBytes(b)
		_, err := cl.Push(t.Context(), "team/deep", d, bytes.NewReader(b), int64(len(b)), client.UploadOptions{})
		require.NoError(t, err)
		return d
	}
	// A chain of 5 indexes, each listing the next: deeper than a MaxDepth of 3.
	d := push([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`))
	for range 4 {
		d = push(fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":%q,"size":1}]}`, d))
	}
	s, err := seed.New(seed.Config{MaxDepth: 3}, seed.Deps{Origins: cl})
	require.NoError(t, err)
	_, err = s.Seed(t.Context(), []seed.Target{{Repo: "team/deep", Digest: d}})
	require.ErrorIs(t, err, seed.ErrGraphTooLarge)

	s, err = seed.New(seed.Config{}, seed.Deps{Origins: cl})
	require.NoError(t, err)
	rep, err := s.Seed(t.Context(), []seed.Target{{Repo: "team/deep", Digest: d}})
	require.NoError(t, err)
	require.Len(t, rep.Blobs, 5)
}
