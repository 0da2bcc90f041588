// Package registrytest is an in-memory registry implementing registry.Reader and
// registry.Writer with the semantics server/registry/oci.go documents, for tests of the
// handler and of anything that talks to it.
package registrytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// Registry is an in-memory registry. It is safe for concurrent use. Blob contents are stored
// once per SHA-256 of their bytes and shared by every repository that links them, as the
// origins do; a repository knows a blob or a manifest under the digest it was pushed with
// (sha256 or sha512), as the proxy's links do. The zero value is not usable; call New.
type Registry struct {
	mu       sync.Mutex
	repos    map[string]*repo
	content  map[digest.Digest][]byte // by the SHA-256 of the bytes
	sessions map[string]*session
}

type repo struct {
	blobs     map[digest.Digest]digest.Digest // pushed digest -> content key (SHA-256)
	manifests map[digest.Digest]*manifest     // pushed digest
	tags      map[string]digest.Digest
	referrers map[digest.Digest]map[digest.Digest]ocispec.Descriptor // subject -> referrer
}

type manifest struct {
	mediaType string
	body      []byte
	subject   digest.Digest
}

type session struct {
	repo string
	data []byte
	busy bool
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{
		repos:    map[string]*repo{},
		content:  map[digest.Digest][]byte{},
		sessions: map[string]*session{},
	}
}

// Interface guards
var (
	_ registry.Reader = (*Registry)(nil)
	_ registry.Writer = (*Registry)(nil)
)

// errUploadBusy is a second request writing to a session while one is.
var errUploadBusy = errcode.Errorf(http.StatusConflict, errcode.CodeBlobUploadInvalid, "another request is writing to this upload")

// repoLocked returns repo name, creating it when create is set; nil when absent.
func (r *Registry) repoLocked(name string, create bool) *repo {
	rp := r.repos[name]
	if rp == nil && create {
		rp = &repo{
			blobs:     map[digest.Digest]digest.Digest{},
			manifests: map[digest.Digest]*manifest{},
			tags:      map[string]digest.Digest{},
			referrers: map[digest.Digest]map[digest.Digest]ocispec.Descriptor{},
		}
		r.repos[name] = rp
	}
	return rp
}

// dropIfEmptyLocked forgets a repository that holds nothing, so the catalog lists only
// repositories with content.
func (r *Registry) dropIfEmptyLocked(name string) {
	rp := r.repos[name]
	if rp != nil && len(rp.blobs) == 0 && len(rp.manifests) == 0 && len(rp.tags) == 0 {
		delete(r.repos, name)
	}
}

// gcLocked drops content no repository links any more.
func (r *Registry) gcLocked(key digest.Digest) {
	for _, rp := range r.repos {
		for _, k := range rp.blobs {
			if k == key {
				return
			}
		}
	}
	delete(r.content, key)
}

// Blob implements registry.Reader.
func (r *Registry) Blob(ctx context.Context, repoName string, d digest.Digest) (registry.BlobReader, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.repoLocked(repoName, false)
	if rp == nil {
		return nil, fmt.Errorf("open blob %s of %s: %w", d, repoName, registry.ErrBlobUnknown)
	}
	key, ok := rp.blobs[d]
	if !ok {
		return nil, fmt.Errorf("open blob %s of %s: %w", d, repoName, registry.ErrBlobUnknown)
	}
	return &blobReader{data: r.content[key]}, nil
}

// blobReader reads an immutable blob from memory.
type blobReader struct{ data []byte }

func (b *blobReader) Size() int64 { return int64(len(b.data)) }

func (b *blobReader) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	if off < 0 || off > int64(len(b.data)) {
		return nil, fmt.Errorf("open blob at %d: offset outside the %d-byte blob", off, len(b.data))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open blob: %w", err)
	}
	return io.NopCloser(bytes.NewReader(b.data[off:])), nil
}

func (b *blobReader) Close() error { return nil }

// Manifest implements registry.Reader. The returned Body must not be modified.
func (r *Registry) Manifest(ctx context.Context, repoName string, ref registry.Reference) (*registry.Manifest, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.repoLocked(repoName, false)
	if rp == nil {
		return nil, fmt.Errorf("get manifest %s of %s: %w", ref, repoName, registry.ErrManifestUnknown)
	}
	d := ref.Digest
	if ref.Tag != "" {
		var ok bool
		if d, ok = rp.tags[ref.Tag]; !ok {
			return nil, fmt.Errorf("get manifest %s of %s: %w", ref, repoName, registry.ErrManifestUnknown)
		}
	}
	m, ok := rp.manifests[d]
	if !ok {
		return nil, fmt.Errorf("get manifest %s of %s: %w", ref, repoName, registry.ErrManifestUnknown)
	}
	return &registry.Manifest{Digest: d, MediaType: m.mediaType, Body: m.body}, nil
}

// page returns the sorted keys after last, at most n, and whether more follow.
func page(keys []string, last string, n int) ([]string, bool) {
	sort.Strings(keys)
	i := sort.SearchStrings(keys, last)
	if i < len(keys) && keys[i] == last {
		i++
	}
	keys = keys[i:]
	if n <= 0 {
		return []string{}, len(keys) > 0
	}
	if len(keys) > n {
		return slices.Clone(keys[:n]), true
	}
	return slices.Clone(keys), false
}

// Tags implements registry.Reader.
func (r *Registry) Tags(ctx context.Context, repoName, last string, n int) ([]string, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.repoLocked(repoName, false)
	if rp == nil {
		return []string{}, false, nil
	}
	tags, more := page(slices.Collect(maps.Keys(rp.tags)), last, n)
	return tags, more, nil
}

// Catalog implements registry.Reader: the repositories holding a blob, a manifest or a tag.
func (r *Registry) Catalog(ctx context.Context, last string, n int) ([]string, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	repos, more := page(slices.Collect(maps.Keys(r.repos)), last, n)
	return repos, more, nil
}

// Referrers implements registry.Reader, in digest order.
func (r *Registry) Referrers(ctx context.Context, repoName string, d digest.Digest) ([]ocispec.Descriptor, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.repoLocked(repoName, false)
	if rp == nil {
		return nil, nil
	}
	refs := rp.referrers[d]
	out := make([]ocispec.Descriptor, 0, len(refs))
	for _, k := range slices.Sorted(maps.Keys(refs)) {
		out = append(out, refs[k])
	}
	return out, nil
}

// StartUpload implements registry.Writer.
func (r *Registry) StartUpload(ctx context.Context, repoName string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("start upload: %w", err)
	}
	id := hex.EncodeToString(b[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sessions[id] = &session{repo: repoName}
	return id, nil
}

// sessionLocked returns the session id of repoName.
func (r *Registry) sessionLocked(repoName, id string) (*session, error) {
	s, ok := r.sessions[id]
	if !ok || s.repo != repoName {
		return nil, fmt.Errorf("upload %s of %s: %w", id, repoName, registry.ErrUploadUnknown)
	}
	return s, nil
}

// UploadOffset implements registry.Writer.
func (r *Registry) UploadOffset(ctx context.Context, repoName, id string) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.sessionLocked(repoName, id)
	if err != nil {
		return 0, err
	}
	return int64(len(s.data)), nil
}

// AppendUpload implements registry.Writer. A chunk is appended whole or not at all: when
// reading it fails, the session keeps its previous size. A session written by another request
// at the same time answers 409 BLOB_UPLOAD_INVALID.
func (r *Registry) AppendUpload(ctx context.Context, repoName, id string, offset int64, body io.Reader, length int64) (int64, error) {
	r.mu.Lock()
	s, err := r.sessionLocked(repoName, id)
	if err == nil && s.busy {
		err = fmt.Errorf("append to upload %s of %s: %w", id, repoName, errUploadBusy)
	}
	if err == nil && offset != int64(len(s.data)) {
		err = fmt.Errorf("append to upload %s of %s at %d, holding %d bytes: %w", id, repoName, offset, len(s.data), registry.ErrUploadOffset)
	}
	if err != nil {
		r.mu.Unlock()
		return 0, err
	}
	s.busy = true
	r.mu.Unlock()

	var chunk []byte
	if length >= 0 {
		chunk, err = io.ReadAll(io.LimitReader(body, length))
		if err == nil && int64(len(chunk)) < length {
			err = io.ErrUnexpectedEOF
		}
	} else {
		chunk, err = io.ReadAll(body)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	s.busy = false
	if err != nil {
		return 0, fmt.Errorf("append to upload %s of %s: %w", id, repoName, err)
	}
	if _, ok := r.sessions[id]; !ok {
		return 0, fmt.Errorf("append to upload %s of %s: %w", id, repoName, registry.ErrUploadUnknown)
	}
	s.data = append(s.data, chunk...)
	return int64(len(s.data)), nil
}

// CommitUpload implements registry.Writer.
func (r *Registry) CommitUpload(ctx context.Context, repoName, id string, d digest.Digest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.sessionLocked(repoName, id)
	if err != nil {
		return err
	}
	if s.busy {
		return fmt.Errorf("commit upload %s of %s: %w", id, repoName, errUploadBusy)
	}
	delete(r.sessions, id)
	if !d.Algorithm().Available() || d.Algorithm().FromBytes(s.data) != d {
		return fmt.Errorf("commit upload %s of %s as %s: %w", id, repoName, d, registry.ErrDigestMismatch)
	}
	r.linkBlobLocked(repoName, d, s.data)
	return nil
}

// linkBlobLocked stores data and links it into repoName under d.
func (r *Registry) linkBlobLocked(repoName string, d digest.Digest, data []byte) {
	key := digest.SHA256.FromBytes(data)
	if _, ok := r.content[key]; !ok {
		r.content[key] = data
	}
	rp := r.repoLocked(repoName, true)
	old, had := rp.blobs[d]
	rp.blobs[d] = key
	if had && old != key {
		r.gcLocked(old)
	}
}

// CancelUpload implements registry.Writer.
func (r *Registry) CancelUpload(ctx context.Context, repoName, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.sessionLocked(repoName, id); err != nil {
		return err
	}
	delete(r.sessions, id)
	return nil
}

// MountBlob implements registry.Writer.
func (r *Registry) MountBlob(ctx context.Context, repoName, from string, d digest.Digest) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var key digest.Digest
	found := false
	if from != "" {
		if src := r.repoLocked(from, false); src != nil {
			key, found = src.blobs[d]
		}
	} else {
		for _, name := range slices.Sorted(maps.Keys(r.repos)) {
			if key, found = r.repos[name].blobs[d]; found {
				break
			}
		}
	}
	if !found {
		return false, nil
	}
	r.linkBlobLocked(repoName, d, r.content[key])
	return true, nil
}

// PutManifest implements registry.Writer. m.Digest must be the digest of m.Body in its
// algorithm (else ErrDigestMismatch): the handler sets it, and a wrong one is a handler bug.
func (r *Registry) PutManifest(ctx context.Context, repoName string, m *registry.Manifest, tags []string) error {
	if err := m.Digest.Validate(); err != nil || m.Digest.Algorithm().FromBytes(m.Body) != m.Digest {
		return fmt.Errorf("put manifest %s of %s: %w", m.Digest, repoName, registry.ErrDigestMismatch)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.repos[repoName]
	for _, b := range m.Blobs {
		if rp == nil || !hasKey(rp.blobs, b.Digest) {
			return manifestBlobUnknown(repoName, m.Digest, b.Digest, "blob")
		}
	}
	for _, c := range m.Manifests {
		if rp == nil || !hasKey(rp.manifests, c.Digest) {
			return manifestBlobUnknown(repoName, m.Digest, c.Digest, "manifest")
		}
	}
	rp = r.repoLocked(repoName, true)
	if old, ok := rp.manifests[m.Digest]; ok && old.subject != "" {
		delete(rp.referrers[old.subject], m.Digest)
	}
	stored := &manifest{mediaType: m.MediaType, body: bytes.Clone(m.Body)}
	if m.Subject != nil {
		stored.subject = m.Subject.Digest
		if rp.referrers[stored.subject] == nil {
			rp.referrers[stored.subject] = map[digest.Digest]ocispec.Descriptor{}
		}
		rp.referrers[stored.subject][m.Digest] = m.Descriptor()
	}
	rp.manifests[m.Digest] = stored
	for _, t := range tags {
		rp.tags[t] = m.Digest
	}
	return nil
}

func hasKey[V any](m map[digest.Digest]V, k digest.Digest) bool {
	_, ok := m[k]
	return ok
}

// manifestBlobUnknown is the spec's MANIFEST_BLOB_UNKNOWN with the missing digest in detail.
func manifestBlobUnknown(repoName string, m, missing digest.Digest, what string) error {
	return &errcode.Error{
		Status:  http.StatusBadRequest,
		Code:    errcode.CodeManifestBlobUnknown,
		Message: fmt.Sprintf("manifest references %s %s, which is not in repository %s", what, missing, repoName),
		Detail:  map[string]string{"digest": missing.String()},
	}
}

// DeleteManifest implements registry.Writer. Tags pointing at the manifest stay (and then
// resolve to ErrManifestUnknown), as the contract says nothing more; delete them first.
func (r *Registry) DeleteManifest(ctx context.Context, repoName string, d digest.Digest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.repoLocked(repoName, false)
	if rp == nil || !hasKey(rp.manifests, d) {
		return fmt.Errorf("delete manifest %s of %s: %w", d, repoName, registry.ErrManifestUnknown)
	}
	if s := rp.manifests[d].subject; s != "" {
		delete(rp.referrers[s], d)
		if len(rp.referrers[s]) == 0 {
			delete(rp.referrers, s)
		}
	}
	delete(rp.manifests, d)
	r.dropIfEmptyLocked(repoName)
	return nil
}

// DeleteTag implements registry.Writer.
func (r *Registry) DeleteTag(ctx context.Context, repoName, tag string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.repoLocked(repoName, false)
	if rp == nil {
		return fmt.Errorf("delete tag %s of %s: %w", tag, repoName, registry.ErrManifestUnknown)
	}
	if _, ok := rp.tags[tag]; !ok {
		return fmt.Errorf("delete tag %s of %s: %w", tag, repoName, registry.ErrManifestUnknown)
	}
	delete(rp.tags, tag)
	r.dropIfEmptyLocked(repoName)
	return nil
}

// DeleteBlob implements registry.Writer.
func (r *Registry) DeleteBlob(ctx context.Context, repoName string, d digest.Digest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.repoLocked(repoName, false)
	if rp == nil || !hasKey(rp.blobs, d) {
		return fmt.Errorf("delete blob %s of %s: %w", d, repoName, registry.ErrBlobUnknown)
	}
	key := rp.blobs[d]
	delete(rp.blobs, d)
	r.dropIfEmptyLocked(repoName)
	r.gcLocked(key)
	return nil
}

// PushBlob stores data in repoName under its digest in algorithm alg (digest.SHA256 or
// digest.SHA512) and returns that digest: a seed for tests.
func (r *Registry) PushBlob(repoName string, alg digest.Algorithm, data []byte) digest.Digest {
	d := alg.FromBytes(data)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.linkBlobLocked(repoName, d, bytes.Clone(data))
	return d
}

// PushManifest parses body as a manifest of mediaType ("" detects it), stores it in repoName
// under its SHA-256 digest and points tags at it: a seed for tests. It fails as PutManifest
// does, e.g. when a blob it references has not been pushed.
func (r *Registry) PushManifest(repoName, mediaType string, body []byte, tags ...string) (digest.Digest, error) {
	m, err := registry.ParseManifest(mediaType, body)
	if err != nil {
		return "", fmt.Errorf("push manifest: %w", err)
	}
	if err := r.PutManifest(context.Background(), repoName, m, tags); err != nil {
		return "", err
	}
	return m.Digest, nil
}

// Uploads returns the number of open upload sessions, so tests can check none leaks.
func (r *Registry) Uploads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// Repositories returns the names of the repositories holding anything, sorted.
func (r *Registry) Repositories() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.repos))
}
