package replicate_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/dev"
	"github.com/krakenctl/krakenctl/server/dev/devtest"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/replicate"
	"github.com/krakenctl/krakenctl/server/seed"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// side is one in-process dev cluster as a replicate.Cluster, with the client that reaches it.
type side struct {
	dev *dev.Cluster
	hc  *http.Client
}

func (s side) cluster(name string) replicate.Cluster {
	return replicate.Cluster{
		Name:       name,
		Origins:    client.NewCluster(s.dev.Endpoints(), s.hc),
		BuildIndex: client.NewBuildIndexes([]string{s.dev.BuildIndexAddr()}, s.hc, client.BuildIndexesOptions{}),
	}
}

// start runs a three-origin cluster with a build-index; a proxy when push is set, to push to.
func start(t *testing.T, push bool) side {
	t.Helper()
	c := devtest.StartConfig(t, dev.Config{Origins: 3, BuildIndex: true, Proxy: push, Dir: t.TempDir()})
	return side{dev: c, hc: &http.Client{}}
}

// pushIndex writes a random multi-arch image to the source's proxy as repo:tag.
func pushIndex(t *testing.T, src side, repo, tag string) v1.ImageIndex {
	t.Helper()
	idx, err := random.Index(32<<10, 2, 2)
	require.NoError(t, err)
	ref, err := name.ParseReference(src.dev.ProxyAddr()+"/"+repo+":"+tag, name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.WriteIndex(ref, idx, remote.WithContext(t.Context())))
	return idx
}

// graph maps every blob of idx (the index, platform manifests, configs, layers) to its size.
func graph(t *testing.T, idx v1.ImageIndex) map[digest.Digest]int64 {
	t.Helper()
	out := map[digest.Digest]int64{}
	d, err := idx.Digest()
	require.NoError(t, err)
	raw, err := idx.RawManifest()
	require.NoError(t, err)
	out[digest.Digest(d.String())] = int64(len(raw))
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	for _, desc := range im.Manifests {
		out[digest.Digest(desc.Digest.String())] = desc.Size
		img, err := idx.Image(desc.Digest)
		require.NoError(t, err)
		m, err := img.Manifest()
		require.NoError(t, err)
		out[digest.Digest(m.Config.Digest.String())] = m.Config.Size
		for _, l := range m.Layers {
			out[digest.Digest(l.Digest.String())] = l.Size
		}
	}
	return out
}

func digestOf(t *testing.T, idx v1.ImageIndex) digest.Digest {
	t.Helper()
	d, err := idx.Digest()
	require.NoError(t, err)
	return digest.Digest(d.String())
}

// tagOf is the destination's value of repo:tag, empty when it has none.
func tagOf(t *testing.T, s side, repo, tag string) digest.Digest {
	t.Helper()
	got, err := client.NewBuildIndex(s.dev.BuildIndexAddr(), s.hc).GetTag(t.Context(), repo, tag, false)
	if client.IsNotFound(err) {
		return ""
	}
	require.NoError(t, err)
	return got.Digest
}

// holding lists the owners of d on s whose own store holds it (no pull-through).
func holding(t *testing.T, s side, ns string, d digest.Digest) (owners, have []string) {
	t.Helper()
	cl := client.NewCluster(s.dev.Endpoints(), s.hc)
	st, err := cl.Ring(t.Context(), d)
	require.NoError(t, err)
	for _, o := range st.Owners {
		if _, err := cl.Origin(o).StatLocal(t.Context(), ns, d); err == nil {
			have = append(have, o)
		}
	}
	return st.Owners, have
}

// linked reports whether s's build-index links d in repo (a manifest/ link for manifests and
// indexes, a blob/ link for the rest), as its registries need to serve it.
func linked(t *testing.T, s side, repo string, b *replicate.Blob) bool {
	t.Helper()
	name := registry.BlobLink(b.Digest)
	if b.Kind == seed.KindIndex || b.Kind == seed.KindManifest {
		name = registry.ManifestLink(b.Digest)
	}
	l, err := client.NewBuildIndex(s.dev.BuildIndexAddr(), s.hc).GetLink(t.Context(), repo, name, false)
	if client.IsNotFound(err) {
		return false
	}
	require.NoError(t, err)
	require.Equal(t, b.Digest, l.Digest)
	return true
}

func newCopier(t *testing.T, progress func(replicate.Progress)) *replicate.Copier {
	t.Helper()
	c, err := replicate.New(replicate.Config{Parallel: 3}, replicate.Deps{Progress: progress})
	require.NoError(t, err)
	return c
}

// TestCopyMultiArch copies a multi-arch image: every blob of the graph lands on its owning
// destination origins, the tag is written only after the last blob finished, and a second copy
// finds the destination up to date and sends nothing.
func TestCopyMultiArch(t *testing.T) {
	src, dst := start(t, true), start(t, false)
	idx := pushIndex(t, src, "team/app", "v1")
	want := graph(t, idx)
	require.Len(t, want, 1+2*(1+1+2))
	var total int64
	for _, n := range want {
		total += n
	}

	// Each blob's final event must come while the destination has no tag yet.
	var mu sync.Mutex
	finished := map[digest.Digest]int{}
	var early []string
	cp := newCopier(t, func(p replicate.Progress) {
		if !p.Finished {
			return
		}
		d := tagOf(t, dst, "team/app", "v1")
		mu.Lock()
		defer mu.Unlock()
		finished[p.Blob.Digest]++
		if d != "" {
			early = append(early, fmt.Sprintf("%s finished after the tag landed", p.Blob.Digest))
		}
	})
	rep, err := cp.Copy(t.Context(), src.cluster("a"), dst.cluster("b"), replicate.Target{Repo: "team/app", Tag: "v1"})
	require.NoError(t, err)
	require.Empty(t, early)
	require.Equal(t, digestOf(t, idx), rep.Digest)
	require.Equal(t, "b", rep.To)
	require.False(t, rep.UpToDate)
	require.True(t, rep.TagWritten)
	require.Equal(t, len(want), rep.Copied)
	require.Zero(t, rep.Present)
	require.Zero(t, rep.Failed)
	require.Equal(t, total, rep.Bytes)
	require.Len(t, rep.Blobs, len(want))
	for _, b := range rep.Blobs {
		require.Empty(t, b.Error)
		require.True(t, b.Copied, "%s", b.Digest)
		require.Equal(t, want[b.Digest], b.Size, "%s %s", b.Kind, b.Digest)
		require.Equal(t, 1, finished[b.Digest], "progress finished %s once", b.Digest)
		owners, have := holding(t, dst, "team/app", b.Digest)
		require.Len(t, owners, dst.dev.Replicas())
		require.ElementsMatch(t, owners, have, "destination owners of %s %s holding it", b.Kind, b.Digest)
		require.True(t, linked(t, dst, "team/app", b), "%s %s linked in the repository", b.Kind, b.Digest)
	}
	require.Equal(t, digestOf(t, idx), tagOf(t, dst, "team/app", "v1"))

	rep, err = cp.Copy(t.Context(), src.cluster("a"), dst.cluster("b"), replicate.Target{Repo: "team/app", Tag: "v1"})
	require.NoError(t, err)
	require.True(t, rep.UpToDate)
	require.False(t, rep.TagWritten)
	require.Zero(t, rep.Bytes)
	require.Zero(t, rep.Copied)
	require.Empty(t, rep.Blobs)
}

// TestCopySkipsPresentBlobs puts one layer on the destination first: the copy does not send
// it again, and counts it present.
func TestCopySkipsPresentBlobs(t *testing.T) {
	src, dst := start(t, true), start(t, false)
	idx := pushIndex(t, src, "team/app", "v1")
	want := graph(t, idx)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	img, err := idx.Image(im.Manifests[0].Digest)
	require.NoError(t, err)
	layers, err := img.Layers()
	require.NoError(t, err)
	ld, err := layers[0].Digest()
	require.NoError(t, err)
	var layer bytes.Buffer
	_, err = client.NewCluster(src.dev.Endpoints(), src.hc).Pull(t.Context(), "team/app", digest.Digest(ld.String()), &layer, nil)
	require.NoError(t, err)
	present := digest.Digest(ld.String())
	_, err = client.NewCluster(dst.dev.Endpoints(), dst.hc).Push(t.Context(), "team/app", present, bytes.NewReader(layer.Bytes()), int64(layer.Len()), client.UploadOptions{})
	require.NoError(t, err)

	rep, err := newCopier(t, nil).Copy(t.Context(), src.cluster("a"), dst.cluster("b"), replicate.Target{Repo: "team/app", Tag: "v1"})
	require.NoError(t, err)
	require.True(t, rep.TagWritten)
	require.Equal(t, 1, rep.Present)
	require.Equal(t, len(want)-1, rep.Copied)
	var total int64
	for _, n := range want {
		total += n
	}
	require.Equal(t, total-int64(layer.Len()), rep.Bytes)
	for _, b := range rep.Blobs {
		require.Equal(t, b.Digest != present, b.Copied, "%s", b.Digest)
		require.True(t, linked(t, dst, "team/app", b), "%s linked, the present one too", b.Digest)
		require.Equal(t, want[b.Digest], b.Size, "%s", b.Digest)
	}
}

// TestCopyFollowsAMovedTag copies a tag, moves it on the source, and copies again: the
// destination ends on the last value.
func TestCopyFollowsAMovedTag(t *testing.T) {
	src, dst := start(t, true), start(t, false)
	cp := newCopier(t, nil)
	first := pushIndex(t, src, "team/app", "v1")
	_, err := cp.Copy(t.Context(), src.cluster("a"), dst.cluster("b"), replicate.Target{Repo: "team/app", Tag: "v1"})
	require.NoError(t, err)
	require.Equal(t, digestOf(t, first), tagOf(t, dst, "team/app", "v1"))

	second := pushIndex(t, src, "team/app", "v1")
	require.NotEqual(t, digestOf(t, first), digestOf(t, second))
	rep, err := cp.Copy(t.Context(), src.cluster("a"), dst.cluster("b"), replicate.Target{Repo: "team/app", Tag: "v1"})
	require.NoError(t, err)
	require.False(t, rep.UpToDate)
	require.Equal(t, digestOf(t, second), rep.Digest)
	require.Equal(t, len(graph(t, second)), rep.Copied)
	require.Equal(t, digestOf(t, second), tagOf(t, dst, "team/app", "v1"))
}

// TestCopySourceLacksALayer copies a manifest whose layer no origin or backend of the source
// holds: the copy fails permanently, names the layer, sends what it can, and writes no tag.
func TestCopySourceLacksALayer(t *testing.T) {
	src, dst := start(t, false), start(t, false)
	cl := client.NewCluster(src.dev.Endpoints(), src.hc)
	push := func(b []byte) digest.Digest {
		d := digest.FromBytes(b)
		_, err := cl.Push(t.Context(), "team/broken", d, bytes.NewReader(b), int64(len(b)), client.UploadOptions{})
		require.NoError(t, err)
		return d
	}
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := make([]byte, 64<<10)
	_, _ = rand.Read(layer)
	lost := digest.FromString("never stored anywhere " + t.Name())
	cd, ld := push(config), push(layer)
	manifest := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d},`+
		`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":21}]}`,
		cd, len(config), ld, len(layer), lost)
	md := push(manifest)

	rep, err := newCopier(t, nil).Copy(t.Context(), src.cluster("a"), dst.cluster("b"),
		replicate.Target{Repo: "team/broken", Tag: "v1", Digest: md})
	require.ErrorIs(t, err, replicate.ErrPermanent)
	require.ErrorIs(t, err, replicate.ErrSourceIncomplete)
	require.ErrorContains(t, err, lost.String())
	require.False(t, rep.TagWritten)
	require.Equal(t, 1, rep.Failed)
	require.Equal(t, 3, rep.Copied, "the manifest, its config and the layer the source has")
	for _, b := range rep.Blobs {
		if b.Digest == lost {
			require.NotEmpty(t, b.Error)
			require.False(t, b.Copied)
			_, have := holding(t, dst, "team/broken", lost)
			require.Empty(t, have)
		}
	}
	require.Empty(t, tagOf(t, dst, "team/broken", "v1"), "no tag without its content")
}

// TestCopyUnknownTag fails permanently when the source has no such tag.
func TestCopyUnknownTag(t *testing.T) {
	src, dst := start(t, false), start(t, false)
	_, err := newCopier(t, nil).Copy(t.Context(), src.cluster("a"), dst.cluster("b"), replicate.Target{Repo: "team/none", Tag: "v9"})
	require.ErrorIs(t, err, replicate.ErrPermanent)
	require.ErrorIs(t, err, replicate.ErrUnknownTag)
	require.ErrorContains(t, err, "team/none:v9")
}

// TestCopyDestinationRefuses talks to a TLS destination with an agent's certificate, which
// may read but not write: every upload is refused (403), the copy fails permanently, and the
// destination holds neither blobs nor the tag.
func TestCopyDestinationRefuses(t *testing.T) {
	src := start(t, true)
	dir := t.TempDir()
	dc := devtest.StartConfig(t, dev.Config{Origins: 1, Agents: 1, BuildIndex: true, TLS: true, Dir: dir})
	keys, err := filepath.Glob(filepath.Join(dir, dev.TLSDir, "agent*-key.pem"))
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	cert := keys[0][:len(keys[0])-len("-key.pem")] + ".pem"
	p, err := pki.Load(pki.Config{CAFile: filepath.Join(dir, dev.TLSDir, "ca.pem"), CertFile: cert, KeyFile: keys[0]})
	require.NoError(t, err)
	agentClient := httpserve.NewClient(httpserve.ClientOptions{DialTLS: p.DialTLS})
	t.Cleanup(agentClient.CloseIdleConnections)
	dst := side{dev: dc, hc: agentClient}
	idx := pushIndex(t, src, "team/app", "v1")

	rep, err := newCopier(t, nil).Copy(t.Context(), src.cluster("a"), dst.cluster("b"), replicate.Target{Repo: "team/app", Tag: "v1"})
	require.ErrorIs(t, err, replicate.ErrPermanent)
	require.ErrorContains(t, err, "DENIED")
	require.False(t, rep.TagWritten)
	require.Equal(t, len(graph(t, idx)), rep.Failed)
	require.Zero(t, rep.Copied)
	require.Empty(t, tagOf(t, dst, "team/app", "v1"))
	for _, b := range rep.Blobs {
		_, have := holding(t, dst, "team/app", b.Digest)
		require.Empty(t, have, "%s", b.Digest)
	}

	// With the admin's certificate the same copy goes through.
	admin := dc.Addrs().TLS
	ap, err := pki.Load(pki.Config{CAFile: admin.CAFile, CertFile: admin.CertFile, KeyFile: admin.KeyFile})
	require.NoError(t, err)
	adminClient := httpserve.NewClient(httpserve.ClientOptions{DialTLS: ap.DialTLS})
	t.Cleanup(adminClient.CloseIdleConnections)
	dst.hc = adminClient
	rep, err = newCopier(t, nil).Copy(t.Context(), src.cluster("a"), dst.cluster("b"), replicate.Target{Repo: "team/app", Tag: "v1"})
	require.NoError(t, err)
	require.True(t, rep.TagWritten)
	require.Equal(t, digestOf(t, idx), tagOf(t, dst, "team/app", "v1"))
}

// TestNewRejectsNegatives checks the Config bounds.
func TestNewRejectsNegatives(t *testing.T) {
	_, err := replicate.New(replicate.Config{Parallel: -1}, replicate.Deps{})
	require.Error(t, err)
	_, err = replicate.New(replicate.Config{MaxBlobs: -1}, replicate.Deps{})
	require.Error(t, err)
}
