package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// parallelism bounds the concurrent build-index or origin requests of one registry call (the
// references of a manifest, the referrers of a subject, the tags scanned by a delete).
const parallelism = 8

// untagPage is the page size of DeleteManifest's lookups of the tags pointing at the manifest.
const untagPage = 1000

// Registry is the proxy's storage for the OCI distribution API: it implements registry.Reader
// and registry.Writer on top of the origins (blob and manifest bytes, namespace = repository)
// and the build-index (tags, and the links that say which blobs and manifests each repository
// holds). It keeps no state of its own besides a cache of immutable manifests, so any number
// of proxies can serve the same cluster, and a session one started can be continued through
// another. It is safe for concurrent use.
type Registry struct {
	log     *slog.Logger
	index   *client.BuildIndexes
	origins *origins
	cache   *registry.ManifestCache
	maxBlob int64
	metrics *metrics
	// pushed, when set, is told of every manifest stored (seed.on_push). It must not block.
	pushed func(repo string, d digest.Digest)
}

// Blob opens blob d of repo: its blob/ link gives the digest it is stored under, which the
// origins serve. ErrBlobUnknown when repo has no such link, even if the origins hold d for
// another repository.
func (r *Registry) Blob(ctx context.Context, repo string, d digest.Digest) (registry.BlobReader, error) {
	s, err := r.blobLink(ctx, repo, d)
	if err != nil {
		return nil, err
	}
	size, err := r.origins.stat(ctx, repo, s)
	if errors.Is(err, registry.ErrBlobUnknown) {
		r.log.Warn("blob linked in the repository is missing from the origins", "repo", repo, "digest", d, "stored_as", s)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s of %s: %w", d, repo, err)
	}
	return &blobReader{origins: r.origins, ns: repo, stored: s, size: size}, nil
}

// blobLink returns the digest blob d of repo is stored under.
func (r *Registry) blobLink(ctx context.Context, repo string, d digest.Digest) (digest.Digest, error) {
	l, err := r.index.GetLink(ctx, repo, registry.BlobLink(d), false)
	if errors.Is(err, client.ErrNotFound) {
		return "", fmt.Errorf("blob %s in %s: %w", d, repo, registry.ErrBlobUnknown)
	}
	if err != nil {
		return "", err
	}
	return l.Digest, nil
}

// blobReader is an open blob of the origins.
type blobReader struct {
	origins *origins
	ns      string
	stored  digest.Digest
	size    int64
}

func (b *blobReader) Size() int64 { return b.size }

func (b *blobReader) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	switch {
	case off < 0 || off > b.size:
		return nil, fmt.Errorf("open blob %s at %d: out of its %d bytes", b.stored, off, b.size)
	case off == b.size:
		return io.NopCloser(strings.NewReader("")), nil
	}
	return b.origins.open(ctx, b.ns, b.stored, off)
}

func (b *blobReader) Close() error { return nil }

// Manifest returns a manifest of repo by digest (through its manifest/ link) or by tag (the
// tag's digest, then as by digest). A tag may point at a sha256 manifest that has no link (a
// tag set with `krakenctl tag put` on content pushed without the proxy): that manifest is read
// from the origins directly.
func (r *Registry) Manifest(ctx context.Context, repo string, ref registry.Reference) (*registry.Manifest, error) {
	if ref.Digest != "" {
		return r.manifest(ctx, repo, ref.Digest, false)
	}
	t, err := r.index.GetTag(ctx, repo, ref.Tag, false)
	if errors.Is(err, client.ErrNotFound) {
		return nil, fmt.Errorf("tag %s of %s: %w", ref.Tag, repo, registry.ErrManifestUnknown)
	}
	if err != nil {
		return nil, err
	}
	return r.manifest(ctx, repo, t.Digest, true)
}

// manifest returns manifest d of repo. With unlinked, a sha256 d without a manifest/ link is
// looked up in the origins under namespace repo.
func (r *Registry) manifest(ctx context.Context, repo string, d digest.Digest, unlinked bool) (*registry.Manifest, error) {
	var s digest.Digest
	l, err := r.index.GetLink(ctx, repo, registry.ManifestLink(d), false)
	switch {
	case err == nil:
		s = l.Digest
	case errors.Is(err, client.ErrNotFound) && unlinked && d.Algorithm() == digest.SHA256:
		s = d
	case errors.Is(err, client.ErrNotFound):
		return nil, fmt.Errorf("manifest %s in %s: %w", d, repo, registry.ErrManifestUnknown)
	default:
		return nil, err
	}
	if m, ok := r.cache.Get(repo, d); ok {
		r.metrics.cache.WithLabelValues("hit").Inc()
		return m, nil
	}
	r.metrics.cache.WithLabelValues("miss").Inc()
	body, err := r.origins.readSmall(ctx, repo, s, registry.MaxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("read manifest %s of %s: %w", d, repo, err)
	}
	// readSmall checked the bytes against s; d needs its own check only when it is another
	// digest (sha512) of the same bytes.
	if s != d && d.Algorithm().FromBytes(body) != d {
		return nil, fmt.Errorf("read manifest %s of %s: stored as %s, whose bytes do not hash to %s", d, repo, s, d)
	}
	m, err := registry.ParseManifest("", body)
	if err != nil {
		if l.Digest == "" {
			// An unlinked tag target that is not a manifest: nothing to serve as one.
			// The parse error is a *registry.Error (MANIFEST_INVALID, 400): wrapped, it would win
			// over ErrManifestUnknown when the error is mapped to a code.
			return nil, fmt.Errorf("manifest %s in %s is not a manifest (%v): %w", d, repo, err, registry.ErrManifestUnknown) //nolint:errorlint // detail only, as said above
		}
		return nil, fmt.Errorf("parse stored manifest %s of %s: %w", d, repo, err)
	}
	m.Digest = d
	r.cache.Add(repo, m)
	return m, nil
}

// Tags lists repo's tags from the build-index, reading as many pages as n needs.
func (r *Registry) Tags(ctx context.Context, repo, last string, n int) ([]string, bool, error) {
	return r.index.CollectTags(ctx, repo, last, n)
}

// Catalog lists repositories from the build-index, reading as many pages as n needs. Behind
// auth, it lists only the repositories the caller may pull (auth.PullFilter; see
// client.BuildIndexes.CollectVisibleRepositories for the bound on the pages one answer reads).
func (r *Registry) Catalog(ctx context.Context, last string, n int) ([]string, bool, error) {
	if visible := auth.PullFilter(ctx); visible != nil {
		return r.index.CollectVisibleRepositories(ctx, last, n, visible)
	}
	return r.index.CollectRepositories(ctx, last, n)
}

// Referrers lists the manifests of repo whose subject is d, from its referrer/ links. A link
// whose manifest is gone (deleted while the link was being removed) is skipped.
func (r *Registry) Referrers(ctx context.Context, repo string, d digest.Digest) ([]ocispec.Descriptor, error) {
	links, err := r.index.ListLinks(ctx, repo, registry.ReferrersPrefix(d), false)
	if err != nil {
		return nil, err
	}
	refs := make([]digest.Digest, len(links))
	for i, l := range links {
		refs[i] = l.Digest
	}
	out, err := registry.DescribeReferrers(ctx, refs, parallelism, func(ctx context.Context, m digest.Digest) (*registry.Manifest, error) {
		return r.manifest(ctx, repo, m, false)
	})
	if err != nil {
		return nil, fmt.Errorf("list referrers of %s in %s: %w", d, repo, err)
	}
	return out, nil
}

// StartUpload opens a session on a healthy origin chosen by repo's rank on the ring (so one
// repository's pushes go to the same origin while it is healthy), failing over to the next.
func (r *Registry) StartUpload(ctx context.Context, repo string) (string, error) {
	var id string
	_, err := r.origins.each(ctx, repo, func(addr string) error {
		oid, err := r.origins.client(addr).StartUpload(ctx, repo)
		if err != nil {
			return err
		}
		id = encodeSession(addr, oid)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("start upload in %s: %w", repo, err)
	}
	return id, nil
}

// session decodes an upload id into the origin holding the session and the origin's id.
func (r *Registry) session(id string) (string, string, error) {
	return decodeSession(id, r.origins.ring.IsMember)
}

// UploadOffset asks the origin holding the session for its size.
func (r *Registry) UploadOffset(ctx context.Context, repo, id string) (int64, error) {
	addr, oid, err := r.session(id)
	if err != nil {
		return 0, err
	}
	n, err := r.origins.client(addr).UploadOffset(ctx, repo, oid)
	return n, sessionError(err)
}

// AppendUpload relays a chunk to the origin holding the session, which checks that it starts
// at the session's end (ErrUploadOffset otherwise) and rolls a failed chunk back.
func (r *Registry) AppendUpload(ctx context.Context, repo, id string, offset int64, body io.Reader, length int64) (int64, error) {
	addr, oid, err := r.session(id)
	if err != nil {
		return 0, err
	}
	if r.maxBlob > 0 && length >= 0 && offset+length > r.maxBlob {
		return 0, tooLarge(offset+length, r.maxBlob)
	}
	cr := &chunkReader{r: body, limit: -1}
	if r.maxBlob > 0 {
		cr.limit = r.maxBlob - offset
	}
	size, err := r.origins.client(addr).AppendUpload(ctx, repo, oid, offset, cr, length)
	err = sessionError(err)
	r.metrics.uploadBytes.Add(float64(cr.n))
	switch {
	case err == nil:
		return size, nil
	case cr.over:
		return 0, tooLarge(offset+cr.n, r.maxBlob)
	case cr.err != nil:
		// The client's body failed (it went away, or sent less than it declared): the origin
		// dropped the partial chunk, so the session is as it was. The handler's reader already
		// says which (SIZE_INVALID for a short body); keep its answer.
		var re *errcode.Error
		if errors.As(cr.err, &re) {
			return 0, re
		}
		return 0, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeBlobUploadInvalid,
			Message: "reading the chunk failed", Err: cr.err}
	case length > 0 && cr.n < length && ctx.Err() == nil && errors.Is(err, client.ErrNoAnswer):
		return 0, errcode.Errorf(http.StatusBadRequest, errcode.CodeBlobUploadInvalid,
			"the chunk has %d bytes, less than the %d declared", cr.n, length)
	}
	return 0, fmt.Errorf("append to upload in %s: %w", repo, err)
}

func tooLarge(size, limit int64) error {
	return errcode.Errorf(http.StatusRequestEntityTooLarge, errcode.CodeSizeInvalid,
		"blob would be more than %d bytes (at least %d), over the limit of %d", limit, size, limit)
}

// chunkReader counts what it reads, remembers a read error, and stops with errTooLarge once
// more than limit bytes (when limit >= 0) have come.
type chunkReader struct {
	r     io.Reader
	limit int64
	n     int64
	err   error
	over  bool
}

var errTooLarge = errors.New("blob too large")

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.limit >= 0 && int64(len(p)) > c.limit-c.n+1 {
		p = p[:c.limit-c.n+1]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.limit >= 0 && c.n > c.limit {
		c.over = true
		return n, errTooLarge
	}
	if err != nil && !errors.Is(err, io.EOF) {
		c.err = err
	}
	return n, err
}

// CommitUpload commits the session on its origin (which verifies d, sha256 or sha512, and
// copies the blob to its owners), then links the blob into repo.
func (r *Registry) CommitUpload(ctx context.Context, repo, id string, d digest.Digest) error {
	addr, oid, err := r.session(id)
	if err != nil {
		return err
	}
	s, err := r.origins.client(addr).CommitUpload(ctx, repo, oid, d)
	err = sessionError(err)
	if err != nil {
		return fmt.Errorf("commit upload as %s in %s: %w", d, repo, err)
	}
	if _, err := r.index.PutLink(ctx, repo, registry.BlobLink(d), s); err != nil {
		return fmt.Errorf("link blob %s into %s: %w", d, repo, err)
	}
	return nil
}

// CancelUpload drops the session on its origin.
func (r *Registry) CancelUpload(ctx context.Context, repo, id string) error {
	addr, oid, err := r.session(id)
	if err != nil {
		return err
	}
	return sessionError(r.origins.client(addr).CancelUpload(ctx, repo, oid))
}

// MountBlob links blob d of repository from into repo when from has it. The origins record the
// blob under repo too, so it is written back to repo's storage and stays readable there.
//
// A mount without a source (from == "") mounts nothing: it would link whatever repository
// holds d into repo, so anyone who learnt a digest could read another repository's layer
// through their own (and, behind auth, without pull on it). The handler starts an upload
// instead, as the spec allows.
func (r *Registry) MountBlob(ctx context.Context, repo, from string, d digest.Digest) (bool, error) {
	if from == "" {
		return false, nil
	}
	s, err := r.blobLink(ctx, from, d)
	if errors.Is(err, registry.ErrBlobUnknown) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	ok, err := r.origins.mount(ctx, repo, from, s)
	if err != nil || !ok {
		if err == nil {
			r.log.Warn("blob linked in the source repository is missing from the origins", "repo", from, "digest", d, "stored_as", s)
		}
		return false, err
	}
	if _, err := r.index.PutLink(ctx, repo, registry.BlobLink(d), s); err != nil {
		return false, fmt.Errorf("link blob %s into %s: %w", d, repo, err)
	}
	return true, nil
}

// PutManifest checks that repo holds everything m references, stores m's bytes on the origins
// (under their SHA-256), links it into repo (and into its subject's referrers), then points
// tags at it. Nothing is written when a reference is missing.
func (r *Registry) PutManifest(ctx context.Context, repo string, m *registry.Manifest, tags []string) error {
	stored, err := r.checkReferences(ctx, repo, m)
	if err != nil {
		return err
	}
	if err := r.touchReferences(ctx, repo, m.Digest, stored); err != nil {
		return err
	}
	s := m.Digest
	if s.Algorithm() != digest.SHA256 {
		s = digest.FromBytes(m.Body)
	}
	if err := r.origins.upload(ctx, repo, s, m.Body); err != nil {
		return fmt.Errorf("store manifest %s of %s: %w", m.Digest, repo, err)
	}
	if _, err := r.index.PutLink(ctx, repo, registry.ManifestLink(m.Digest), s); err != nil {
		return fmt.Errorf("link manifest %s into %s: %w", m.Digest, repo, err)
	}
	if m.Subject != nil {
		if _, err := r.index.PutLink(ctx, repo, registry.ReferrerLink(m.Subject.Digest, m.Digest), m.Digest); err != nil {
			return fmt.Errorf("link manifest %s as a referrer of %s in %s: %w", m.Digest, m.Subject.Digest, repo, err)
		}
	}
	for _, t := range tags {
		if _, err := r.index.PutTag(ctx, repo, t, m.Digest); err != nil {
			return fmt.Errorf("tag %s:%s: %w", repo, t, err)
		}
	}
	r.cache.Add(repo, m)
	if r.pushed != nil {
		r.pushed(repo, m.Digest)
	}
	return nil
}

// checkReferences returns MANIFEST_BLOB_UNKNOWN naming the first of m's blobs without a blob/
// link, or children without a manifest/ link, in repo; else the digests they are stored under.
func (r *Registry) checkReferences(ctx context.Context, repo string, m *registry.Manifest) ([]digest.Digest, error) {
	type ref struct {
		d    digest.Digest
		link string
	}
	var refs []ref
	for _, b := range m.Blobs {
		refs = append(refs, ref{b.Digest, registry.BlobLink(b.Digest)})
	}
	for _, c := range m.Manifests {
		refs = append(refs, ref{c.Digest, registry.ManifestLink(c.Digest)})
	}
	missing := make([]bool, len(refs))
	stored := make([]digest.Digest, len(refs))
	seen := map[string]bool{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelism)
	for i, rf := range refs {
		if seen[rf.link] {
			continue
		}
		seen[rf.link] = true
		g.Go(func() error {
			l, err := r.index.GetLink(gctx, repo, rf.link, false)
			if errors.Is(err, client.ErrNotFound) {
				missing[i] = true
				return nil
			}
			stored[i] = l.Digest
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("check references of manifest %s in %s: %w", m.Digest, repo, err)
	}
	for i, rf := range refs {
		if missing[i] {
			what := "blob"
			if strings.HasPrefix(rf.link, registry.LinkManifest) {
				what = "manifest"
			}
			return nil, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeManifestBlobUnknown,
				Message: fmt.Sprintf("manifest references %s %s, which is not in repository %s", what, rf.d, repo),
				Detail:  map[string]string{"digest": rf.d.String()}}
		}
	}
	return slices.DeleteFunc(stored, func(d digest.Digest) bool { return d == "" }), nil
}

// touchReferences marks every blob a manifest references as used now on its first owner
// (pulled back from storage if the origins had dropped it), before the manifest is linked: a
// garbage collection that started earlier then keeps them (docs/gc.md). A blob no origin and
// no backend has any more was collected since it was linked: the push fails with
// MANIFEST_BLOB_UNKNOWN, so the client pushes it again, instead of linking a manifest whose
// blobs are gone.
func (r *Registry) touchReferences(ctx context.Context, repo string, md digest.Digest, stored []digest.Digest) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelism)
	for _, s := range slices.Compact(slices.Sorted(slices.Values(stored))) {
		g.Go(func() error {
			notFound, err := r.origins.each(gctx, s.String(), func(a string) error {
				return r.origins.client(a).GCTouch(gctx, repo, s)
			})
			if notFound {
				return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeManifestBlobUnknown,
					Message: fmt.Sprintf("manifest references %s, which no origin or storage holds any more (garbage-collected); push it again", s),
					Detail:  map[string]string{"digest": s.String()}, Err: err}
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("touch the references of manifest %s in %s: %w", md, repo, err)
	}
	return nil
}

// DeleteManifest removes manifest d from repo: its manifest/ link, its referrer/ link when it
// has a subject, and the tags that point at it (so no tag resolves to a deleted manifest). The
// bytes stay on the origins and in storage.
func (r *Registry) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	m, err := r.manifest(ctx, repo, d, false)
	if errors.Is(err, registry.ErrManifestUnknown) {
		return err
	}
	if err != nil {
		// The link exists but the bytes cannot be read: delete anyway, and say what may be
		// left behind.
		r.log.Warn("delete manifest: cannot read it to find its subject; a referrer link may remain", "repo", repo, "digest", d, "err", err)
		m = nil
	}
	if _, err := r.index.DeleteLink(ctx, repo, registry.ManifestLink(d)); err != nil {
		if errors.Is(err, client.ErrNotFound) {
			return fmt.Errorf("manifest %s in %s: %w", d, repo, registry.ErrManifestUnknown)
		}
		return fmt.Errorf("delete manifest %s of %s: %w", d, repo, err)
	}
	var errs []error
	if m != nil && m.Subject != nil {
		if _, err := r.index.DeleteLink(ctx, repo, registry.ReferrerLink(m.Subject.Digest, d)); err != nil && !errors.Is(err, client.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	if err := r.untag(ctx, repo, d); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		// The manifest is gone from the repository; what is left behind resolves to nothing
		// (referrers and tags of a manifest without a link are skipped or unknown), so the
		// delete stands.
		r.log.Warn("delete manifest: cleanup incomplete", "repo", repo, "digest", d, "err", err)
	}
	return nil
}

// untag deletes the tags of repo that point at d. It asks the build-index for exactly those
// (its reverse index from digest to tags), so a delete costs what the manifest's own tags cost,
// not what the repository's other tags do; a build-index too old to answer that is scanned tag
// by tag instead. A tag moved to another manifest between the lookup and the delete is put
// back.
func (r *Registry) untag(ctx context.Context, repo string, d digest.Digest) error {
	last := ""
	for {
		tags, _, err := r.index.TagsOf(ctx, repo, d, last, untagPage)
		if errors.Is(err, client.ErrUnsupported) {
			r.log.Debug("build-index cannot list tags by digest; scanning the repository's tags", "repo", repo, "err", err)
			return r.untagScan(ctx, repo, d)
		}
		if err != nil {
			return err
		}
		if len(tags) == 0 {
			return nil
		}
		if err := r.untagAll(ctx, repo, tags, d, true); err != nil {
			return err
		}
		if len(tags) < untagPage {
			return nil
		}
		last = tags[len(tags)-1]
	}
}

// untagAll deletes the tags of repo that point at d among tags. checked says tags were found
// pointing at d a moment ago (the reverse index), so each is deleted without reading it first.
func (r *Registry) untagAll(ctx context.Context, repo string, tags []string, d digest.Digest, checked bool) error {
	// Every tag is tried even when another fails, so the group never cancels.
	errs := make([]error, len(tags))
	var g errgroup.Group
	g.SetLimit(parallelism)
	for i, tag := range tags {
		g.Go(func() error {
			errs[i] = r.untagOne(ctx, repo, tag, d, checked)
			return nil
		})
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

// untagScan is untag for a build-index that predates the lookup by digest: every tag of the
// repository is read.
func (r *Registry) untagScan(ctx context.Context, repo string, d digest.Digest) error {
	last := ""
	for {
		tags, next, err := r.index.ListTags(ctx, repo, last, untagPage)
		if errors.Is(err, client.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := r.untagAll(ctx, repo, tags, d, false); err != nil {
			return err
		}
		if next == "" || len(tags) == 0 {
			return nil
		}
		last = next
	}
}

func (r *Registry) untagOne(ctx context.Context, repo, tag string, d digest.Digest, checked bool) error {
	if !checked {
		t, err := r.index.GetTag(ctx, repo, tag, false)
		if errors.Is(err, client.ErrNotFound) || err == nil && t.Digest != d {
			return nil
		}
		if err != nil {
			return err
		}
	}
	old, err := r.index.DeleteTag(ctx, repo, tag)
	if errors.Is(err, client.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if old.Digest != d {
		_, err = r.index.PutTag(ctx, repo, tag, old.Digest)
		return err
	}
	return nil
}

// DeleteTag removes a tag (not the manifest it points at).
func (r *Registry) DeleteTag(ctx context.Context, repo, tag string) error {
	_, err := r.index.DeleteTag(ctx, repo, tag)
	if errors.Is(err, client.ErrNotFound) {
		return fmt.Errorf("tag %s of %s: %w", tag, repo, registry.ErrManifestUnknown)
	}
	return err
}

// DeleteBlob removes blob d from repo (its blob/ link); the bytes stay on the origins and in
// storage, where other repositories may use them.
func (r *Registry) DeleteBlob(ctx context.Context, repo string, d digest.Digest) error {
	_, err := r.index.DeleteLink(ctx, repo, registry.BlobLink(d))
	if errors.Is(err, client.ErrNotFound) {
		return fmt.Errorf("blob %s in %s: %w", d, repo, registry.ErrBlobUnknown)
	}
	return err
}

// Interface guards
var (
	_ registry.Reader     = (*Registry)(nil)
	_ registry.Writer     = (*Registry)(nil)
	_ registry.BlobReader = (*blobReader)(nil)
)
