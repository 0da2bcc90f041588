package registrytest_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/registry/registrytest"
)

func readBlob(t *testing.T, reg *registrytest.Registry, repo string, d digest.Digest, off int64) []byte {
	t.Helper()
	br, err := reg.Blob(t.Context(), repo, d)
	require.NoError(t, err)
	defer func() { require.NoError(t, br.Close()) }()
	rc, err := br.Open(t.Context(), off)
	require.NoError(t, err)
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return b
}

func TestUploadSession(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	ctx := t.Context()
	id, err := reg.StartUpload(ctx, "r")
	require.NoError(t, err)
	n, err := reg.AppendUpload(ctx, "r", id, 0, strings.NewReader("hello "), 6)
	require.NoError(t, err)
	require.EqualValues(t, 6, n)
	_, err = reg.AppendUpload(ctx, "r", id, 3, strings.NewReader("x"), 1)
	require.ErrorIs(t, err, registry.ErrUploadOffset)
	_, err = reg.AppendUpload(ctx, "other", id, 6, strings.NewReader("x"), 1)
	require.ErrorIs(t, err, registry.ErrUploadUnknown)
	_, err = reg.UploadOffset(ctx, "other", id)
	require.ErrorIs(t, err, registry.ErrUploadUnknown)
	// A short chunk or a failing reader appends nothing.
	_, err = reg.AppendUpload(ctx, "r", id, 6, strings.NewReader("wo"), 5)
	require.Error(t, err)
	_, err = reg.AppendUpload(ctx, "r", id, 6, io.MultiReader(strings.NewReader("wo"), errReader{}), -1)
	require.Error(t, err)
	n, err = reg.UploadOffset(ctx, "r", id)
	require.NoError(t, err)
	require.EqualValues(t, 6, n)
	n, err = reg.AppendUpload(ctx, "r", id, 6, strings.NewReader("world"), -1)
	require.NoError(t, err)
	require.EqualValues(t, 11, n)

	d := digest.SHA512.FromString("hello world")
	require.NoError(t, reg.CommitUpload(ctx, "r", id, d))
	require.Equal(t, []byte("hello world"), readBlob(t, reg, "r", d, 0))
	require.Equal(t, []byte("world"), readBlob(t, reg, "r", d, 6))
	_, err = reg.Blob(ctx, "r", digest.FromString("hello world"))
	require.ErrorIs(t, err, registry.ErrBlobUnknown, "known only under the digest it was pushed with")
	_, err = reg.UploadOffset(ctx, "r", id)
	require.ErrorIs(t, err, registry.ErrUploadUnknown)
	require.Zero(t, reg.Uploads())

	// A digest mismatch ends the session and stores nothing.
	id, err = reg.StartUpload(ctx, "r")
	require.NoError(t, err)
	_, err = reg.AppendUpload(ctx, "r", id, 0, strings.NewReader("abc"), 3)
	require.NoError(t, err)
	require.ErrorIs(t, reg.CommitUpload(ctx, "r", id, digest.FromString("abd")), registry.ErrDigestMismatch)
	require.ErrorIs(t, reg.CommitUpload(ctx, "r", id, digest.FromString("abc")), registry.ErrUploadUnknown)
	_, err = reg.Blob(ctx, "r", digest.FromString("abd"))
	require.ErrorIs(t, err, registry.ErrBlobUnknown)

	// Cancel.
	id, err = reg.StartUpload(ctx, "r")
	require.NoError(t, err)
	require.ErrorIs(t, reg.CancelUpload(ctx, "s", id), registry.ErrUploadUnknown)
	require.NoError(t, reg.CancelUpload(ctx, "r", id))
	require.ErrorIs(t, reg.CancelUpload(ctx, "r", id), registry.ErrUploadUnknown)
	require.Zero(t, reg.Uploads())
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("broken") }

// blockingReader hands out one byte, then waits for release.
type blockingReader struct {
	started chan struct{}
	release chan struct{}
	sent    bool
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		close(b.started)
		p[0] = 'a'
		return 1, nil
	}
	<-b.release
	return 0, io.EOF
}

func TestUploadBusy(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	ctx := t.Context()
	id, err := reg.StartUpload(ctx, "r")
	require.NoError(t, err)
	br := &blockingReader{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := reg.AppendUpload(ctx, "r", id, 0, br, -1)
		done <- err
	}()
	<-br.started
	_, err = reg.AppendUpload(ctx, "r", id, 0, strings.NewReader("b"), 1)
	require.Equal(t, http.StatusConflict, registry.FromError(err).Status)
	require.Equal(t, http.StatusConflict, registry.FromError(reg.CommitUpload(ctx, "r", id, digest.FromString("a"))).Status)
	close(br.release)
	require.NoError(t, <-done)
	require.NoError(t, reg.CommitUpload(ctx, "r", id, digest.FromString("a")))
}

func TestMountAndDeleteBlob(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	ctx := t.Context()
	d := reg.PushBlob("a", digest.SHA256, []byte("shared"))

	ok, err := reg.MountBlob(ctx, "b", "a", d)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = reg.MountBlob(ctx, "c", "", d)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = reg.MountBlob(ctx, "d", "nowhere", d)
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = reg.MountBlob(ctx, "d", "", digest.FromString("missing"))
	require.NoError(t, err)
	require.False(t, ok)
	require.Equal(t, []string{"a", "b", "c"}, reg.Repositories())

	require.NoError(t, reg.DeleteBlob(ctx, "a", d))
	require.ErrorIs(t, reg.DeleteBlob(ctx, "a", d), registry.ErrBlobUnknown)
	_, err = reg.Blob(ctx, "a", d)
	require.ErrorIs(t, err, registry.ErrBlobUnknown)
	require.Equal(t, []byte("shared"), readBlob(t, reg, "b", d, 0), "other repositories keep their link")
	require.Equal(t, []string{"b", "c"}, reg.Repositories(), "an empty repository leaves the catalog")

	repos, more, err := reg.Catalog(ctx, "", 1)
	require.NoError(t, err)
	require.Equal(t, []string{"b"}, repos)
	require.True(t, more)
	repos, more, err = reg.Catalog(ctx, "b", 5)
	require.NoError(t, err)
	require.Equal(t, []string{"c"}, repos)
	require.False(t, more)
}

func manifestOf(t *testing.T, reg *registrytest.Registry, repo string, subject *ocispec.Descriptor, artifactType string) *registry.Manifest {
	t.Helper()
	cfg := reg.PushBlob(repo, digest.SHA256, []byte("{}"))
	subj := ""
	if subject != nil {
		subj = fmt.Sprintf(`,"subject":{"mediaType":%q,"digest":%q,"size":%d}`, subject.MediaType, subject.Digest, subject.Size)
	}
	body := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"artifactType":%q,"config":{"mediaType":%q,"digest":%q,"size":2},"layers":[]%s}`,
		ocispec.MediaTypeImageManifest, artifactType, ocispec.MediaTypeEmptyJSON, cfg, subj)
	m, err := registry.ParseManifest("", body)
	require.NoError(t, err)
	return m
}

func TestManifests(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	ctx := t.Context()
	base := manifestOf(t, reg, "r", nil, "application/vnd.base")
	require.NoError(t, reg.PutManifest(ctx, "r", base, []string{"v1", "latest"}))

	got, err := reg.Manifest(ctx, "r", registry.Reference{Tag: "v1"})
	require.NoError(t, err)
	require.Equal(t, base.Digest, got.Digest)
	require.Equal(t, base.Body, got.Body)
	require.Equal(t, ocispec.MediaTypeImageManifest, got.MediaType)
	_, err = reg.Manifest(ctx, "other", registry.Reference{Tag: "v1"})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)

	// Referrers, under the digest the subject was pushed with.
	subj := base.Descriptor()
	sig := manifestOf(t, reg, "r", &subj, "application/vnd.sig")
	sbom := manifestOf(t, reg, "r", &subj, "application/vnd.sbom")
	require.NoError(t, reg.PutManifest(ctx, "r", sig, nil))
	require.NoError(t, reg.PutManifest(ctx, "r", sbom, nil))
	refs, err := reg.Referrers(ctx, "r", base.Digest)
	require.NoError(t, err)
	require.Len(t, refs, 2)
	for _, ref := range refs {
		require.Contains(t, []digest.Digest{sig.Digest, sbom.Digest}, ref.Digest)
		require.Contains(t, []string{"application/vnd.sig", "application/vnd.sbom"}, ref.ArtifactType)
	}
	require.NoError(t, reg.DeleteManifest(ctx, "r", sig.Digest))
	refs, err = reg.Referrers(ctx, "r", base.Digest)
	require.NoError(t, err)
	require.Len(t, refs, 1)
	require.Equal(t, sbom.Digest, refs[0].Digest)
	refs, err = reg.Referrers(ctx, "nowhere", base.Digest)
	require.NoError(t, err)
	require.Empty(t, refs)

	// Tags.
	tags, more, err := reg.Tags(ctx, "r", "", 1)
	require.NoError(t, err)
	require.Equal(t, []string{"latest"}, tags)
	require.True(t, more)
	tags, more, err = reg.Tags(ctx, "r", "latest", 1)
	require.NoError(t, err)
	require.Equal(t, []string{"v1"}, tags)
	require.False(t, more)
	tags, more, err = reg.Tags(ctx, "unknown", "", 10)
	require.NoError(t, err)
	require.Empty(t, tags)
	require.False(t, more)

	require.NoError(t, reg.DeleteTag(ctx, "r", "v1"))
	require.ErrorIs(t, reg.DeleteTag(ctx, "r", "v1"), registry.ErrManifestUnknown)
	_, err = reg.Manifest(ctx, "r", registry.Reference{Tag: "v1"})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)
	_, err = reg.Manifest(ctx, "r", registry.Reference{Digest: base.Digest})
	require.NoError(t, err)
	require.NoError(t, reg.DeleteManifest(ctx, "r", base.Digest))
	require.ErrorIs(t, reg.DeleteManifest(ctx, "r", base.Digest), registry.ErrManifestUnknown)
	_, err = reg.Manifest(ctx, "r", registry.Reference{Tag: "latest"})
	require.ErrorIs(t, err, registry.ErrManifestUnknown, "a tag of a deleted manifest resolves to nothing")
}

func TestPutManifestChecks(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	ctx := t.Context()
	cfg := reg.PushBlob("r", digest.SHA256, []byte("{}"))
	missing := digest.FromString("missing")
	body := fmt.Appendf(nil, `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":%q,"size":2},"layers":[{"mediaType":"a/c","digest":%q,"size":7}]}`, cfg, missing)
	m, err := registry.ParseManifest("", body)
	require.NoError(t, err)
	err = reg.PutManifest(ctx, "r", m, []string{"t"})
	e := registry.FromError(err)
	require.Equal(t, errcode.CodeManifestBlobUnknown, e.Code)
	require.Equal(t, map[string]string{"digest": missing.String()}, e.Detail)
	_, err = reg.Manifest(ctx, "r", registry.Reference{Tag: "t"})
	require.ErrorIs(t, err, registry.ErrManifestUnknown, "nothing stored")

	idx := fmt.Appendf(nil, `{"schemaVersion":2,"manifests":[{"mediaType":%q,"digest":%q,"size":7}]}`, ocispec.MediaTypeImageManifest, missing)
	_, err = reg.PushManifest("r", "", idx)
	require.Equal(t, errcode.CodeManifestBlobUnknown, registry.FromError(err).Code)

	// The manifest's digest must be its body's.
	m.Digest = digest.FromString("not the body")
	require.ErrorIs(t, reg.PutManifest(ctx, "r", m, nil), registry.ErrDigestMismatch)

	// A sha512 push is known under sha512 only, and its children may be sha512 too.
	reg.PushBlob("r", digest.SHA256, []byte("missing"))
	m, err = registry.ParseManifest("", body)
	require.NoError(t, err)
	m.Digest = digest.SHA512.FromBytes(body)
	require.NoError(t, reg.PutManifest(ctx, "r", m, []string{"t512"}))
	got, err := reg.Manifest(ctx, "r", registry.Reference{Tag: "t512"})
	require.NoError(t, err)
	require.Equal(t, m.Digest, got.Digest)
	_, err = reg.Manifest(ctx, "r", registry.Reference{Digest: digest.FromBytes(body)})
	require.ErrorIs(t, err, registry.ErrManifestUnknown)
	idx = fmt.Appendf(nil, `{"schemaVersion":2,"manifests":[{"mediaType":%q,"digest":%q,"size":%d}]}`, ocispec.MediaTypeImageManifest, m.Digest, len(body))
	_, err = reg.PushManifest("r", "", idx, "index")
	require.NoError(t, err)
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	ctx := t.Context()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			repo := fmt.Sprintf("r%d", i%4)
			data := bytes.Repeat([]byte{byte(i)}, 100)
			id, err := reg.StartUpload(ctx, repo)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := reg.AppendUpload(ctx, repo, id, 0, bytes.NewReader(data), int64(len(data))); err != nil {
				t.Error(err)
				return
			}
			if err := reg.CommitUpload(ctx, repo, id, digest.FromBytes(data)); err != nil {
				t.Error(err)
				return
			}
			if _, err := reg.Blob(ctx, repo, digest.FromBytes(data)); err != nil {
				t.Error(err)
			}
			_, _, _ = reg.Catalog(ctx, "", 10)
		})
	}
	wg.Wait()
	require.Equal(t, []string{"r0", "r1", "r2", "r3"}, reg.Repositories())
	require.Zero(t, reg.Uploads())
}
