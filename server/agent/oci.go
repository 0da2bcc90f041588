package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
)

// Bounds of the manifest cache: manifests are immutable, so a digest's bytes never go stale,
// but tags are never cached. Entries are per repository, so that a cached manifest is never
// served from a repository that does not have it (a sha512 digest is checked against the
// repository's links).
const (
	manifestCacheBytes   = 16 << 20
	manifestCacheEntries = 1024
	// referrerFetches bounds the manifests a referrers request reads at once.
	referrerFetches = 4
)

// ociReader is the agent's registry.Reader: content through the swarm (namespace = repository),
// tags, links and listings through the build-index. It is safe for concurrent use.
type ociReader struct {
	sched     *scheduler.Scheduler
	index     *client.BuildIndexes // nil without build_index
	manifests *registry.ManifestCache
	metrics   *metrics
	links     *linkCache // links known to exist, so a pull does not ask for every layer twice
}

func newOCIReader(sched *scheduler.Scheduler, ix *client.BuildIndexes, m *metrics) *ociReader {
	return &ociReader{sched: sched, index: ix, manifests: registry.NewManifestCache(manifestCacheBytes, manifestCacheEntries), metrics: m,
		links: newLinkCache(linkCacheEntries, linkTTL)}
}

// resolve returns the SHA-256 digest content addressed by d is stored under: d itself for a
// sha256 digest, else the value of link in repo on the build-index. unknown is the error of
// content the repository does not have.
//
// Content is served only under a repository that holds it, as the proxy does: a sha256 digest
// is checked against repo's link too (answers that it is there are kept for linkTTL), so a
// client that knows a digest cannot read it through a repository it may read while the blob
// belongs to another. An agent without build_index cannot check and serves sha256 digests
// under any name; it says so at start.
func (r *ociReader) resolve(ctx context.Context, repo string, d digest.Digest, link string, unknown error) (digest.Digest, error) {
	if d.Algorithm() == digest.SHA256 && (r.index == nil || r.links.has(repo, link)) {
		return d, nil
	}
	ix, err := r.buildIndex()
	if err != nil {
		return "", err
	}
	l, err := ix.GetLink(ctx, repo, link, false)
	if err != nil {
		if client.IsNotFound(err) {
			return "", fmt.Errorf("%w: %s has no %s", unknown, repo, link)
		}
		return "", fmt.Errorf("resolve %s in %s: %w", d, repo, err)
	}
	if l.Digest.Algorithm() != digest.SHA256 || l.Digest.Validate() != nil {
		return "", fmt.Errorf("resolve %s in %s: the build-index link %s holds %q, not a sha256 digest", d, repo, link, l.Digest)
	}
	if d.Algorithm() == digest.SHA256 {
		if l.Digest != d {
			return "", fmt.Errorf("resolve %s in %s: the build-index link %s holds %s", d, repo, link, l.Digest)
		}
		r.links.add(repo, link)
	}
	return l.Digest, nil
}

// open opens stored content through the swarm; unknown is the error of content that the
// trackers and origins do not know.
func (r *ociReader) open(ctx context.Context, repo string, d digest.Digest, unknown error) (*scheduler.Download, error) {
	dl, err := r.sched.Open(ctx, repo, d)
	if err != nil {
		if errors.Is(err, announce.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s in %s: %v", unknown, d, repo, err) //nolint:errorlint // the tracker's answer is detail; unknown alone decides the code
		}
		return nil, fmt.Errorf("open %s in %s: %w", d, repo, err)
	}
	return dl, nil
}

// Blob opens blob d of repo through the swarm. The download starts (or is joined) at once, so
// a HEAD warms the agent for the GET that follows.
func (r *ociReader) Blob(ctx context.Context, repo string, d digest.Digest) (registry.BlobReader, error) {
	stored, err := r.resolve(ctx, repo, d, registry.BlobLink(d), registry.ErrBlobUnknown)
	if err != nil {
		return nil, err
	}
	dl, err := r.open(ctx, repo, stored, registry.ErrBlobUnknown)
	if err != nil {
		return nil, err
	}
	return &blobReader{dl: dl, metrics: r.metrics}, nil
}

// Manifest resolves a tag on the build-index (a linearizable read, never cached: the next pull
// sees the last push) and reads the manifest's bytes through the swarm, verified against the
// digest in its own algorithm.
func (r *ociReader) Manifest(ctx context.Context, repo string, ref registry.Reference) (*registry.Manifest, error) {
	d := ref.Digest
	if ref.Tag != "" {
		ix, err := r.buildIndex()
		if err != nil {
			return nil, err
		}
		t, err := ix.GetTag(ctx, repo, ref.Tag, false)
		if err != nil {
			if client.IsNotFound(err) {
				return nil, fmt.Errorf("%w: %s has no tag %q", registry.ErrManifestUnknown, repo, ref.Tag)
			}
			return nil, fmt.Errorf("resolve tag %s:%s: %w", repo, ref.Tag, err)
		}
		if err := t.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("resolve tag %s:%s: the build-index answered digest %q: %w", repo, ref.Tag, t.Digest, err)
		}
		d = t.Digest
	}
	return r.manifest(ctx, repo, d)
}

// manifest reads manifest d of repo, from the cache or through the swarm.
func (r *ociReader) manifest(ctx context.Context, repo string, d digest.Digest) (*registry.Manifest, error) {
	if m, ok := r.manifests.Get(repo, d); ok {
		return m, nil
	}
	stored, err := r.resolve(ctx, repo, d, registry.ManifestLink(d), registry.ErrManifestUnknown)
	if err != nil {
		return nil, err
	}
	dl, err := r.open(ctx, repo, stored, registry.ErrManifestUnknown)
	if err != nil {
		return nil, err
	}
	defer func() { _ = dl.Close() }() // read side
	size := dl.Size()
	if size > registry.MaxManifestSize {
		return nil, fmt.Errorf("%w: %s in %s is %d bytes, larger than any manifest", registry.ErrManifestUnknown, d, repo, size)
	}
	var buf bytes.Buffer
	buf.Grow(int(size))
	if _, err := dl.CopyRange(ctx, &buf, 0, size); err != nil {
		return nil, fmt.Errorf("read manifest %s in %s: %w", d, repo, err)
	}
	body := buf.Bytes()
	if got := d.Algorithm().FromBytes(body); got != d {
		return nil, fmt.Errorf("read manifest %s in %s: the stored content hashes to %s", d, repo, got)
	}
	m, err := registry.ParseManifest("", body)
	if err != nil {
		// The parse error is a *registry.Error (MANIFEST_INVALID, 400): wrapped, it would win
		// over ErrManifestUnknown when the error is mapped to a code.
		return nil, fmt.Errorf("%w: %s in %s is not a manifest: %v", registry.ErrManifestUnknown, d, repo, err) //nolint:errorlint // detail only, as said above
	}
	m.Digest = d
	r.manifests.Add(repo, m)
	return m, nil
}

// Tags lists repo's tags on the build-index, reading as many pages as n needs.
func (r *ociReader) Tags(ctx context.Context, repo, last string, n int) ([]string, bool, error) {
	ix, err := r.buildIndex()
	if err != nil {
		return nil, false, err
	}
	return ix.CollectTags(ctx, repo, last, n)
}

// Catalog lists the repositories on the build-index, reading as many pages as n needs. Behind
// auth, it lists only those the caller may pull (auth.PullFilter).
func (r *ociReader) Catalog(ctx context.Context, last string, n int) ([]string, bool, error) {
	ix, err := r.buildIndex()
	if err != nil {
		return nil, false, err
	}
	if visible := auth.PullFilter(ctx); visible != nil {
		return ix.CollectVisibleRepositories(ctx, last, n, visible)
	}
	return ix.CollectRepositories(ctx, last, n)
}

// Referrers lists the referrer links of d in repo (linearizably) and describes each referrer
// from its manifest. A link whose manifest is gone (deleted since) is skipped.
func (r *ociReader) Referrers(ctx context.Context, repo string, d digest.Digest) ([]ocispec.Descriptor, error) {
	ix, err := r.buildIndex()
	if err != nil {
		return nil, err
	}
	links, err := ix.ListLinks(ctx, repo, registry.ReferrersPrefix(d), false)
	if err != nil {
		if client.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list referrers of %s in %s: %w", d, repo, err)
	}
	refs := make([]digest.Digest, len(links))
	for i, l := range links {
		if err := l.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("list referrers of %s in %s: link %s holds %q: %w", d, repo, l.Name, l.Digest, err)
		}
		refs[i] = l.Digest
	}
	out, err := registry.DescribeReferrers(ctx, refs, referrerFetches, func(ctx context.Context, m digest.Digest) (*registry.Manifest, error) {
		return r.manifest(ctx, repo, m)
	})
	if err != nil {
		return nil, fmt.Errorf("list referrers of %s in %s: %w", d, repo, err)
	}
	return out, nil
}

// blobReader is an open blob: a scheduler.Download, which may still be downloading.
type blobReader struct {
	dl      *scheduler.Download
	metrics *metrics
}

func (b *blobReader) Size() int64 { return b.dl.Size() }

// Open waits until the byte at off is verified, so that a download failing before it is an
// error here, then returns a stream of the rest of the blob that follows the download.
func (b *blobReader) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	size := b.dl.Size()
	if off < 0 || off > size {
		return nil, errcode.Errorf(http.StatusRequestedRangeNotSatisfiable, errcode.CodeRangeInvalid,
			"offset %d is outside the blob of %d bytes", off, size)
	}
	verified := off
	if off < size {
		end, err := b.dl.Wait(ctx, off)
		if err != nil {
			return nil, fmt.Errorf("wait for blob bytes: %w", err)
		}
		verified = end
	}
	return &blobStream{ctx: ctx, dl: b.dl, metrics: b.metrics, off: off, verified: verified, size: size}, nil
}

func (b *blobReader) Close() error { return b.dl.Close() }

// blobStream reads a blob from off to its end, each byte once it is verified. It keeps the ctx
// of Open because io.Reader has no other way to receive it: Read blocks on the download only
// until that request ends.
type blobStream struct {
	ctx      context.Context
	dl       *scheduler.Download
	metrics  *metrics
	off      int64 // next byte to return
	verified int64 // end of the verified prefix, as last seen
	size     int64
}

func (s *blobStream) Read(p []byte) (int, error) {
	if s.off >= s.size {
		return 0, io.EOF
	}
	if s.off >= s.verified {
		end, err := s.dl.Wait(s.ctx, s.off)
		if err != nil {
			return 0, fmt.Errorf("read blob: %w", err)
		}
		s.verified = end
	}
	p = p[:min(int64(len(p)), s.verified-s.off)]
	n, err := s.dl.File().ReadAt(p, s.off)
	s.off += int64(n)
	s.metrics.served.Add(float64(n))
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("read blob: %w", err)
	}
	return n, nil
}

// WriteTo sends the rest of the blob to w as the download verifies it, from the file (sendfile
// when w is a connection or a response over one).
func (s *blobStream) WriteTo(w io.Writer) (int64, error) {
	if s.off >= s.size {
		return 0, nil
	}
	n, err := s.dl.CopyRange(s.ctx, w, s.off, s.size-s.off)
	s.off += n
	s.metrics.served.Add(float64(n))
	if err != nil {
		return n, fmt.Errorf("send blob: %w", err)
	}
	return n, nil
}

// Close does nothing: the blobReader owns the download.
func (s *blobStream) Close() error { return nil }

// Interface guards
var (
	_ registry.Reader     = (*ociReader)(nil)
	_ registry.BlobReader = (*blobReader)(nil)
	_ io.WriterTo         = (*blobStream)(nil)
)
