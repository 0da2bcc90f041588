package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/registry/registrytest"
	"github.com/krakenctl/krakenctl/server/role"
)

// image is a pushed test image: its blobs and manifest.
type image struct {
	blobs    map[digest.Digest][]byte
	manifest *registry.Manifest
}

// newImage builds an OCI image manifest over a config and n random layers, every digest in alg.
func newImage(t *testing.T, alg digest.Algorithm, layers int, subject *ocispec.Descriptor, artifactType string) image {
	t.Helper()
	img := image{blobs: map[digest.Digest][]byte{}}
	desc := func(mt string, b []byte) ocispec.Descriptor {
		d := alg.FromBytes(b)
		img.blobs[d] = b
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	cfg := desc("application/vnd.oci.image.config.v1+json", []byte(`{"architecture":"amd64","os":"linux","rand":"`+digest.FromBytes(randomBytes(t, 8)).Encoded()+`"}`))
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Subject: subject, ArtifactType: artifactType,
		Annotations: map[string]string{"test": t.Name()},
	}
	m.SchemaVersion = 2
	for range layers {
		m.Layers = append(m.Layers, desc(ocispec.MediaTypeImageLayerGzip, randomBytes(t, 3000)))
	}
	body, err := json.Marshal(m)
	require.NoError(t, err)
	pm, err := registry.ParseManifest(ocispec.MediaTypeImageManifest, body)
	require.NoError(t, err)
	pm.Digest = alg.FromBytes(body)
	img.manifest = pm
	return img
}

func (img image) push(t *testing.T, r registry.Writer, repo string, tags ...string) {
	t.Helper()
	for d, b := range img.blobs {
		push(t, r, repo, b, d, 1000)
	}
	require.NoError(t, r.PutManifest(t.Context(), repo, img.manifest, tags))
}

func requireCode(t *testing.T, err error, status int, code errcode.Code) {
	t.Helper()
	require.Error(t, err)
	e := registry.FromError(err)
	require.Equal(t, status, e.Status, "%v", err)
	require.Equal(t, code, e.Code, "%v", err)
}

// TestUploads pushes blobs as sessions of chunks (also of unknown length), and checks the
// failures: a chunk at the wrong offset, a digest that does not match, cancelled and unknown
// sessions, a blob over the size limit.
func TestUploads(t *testing.T) {
	t.Parallel()
	st := newStack(t, 3)
	p := st.newProxy(func(c *proxy.Config) { c.MaxBlobSize = 100_000 })
	r := p.Registry()
	ctx := t.Context()

	data := randomBytes(t, 50_000)
	d := digest.FromBytes(data)
	push(t, r, "lib/a", data, d, 16_000)
	require.Equal(t, data, readBlob(t, r, "lib/a", d, 0))
	require.Equal(t, data[12345:], readBlob(t, r, "lib/a", d, 12345))
	_, err := r.Blob(ctx, "lib/b", d)
	require.ErrorIs(t, err, registry.ErrBlobUnknown, "links are per repository")

	// A streamed chunk (length unknown), then one at the wrong offset: refused, nothing appended.
	id, err := r.StartUpload(ctx, "lib/a")
	require.NoError(t, err)
	n, err := r.AppendUpload(ctx, "lib/a", id, 0, bytes.NewReader(data[:1000]), -1)
	require.NoError(t, err)
	require.EqualValues(t, 1000, n)
	for _, off := range []int64{0, 999, 1001} {
		_, err = r.AppendUpload(ctx, "lib/a", id, off, bytes.NewReader(data[1000:2000]), 1000)
		require.ErrorIs(t, err, registry.ErrUploadOffset, "offset %d", off)
		_, err = r.AppendUpload(ctx, "lib/a", id, off, bytes.NewReader(data[1000:2000]), -1)
		require.ErrorIs(t, err, registry.ErrUploadOffset, "offset %d, streamed", off)
	}
	n, err = r.UploadOffset(ctx, "lib/a", id)
	require.NoError(t, err)
	require.EqualValues(t, 1000, n)
	// A chunk shorter than declared is refused and leaves the session as it was.
	_, err = r.AppendUpload(ctx, "lib/a", id, 1000, bytes.NewReader(data[1000:1500]), 1000)
	requireCode(t, err, http.StatusBadRequest, errcode.CodeBlobUploadInvalid)
	n, err = r.UploadOffset(ctx, "lib/a", id)
	require.NoError(t, err)
	require.EqualValues(t, 1000, n)

	// A digest that does not match: refused, the session is spent, nothing is linked.
	other := digest.FromBytes(data[:999])
	require.ErrorIs(t, r.CommitUpload(ctx, "lib/a", id, other), registry.ErrDigestMismatch)
	_, err = r.UploadOffset(ctx, "lib/a", id)
	require.ErrorIs(t, err, registry.ErrUploadUnknown)
	_, err = r.Blob(ctx, "lib/a", other)
	require.ErrorIs(t, err, registry.ErrBlobUnknown)

	// Cancel.
	id, err = r.StartUpload(ctx, "lib/a")
	require.NoError(t, err)
	require.NoError(t, r.CancelUpload(ctx, "lib/a", id))
	require.ErrorIs(t, r.CancelUpload(ctx, "lib/a", id), registry.ErrUploadUnknown)
	_, err = r.AppendUpload(ctx, "lib/a", id, 0, bytes.NewReader(data), int64(len(data)))
	require.ErrorIs(t, err, registry.ErrUploadUnknown)

	// Ids that are malformed or name an origin that is not configured are unknown sessions.
	_, oid, _ := strings.Cut(id, ".")
	for _, bad := range []string{"", "nodot", "!!!." + oid, "MTI3LjAuMC4xOjE." + oid, id + "/x"} {
		_, err = r.UploadOffset(ctx, "lib/a", bad)
		require.ErrorIs(t, err, registry.ErrUploadUnknown, "id %q", bad)
	}

	// Over the proxy's blob size limit: declared, and streamed.
	big := randomBytes(t, 100_001)
	id, err = r.StartUpload(ctx, "lib/a")
	require.NoError(t, err)
	_, err = r.AppendUpload(ctx, "lib/a", id, 0, bytes.NewReader(big), int64(len(big)))
	requireCode(t, err, http.StatusRequestEntityTooLarge, errcode.CodeSizeInvalid)
	_, err = r.AppendUpload(ctx, "lib/a", id, 0, bytes.NewReader(big), -1)
	requireCode(t, err, http.StatusRequestEntityTooLarge, errcode.CodeSizeInvalid)
	n, err = r.UploadOffset(ctx, "lib/a", id)
	require.NoError(t, err)
	require.Zero(t, n, "the refused chunk was rolled back")
	n, err = r.AppendUpload(ctx, "lib/a", id, 0, bytes.NewReader(big[:100_000]), -1)
	require.NoError(t, err, "exactly the limit is fine")
	require.EqualValues(t, 100_000, n)
}

// TestSessionAcrossProxies starts a session through one proxy, continues it through another and
// commits it through the first: the session lives on an origin, named by the id.
func TestSessionAcrossProxies(t *testing.T) {
	t.Parallel()
	st := newStack(t, 2)
	p1, p2 := st.newProxy(nil).Registry(), st.newProxy(nil).Registry()
	ctx := t.Context()
	data := randomBytes(t, 3000)
	d := digest.FromBytes(data)

	id, err := p1.StartUpload(ctx, "x/y")
	require.NoError(t, err)
	_, err = p1.AppendUpload(ctx, "x/y", id, 0, bytes.NewReader(data[:1000]), 1000)
	require.NoError(t, err)
	n, err := p2.UploadOffset(ctx, "x/y", id)
	require.NoError(t, err)
	require.EqualValues(t, 1000, n)
	_, err = p2.AppendUpload(ctx, "x/y", id, 1000, bytes.NewReader(data[1000:]), 2000)
	require.NoError(t, err)
	require.NoError(t, p1.CommitUpload(ctx, "x/y", id, d))
	require.Equal(t, data, readBlob(t, p2, "x/y", d, 0))

	// A proxy that does not know the origin holding a session refuses the id.
	other := st.newProxy(func(c *proxy.Config) { c.Origins = st.origins[:1] }).Registry()
	for i := range 40 {
		repo := fmt.Sprintf("x/y%d", i) // sessions start on an origin chosen by the repository
		id, err := p1.StartUpload(ctx, repo)
		require.NoError(t, err)
		if _, err := other.UploadOffset(ctx, repo, id); err != nil {
			require.ErrorIs(t, err, registry.ErrUploadUnknown)
			return
		}
	}
	t.Fatal("no session landed on the second origin in 40 repositories")
}

// TestManifests pushes an image, reads it by tag and by digest, lists tags and repositories,
// and refuses a manifest whose blobs the repository lacks, storing nothing.
func TestManifests(t *testing.T) {
	t.Parallel()
	st := newStack(t, 2)
	r := st.newProxy(nil).Registry()
	ctx := t.Context()

	img := newImage(t, digest.SHA256, 2, nil, "")
	img.push(t, r, "app/web", "v1", "latest")
	for _, ref := range []registry.Reference{{Tag: "v1"}, {Tag: "latest"}, {Digest: img.manifest.Digest}} {
		m, err := r.Manifest(ctx, "app/web", ref)
		require.NoError(t, err, ref.String())
		require.Equal(t, img.manifest.Digest, m.Digest)
		require.Equal(t, ocispec.MediaTypeImageManifest, m.MediaType)
		require.Equal(t, img.manifest.Body, m.Body)
	}
	tags, more, err := r.Tags(ctx, "app/web", "", 10)
	require.NoError(t, err)
	require.False(t, more)
	require.Equal(t, []string{"latest", "v1"}, tags)
	tags, more, err = r.Tags(ctx, "app/web", "", 1)
	require.NoError(t, err)
	require.True(t, more)
	require.Equal(t, []string{"latest"}, tags)
	tags, _, err = r.Tags(ctx, "no/such", "", 10)
	require.NoError(t, err)
	require.Empty(t, tags)
	repos, _, err := r.Catalog(ctx, "", 100)
	require.NoError(t, err)
	require.Contains(t, repos, "app/web")

	// The same manifest in a repository that lacks its blobs: refused, nothing stored.
	err = r.PutManifest(ctx, "app/other", img.manifest, []string{"v1"})
	requireCode(t, err, http.StatusBadRequest, errcode.CodeManifestBlobUnknown)
	var re *errcode.Error
	require.ErrorAs(t, err, &re)
	require.Equal(t, map[string]string{"digest": img.manifest.Blobs[0].Digest.String()}, re.Detail, "names the first missing blob: the config")
	_, err = r.Manifest(ctx, "app/other", registry.Reference{Digest: img.manifest.Digest})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)
	_, err = r.Manifest(ctx, "app/other", registry.Reference{Tag: "v1"})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)

	// Only one layer missing: still refused, naming it.
	img2 := newImage(t, digest.SHA256, 2, nil, "")
	skip := img2.manifest.Blobs[2].Digest
	for d, b := range img2.blobs {
		if d != skip {
			push(t, r, "app/web", b, d, 1000)
		}
	}
	err = r.PutManifest(ctx, "app/web", img2.manifest, []string{"v2"})
	requireCode(t, err, http.StatusBadRequest, errcode.CodeManifestBlobUnknown)
	require.Contains(t, err.Error(), skip.String())
	_, err = r.Manifest(ctx, "app/web", registry.Reference{Tag: "v2"})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)

	// An index over the image: its children must be manifests of the repository.
	idx := indexOf(t, img.manifest)
	require.NoError(t, r.PutManifest(ctx, "app/web", idx, []string{"multi"}))
	m, err := r.Manifest(ctx, "app/web", registry.Reference{Tag: "multi"})
	require.NoError(t, err)
	require.Equal(t, ocispec.MediaTypeImageIndex, m.MediaType)
	err = r.PutManifest(ctx, "app/other", idx, nil)
	requireCode(t, err, http.StatusBadRequest, errcode.CodeManifestBlobUnknown)
	require.Contains(t, err.Error(), "manifest "+img.manifest.Digest.String())

	// A manifest read through a second proxy (empty cache) is the same.
	m, err = st.newProxy(nil).Registry().Manifest(ctx, "app/web", registry.Reference{Digest: img.manifest.Digest})
	require.NoError(t, err)
	require.Equal(t, img.manifest.Body, m.Body)
}

func indexOf(t *testing.T, children ...*registry.Manifest) *registry.Manifest {
	t.Helper()
	ix := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	ix.SchemaVersion = 2
	for _, c := range children {
		ix.Manifests = append(ix.Manifests, ocispec.Descriptor{MediaType: c.MediaType, Digest: c.Digest, Size: int64(len(c.Body)),
			Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}})
	}
	body, err := json.Marshal(ix)
	require.NoError(t, err)
	m, err := registry.ParseManifest(ocispec.MediaTypeImageIndex, body)
	require.NoError(t, err)
	return m
}

// TestSHA512 pushes blobs and manifests by sha512 digest: stored under their SHA-256, served by
// the digest the client used, tags resolve to it.
func TestSHA512(t *testing.T) {
	t.Parallel()
	st := newStack(t, 2)
	r := st.newProxy(nil).Registry()
	ctx := t.Context()

	img := newImage(t, digest.SHA512, 1, nil, "")
	img.push(t, r, "s/512", "t512")
	for d, b := range img.blobs {
		require.Equal(t, b, readBlob(t, r, "s/512", d, 0))
		l, err := st.buildIndex().GetLink(ctx, "s/512", registry.BlobLink(d), false)
		require.NoError(t, err)
		require.Equal(t, digest.FromBytes(b), l.Digest, "blob/<sha512> links to the SHA-256")
	}
	m, err := r.Manifest(ctx, "s/512", registry.Reference{Tag: "t512"})
	require.NoError(t, err)
	require.Equal(t, img.manifest.Digest, m.Digest)
	require.Equal(t, digest.SHA512, m.Digest.Algorithm())
	m, err = r.Manifest(ctx, "s/512", registry.Reference{Digest: img.manifest.Digest})
	require.NoError(t, err)
	require.Equal(t, img.manifest.Body, m.Body)
	// The SHA-256 of the manifest is not a manifest of the repository: only its links are.
	_, err = r.Manifest(ctx, "s/512", registry.Reference{Digest: digest.FromBytes(img.manifest.Body)})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)

	// A sha512 blob whose content does not match.
	id, err := r.StartUpload(ctx, "s/512")
	require.NoError(t, err)
	_, err = r.AppendUpload(ctx, "s/512", id, 0, strings.NewReader("abc"), 3)
	require.NoError(t, err)
	require.ErrorIs(t, r.CommitUpload(ctx, "s/512", id, digest.SHA512.FromString("abd")), registry.ErrDigestMismatch)

	// Mounting a sha512 blob needs the source repository's link.
	var d512 digest.Digest
	for d := range img.blobs {
		d512 = d
	}
	ok, err := r.MountBlob(ctx, "s/other", "", d512)
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = r.MountBlob(ctx, "s/other", "s/512", d512)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, img.blobs[d512], readBlob(t, r, "s/other", d512, 0))
}

// TestMount links blobs into another repository without uploading them.
func TestMount(t *testing.T) {
	t.Parallel()
	st := newStack(t, 2)
	r := st.newProxy(nil).Registry()
	ctx := t.Context()
	data := randomBytes(t, 4000)
	d := digest.FromBytes(data)
	push(t, r, "m/src", data, d, 4000)

	ok, err := r.MountBlob(ctx, "m/dst", "m/src", d)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, data, readBlob(t, r, "m/dst", d, 0))

	// From a repository that does not hold it: no mount, nothing linked.
	ok, err = r.MountBlob(ctx, "m/dst2", "m/nothing", d)
	require.NoError(t, err)
	require.False(t, ok)
	_, err = r.Blob(ctx, "m/dst2", d)
	require.ErrorIs(t, err, registry.ErrBlobUnknown)

	// Without a source: nothing is mounted, even though the origins hold the blob (it would
	// link another repository's layer into this one).
	ok, err = r.MountBlob(ctx, "m/dst2", "", d)
	require.NoError(t, err)
	require.False(t, ok)
	_, err = r.Blob(ctx, "m/dst2", d)
	require.ErrorIs(t, err, registry.ErrBlobUnknown)
}

// TestReferrersAndDeletes: a manifest with a subject is listed among its referrers until it is
// deleted; deletes remove links and tags, and a second delete is unknown.
func TestReferrersAndDeletes(t *testing.T) {
	t.Parallel()
	st := newStack(t, 2)
	r := st.newProxy(nil).Registry()
	ctx := t.Context()

	img := newImage(t, digest.SHA256, 1, nil, "")
	img.push(t, r, "r/app", "v1", "same")
	subject := ocispec.Descriptor{MediaType: img.manifest.MediaType, Digest: img.manifest.Digest, Size: int64(len(img.manifest.Body))}
	sig := newImage(t, digest.SHA256, 1, &subject, "application/vnd.example.sig")
	sig.push(t, r, "r/app")
	sbom := newImage(t, digest.SHA256, 1, &subject, "")
	sbom.push(t, r, "r/app", "sbom")

	refs, err := r.Referrers(ctx, "r/app", img.manifest.Digest)
	require.NoError(t, err)
	require.Len(t, refs, 2)
	byDigest := map[digest.Digest]ocispec.Descriptor{}
	for _, d := range refs {
		byDigest[d.Digest] = d
	}
	require.Equal(t, "application/vnd.example.sig", byDigest[sig.manifest.Digest].ArtifactType)
	require.Equal(t, "application/vnd.oci.image.config.v1+json", byDigest[sbom.manifest.Digest].ArtifactType, "the config media type stands in")
	require.EqualValues(t, len(sig.manifest.Body), byDigest[sig.manifest.Digest].Size)
	require.Equal(t, t.Name(), byDigest[sig.manifest.Digest].Annotations["test"])
	refs, err = r.Referrers(ctx, "r/other", img.manifest.Digest)
	require.NoError(t, err)
	require.Empty(t, refs, "referrers are per repository")

	// Deleting a referrer removes it from the list, and the tags that point at it.
	require.NoError(t, r.DeleteManifest(ctx, "r/app", sbom.manifest.Digest))
	refs, err = r.Referrers(ctx, "r/app", img.manifest.Digest)
	require.NoError(t, err)
	require.Len(t, refs, 1)
	require.Equal(t, sig.manifest.Digest, refs[0].Digest)
	_, err = r.Manifest(ctx, "r/app", registry.Reference{Tag: "sbom"})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)
	require.ErrorIs(t, r.DeleteManifest(ctx, "r/app", sbom.manifest.Digest), registry.ErrManifestUnknown)

	// Tags.
	require.NoError(t, r.DeleteTag(ctx, "r/app", "v1"))
	require.ErrorIs(t, r.DeleteTag(ctx, "r/app", "v1"), registry.ErrManifestUnknown)
	_, err = r.Manifest(ctx, "r/app", registry.Reference{Tag: "v1"})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)
	m, err := r.Manifest(ctx, "r/app", registry.Reference{Tag: "same"})
	require.NoError(t, err, "the other tag of the manifest stays")
	require.Equal(t, img.manifest.Digest, m.Digest)

	// Deleting the image removes its remaining tag; the manifest is gone by digest.
	require.NoError(t, r.DeleteManifest(ctx, "r/app", img.manifest.Digest))
	_, err = r.Manifest(ctx, "r/app", registry.Reference{Digest: img.manifest.Digest})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)
	_, err = r.Manifest(ctx, "r/app", registry.Reference{Tag: "same"})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)
	tags, _, err := r.Tags(ctx, "r/app", "", 10)
	require.NoError(t, err)
	require.Empty(t, tags)

	// Blobs.
	for d := range img.blobs {
		require.NoError(t, r.DeleteBlob(ctx, "r/app", d))
		require.ErrorIs(t, r.DeleteBlob(ctx, "r/app", d), registry.ErrBlobUnknown)
		_, err = r.Blob(ctx, "r/app", d)
		require.ErrorIs(t, err, registry.ErrBlobUnknown)
	}
	// The bytes stay in storage for the repositories that still link them.
	for d, b := range sig.blobs {
		require.Equal(t, b, readBlob(t, r, "r/app", d, 0))
	}
}

// TestUnlinkedTag: a tag set directly on the build-index, pointing at a manifest pushed to the
// origins without the proxy, is served; the manifest is not a manifest of the repository by
// digest.
func TestUnlinkedTag(t *testing.T) {
	t.Parallel()
	st := newStack(t, 2)
	r := st.newProxy(nil).Registry()
	ctx := t.Context()
	img := newImage(t, digest.SHA256, 1, nil, "")
	cl := client.NewCluster(st.origins, st.hc)
	for d, b := range img.blobs {
		_, err := cl.Push(ctx, "raw/repo", d, bytes.NewReader(b), int64(len(b)), client.UploadOptions{})
		require.NoError(t, err)
	}
	body := img.manifest.Body
	_, err := cl.Push(ctx, "raw/repo", img.manifest.Digest, bytes.NewReader(body), int64(len(body)), client.UploadOptions{})
	require.NoError(t, err)
	_, err = st.buildIndex().PutTag(ctx, "raw/repo", "cli", img.manifest.Digest)
	require.NoError(t, err)

	m, err := r.Manifest(ctx, "raw/repo", registry.Reference{Tag: "cli"})
	require.NoError(t, err)
	require.Equal(t, body, m.Body)
	require.Equal(t, ocispec.MediaTypeImageManifest, m.MediaType)
	_, err = r.Manifest(ctx, "raw/repo", registry.Reference{Digest: img.manifest.Digest})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)

	// A tag on a blob that is not a manifest: the build-index refuses it, so the proxy never
	// has to serve one as a manifest.
	var layer digest.Digest
	for d := range img.blobs {
		if d != img.manifest.Blobs[0].Digest {
			layer = d
		}
	}
	_, err = st.buildIndex().PutTag(ctx, "raw/repo", "layer", layer)
	var e *errcode.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, errcode.CodeManifestInvalid, e.Code, "%v", err)
	_, err = r.Manifest(ctx, "raw/repo", registry.Reference{Tag: "layer"})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)
}

// TestBuildIndexFailover: the proxy asks the next build-index address when one cannot be
// reached.
func TestBuildIndexFailover(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1)
	dead := listen(t)
	deadAddr := dead.Addr().String()
	require.NoError(t, dead.Close())
	p := st.newProxy(func(c *proxy.Config) { c.BuildIndex = []string{deadAddr, st.index} })
	img := newImage(t, digest.SHA256, 1, nil, "")
	img.push(t, p.Registry(), "f/o", "v1")
	m, err := p.Registry().Manifest(t.Context(), "f/o", registry.Reference{Tag: "v1"})
	require.NoError(t, err)
	require.Equal(t, img.manifest.Digest, m.Digest)

	// With no reachable node, reads answer 503 UNAVAILABLE.
	lonely := st.newProxyUnready(func(c *proxy.Config) { c.BuildIndex = []string{deadAddr} })
	_, err = lonely.Registry().Manifest(t.Context(), "f/o", registry.Reference{Tag: "v1"})
	requireCode(t, err, http.StatusServiceUnavailable, errcode.CodeUnavailable)
	_, err = lonely.Registry().Blob(t.Context(), "f/o", img.manifest.Blobs[0].Digest)
	requireCode(t, err, http.StatusServiceUnavailable, errcode.CodeUnavailable)
}

// TestHTTP drives the proxy over HTTP for the parts the handler adds: a blob pushed with a
// monolithic POST is served with its digest; /health and /readyz answer.
func TestHTTP(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1)
	p := st.newProxy(nil)
	base := "http://" + p.Addr()
	data := randomBytes(t, 2048)
	d := digest.SHA512.FromBytes(data)
	resp := send(t, st.hc, http.MethodPost, base+"/v2/h/t/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(data))
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	require.Equal(t, d.String(), resp.Header.Get(api.HeaderContentDigest))
	resp = send(t, st.hc, http.MethodGet, base+"/v2/h/t/blobs/"+d.String(), "", nil)
	var got bytes.Buffer
	_, err := got.ReadFrom(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, data, got.Bytes())

	for _, path := range []string{"/health", "/readyz"} {
		resp := send(t, st.hc, http.MethodGet, base+path, "", nil)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
	}
}

// TestNew refuses bad configs and a missing listener.
func TestNew(t *testing.T) {
	t.Parallel()
	_, err := proxy.New(proxy.Config{Origins: []string{"127.0.0.1:1"}, BuildIndex: []string{"127.0.0.1:2"}}, proxy.Deps{})
	require.ErrorContains(t, err, "no listener")
	ln := listen(t)
	defer func() { _ = ln.Close() }()
	_, err = proxy.New(proxy.Config{}, proxy.Deps{Deps: role.Deps{Listener: ln}})
	require.ErrorContains(t, err, "origins: required")
	require.ErrorContains(t, err, "build_index: required")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := func() proxy.Config {
		return proxy.Config{Origins: []string{"127.0.0.1:15000"}, BuildIndex: []string{"127.0.0.1:15100"}}
	}
	c := good()
	c.Defaults()
	require.NoError(t, c.Validate())
	require.Equal(t, proxy.DefaultListen, c.Listen)
	c = proxy.Config{Origins: []string{"dns:///origin.kraken.svc:15000"}, BuildIndex: []string{"dns:///bi.kraken.svc:15100"}}
	c.Defaults()
	require.NoError(t, c.Validate(), "dns:/// entries are addresses too")
	for _, tc := range []struct {
		edit func(*proxy.Config)
		want string
	}{
		{func(c *proxy.Config) { c.Listen = "nope" }, "listen:"},
		{func(c *proxy.Config) { c.Origins = []string{"127.0.0.1:1", "127.0.0.1:1"} }, "origins[1]: \"127.0.0.1:1\" is listed twice"},
		{func(c *proxy.Config) { c.Origins = []string{"no-port"} }, "origins[0]"},
		{func(c *proxy.Config) { c.BuildIndex = []string{"x"} }, "build_index[0]"},
		{func(c *proxy.Config) { c.Origins = []string{"dns://origin:1"} }, "origins[0]: invalid member entry"},
		{func(c *proxy.Config) { c.BuildIndex = []string{"dns:///bi"} }, "build_index[0]: invalid member entry"},
		{func(c *proxy.Config) { c.DNSInterval = -1 }, "dns_interval"},
		{func(c *proxy.Config) { c.MaxBlobSize = -1 }, "max_blob_size"},
		{func(c *proxy.Config) { c.ManifestCache = -1 }, "manifest_cache"},
		{func(c *proxy.Config) { c.OriginHealth.Interval = -1 }, "origin_health.interval"},
		{func(c *proxy.Config) { c.OriginHealth.Timeout = time.Hour }, "origin_health.timeout"},
		{func(c *proxy.Config) { c.OriginHealth.FailThreshold = -1 }, "origin_health.fail_threshold"},
		{func(c *proxy.Config) { c.Timeouts.Dial = -1 }, "timeouts.dial"},
		{func(c *proxy.Config) { c.Timeouts.BuildIndex = -1 }, "timeouts.build_index"},
		{func(c *proxy.Config) { c.Timeouts.OriginResponse = -1 }, "timeouts.origin_response"},
	} {
		c := good()
		tc.edit(&c)
		c.Defaults()
		err := c.Validate()
		require.ErrorContains(t, err, tc.want)
	}
}

// TestGGCRClient pushes and pulls an image index with go-containerregistry's registry client
// (what crane and many build tools use): blob existence checks, streamed uploads, manifests by
// tag, a cross-repository mount, and pulls that verify every digest.
func TestGGCRClient(t *testing.T) {
	t.Parallel()
	st := newStack(t, 2)
	p := st.newProxy(nil)
	idx, err := random.Index(2048, 2, 2)
	require.NoError(t, err)
	ref, err := name.ParseReference(p.Addr()+"/ggcr/app:v1", name.Insecure)
	require.NoError(t, err)
	opts := []remote.Option{remote.WithContext(t.Context()), remote.WithTransport(st.hc.Transport)}
	require.NoError(t, remote.WriteIndex(ref, idx, opts...))

	got, err := remote.Index(ref, opts...)
	require.NoError(t, err)
	wantDigest, err := idx.Digest()
	require.NoError(t, err)
	gotDigest, err := got.Digest()
	require.NoError(t, err)
	require.Equal(t, wantDigest, gotDigest)
	im, err := got.IndexManifest()
	require.NoError(t, err)
	for _, desc := range im.Manifests {
		img, err := got.Image(desc.Digest)
		require.NoError(t, err)
		layers, err := img.Layers()
		require.NoError(t, err)
		for _, l := range layers {
			rc, err := l.Compressed() // verifies the digest as it is read
			require.NoError(t, err)
			_, err = io.Copy(io.Discard, rc)
			require.NoError(t, err)
			require.NoError(t, rc.Close())
		}
	}

	// One image into another repository: the client asks to mount its blobs from the first,
	// and the proxy mounts them (201), so no blob bytes are uploaded again.
	ref2, err := name.ParseReference(p.Addr()+"/ggcr/copy:v1", name.Insecure)
	require.NoError(t, err)
	img, err := got.Image(im.Manifests[0].Digest)
	require.NoError(t, err)
	rec := &recordingTransport{next: st.hc.Transport}
	require.NoError(t, remote.Write(ref2, img, remote.WithContext(t.Context()), remote.WithTransport(rec)))
	mounted, uploaded := 0, 0
	for _, c := range rec.calls {
		switch {
		case c.method == http.MethodPost && strings.Contains(c.url, "mount="):
			require.Equal(t, http.StatusCreated, c.status, "mount %s", c.url)
			mounted++
		case c.method == http.MethodPatch, c.method == http.MethodPut && strings.Contains(c.url, "/blobs/uploads/"):
			uploaded++
		}
	}
	require.Positive(t, mounted, "the client mounted the blobs: %v", rec.calls)
	require.Zero(t, uploaded, "no blob was uploaded again: %v", rec.calls)
	img2, err := remote.Image(ref2, opts...)
	require.NoError(t, err)
	d1, err := img.Digest()
	require.NoError(t, err)
	d2, err := img2.Digest()
	require.NoError(t, err)
	require.Equal(t, d1, d2)
	tags, err := remote.List(ref2.Context(), opts...)
	require.NoError(t, err)
	require.Equal(t, []string{"v1"}, tags)
}

// A chunk whose body stops short of its Content-Length, on a real connection, is SIZE_INVALID
// through the proxy as through the handler alone (the proxy passes the handler's answer on),
// and the session keeps its offset.
func TestShortChunkOverHTTP(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1)
	p := st.newProxy(nil)
	resp := send(t, st.hc, http.MethodPost, "http://"+p.Addr()+"/v2/h/short/blobs/uploads/", "", nil)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	loc := resp.Header.Get("Location")
	require.NotEmpty(t, loc)

	answer, err := registrytest.ShortPatch(t.Context(), p.Addr(), loc)
	require.NoError(t, err)
	require.Contains(t, answer, "HTTP/1.1 400 ")
	require.Contains(t, answer, string(errcode.CodeSizeInvalid))

	resp = send(t, st.hc, http.MethodGet, "http://"+p.Addr()+loc, "", nil)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Equal(t, "0-0", resp.Header.Get("Range"), "nothing was appended")
}

// recordingTransport notes the method, URL and status of every request it passes on.
type recordingTransport struct {
	next  http.RoundTripper
	mu    sync.Mutex
	calls []recordedCall
}

type recordedCall struct {
	method, url string
	status      int
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(req)
	c := recordedCall{method: req.Method, url: req.URL.String()}
	if err == nil {
		c.status = resp.StatusCode
	}
	rt.mu.Lock()
	rt.calls = append(rt.calls, c)
	rt.mu.Unlock()
	return resp, err
}
