package registry

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/krakenctl/krakenctl/tagstore"
)

// This file holds the contracts between the OCI distribution API handler (Handler, in this
// package) and the roles that serve it: the proxy implements Reader and Writer on top of the
// origins and the build-index; the agent implements Reader on top of the swarm and serves no
// Writer, so every write method answers 405 UNSUPPORTED.
//
// The handler owns the protocol: routing, the name, tag and digest grammar, manifest parsing and
// validation, Range, pagination, upload-session URLs, headers and error bodies. Implementations
// own storage and say only what is stored. They return errors that FromError maps (the sentinel
// errors below, or an *errcode.Error for anything more specific).

// Link kinds: per-repository records the proxy keeps on the build-index next to the tags (see
// api.LinkPath). A link's name is "<kind>/<key>" and its value is a digest.
//
//	blob/<digest>                       the blob is in the repository; the value is the SHA-256
//	                                    digest it is stored under on the origins (equal to the key
//	                                    for sha256 digests; the content's SHA-256 for sha512 ones)
//	manifest/<digest>                   the same for a manifest
//	referrer/<subject digest>/<digest>  a manifest in the repository whose subject is <subject>;
//	                                    the value is the referrer's own digest (the key's last part)
const (
	LinkBlob     = tagstore.LinkKindBlob
	LinkManifest = tagstore.LinkKindManifest
	LinkReferrer = tagstore.LinkKindReferrer
)

// BlobLink, ManifestLink and ReferrerLink build link names.
func BlobLink(d digest.Digest) string     { return LinkBlob + "/" + d.String() }
func ManifestLink(d digest.Digest) string { return LinkManifest + "/" + d.String() }
func ReferrerLink(subject, d digest.Digest) string {
	return LinkReferrer + "/" + subject.String() + "/" + d.String()
}

// ReferrersPrefix is the link-name prefix of every referrer of subject.
func ReferrersPrefix(subject digest.Digest) string {
	return LinkReferrer + "/" + subject.String() + "/"
}

// MaxManifestSize is the largest manifest accepted or served (the spec's suggested 4 MiB).
const MaxManifestSize = 4 << 20

// Manifest is a manifest as stored and served: its exact bytes, their digest, and its media
// type. Parsed fields are filled by ParseManifest.
type Manifest struct {
	// Digest is the digest of Body in the algorithm the client addressed it with (sha256 unless
	// the client pushed by a sha512 digest).
	Digest    digest.Digest
	MediaType string
	Body      []byte

	// Parsed by ParseManifest. Blobs are the config and layers of an image manifest (the blobs
	// that must exist in the repository, foreign/non-distributable layers excluded); Manifests
	// the children of an index. Subject is the manifest this one refers to (referrers API).
	// Config is the config descriptor of an image manifest (also first in Blobs), nil for an
	// index.
	Config       *ocispec.Descriptor
	Blobs        []ocispec.Descriptor
	Manifests    []ocispec.Descriptor
	Subject      *ocispec.Descriptor
	ArtifactType string
	Annotations  map[string]string
}

// Reference is a manifest reference: exactly one of Tag and Digest is set.
type Reference struct {
	Tag    string
	Digest digest.Digest
}

func (r Reference) String() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// BlobReader is an open blob. Close releases it. It is used by one request at a time.
type BlobReader interface {
	// Size is the blob's length in bytes.
	Size() int64
	// Open returns the blob's bytes from off to the end. It blocks until the byte at off is
	// available (an agent may still be downloading) or ctx ends; the error of a download that
	// fails before then is returned here, so the handler can still answer with a status.
	Open(ctx context.Context, off int64) (io.ReadCloser, error)
	Close() error
}

// Reader is the pull side of a registry. Implementations are safe for concurrent use. Names,
// tags and digests are validated by the handler before these are called.
type Reader interface {
	// Blob opens blob d of repo; ErrBlobUnknown when the repository has no such blob.
	Blob(ctx context.Context, repo string, d digest.Digest) (BlobReader, error)
	// Manifest returns a manifest of repo by tag or digest, with Digest and MediaType set
	// (parsed fields may be left empty); ErrManifestUnknown when there is none. For a tag,
	// Digest is the digest the tag points at.
	Manifest(ctx context.Context, repo string, ref Reference) (*Manifest, error)
	// Tags lists repo's tags in lexical order after last, at most n (n > 0); more reports
	// whether there are others after the page. An unknown repository has no tags (no error).
	Tags(ctx context.Context, repo, last string, n int) (tags []string, more bool, err error)
	// Catalog lists repository names in lexical order after last, at most n.
	Catalog(ctx context.Context, last string, n int) (repos []string, more bool, err error)
	// Referrers returns descriptors of the manifests in repo whose subject is d (mediaType,
	// digest, size, artifactType, annotations), unfiltered; none is not an error.
	Referrers(ctx context.Context, repo string, d digest.Digest) ([]ocispec.Descriptor, error)
}

// Writer is the push side of a registry. Implementations are safe for concurrent use. An upload
// session is named by an opaque id the implementation chooses (URL-safe, so the handler can put
// it in Location); any proxy instance must be able to continue a session another one started.
type Writer interface {
	// StartUpload opens an upload session in repo.
	StartUpload(ctx context.Context, repo string) (id string, err error)
	// UploadOffset is the number of bytes the session holds; ErrUploadUnknown when the session
	// does not exist (never did, finished, or was cancelled).
	UploadOffset(ctx context.Context, repo, id string) (int64, error)
	// AppendUpload appends r (length bytes, or to EOF when length < 0) at offset, which must be
	// the session's current size (else ErrUploadOffset), and returns the new size.
	AppendUpload(ctx context.Context, repo, id string, offset int64, r io.Reader, length int64) (int64, error)
	// CommitUpload finishes the session: the content must hash to d (sha256 or sha512; else
	// ErrDigestMismatch, and the session is gone), then the blob is in repo.
	CommitUpload(ctx context.Context, repo, id string, d digest.Digest) error
	// CancelUpload drops a session; ErrUploadUnknown when it does not exist.
	CancelUpload(ctx context.Context, repo, id string) error
	// MountBlob makes blob d of repository from (any repository when from is "") part of repo
	// without copying it through the client; ok is false, with no error, when the source has no
	// such blob.
	MountBlob(ctx context.Context, repo, from string, d digest.Digest) (ok bool, err error)
	// PutManifest stores m (parsed and validated by the handler) in repo and points tags at it,
	// atomically enough that a reader sees either the old or the new state of each tag. Every
	// descriptor in m.Blobs must be a blob of repo and every one in m.Manifests a manifest of
	// repo, else an *errcode.Error with MANIFEST_BLOB_UNKNOWN naming the first missing digest, and
	// nothing is stored. When m.Subject is set the manifest becomes one of its referrers.
	PutManifest(ctx context.Context, repo string, m *Manifest, tags []string) error
	// DeleteManifest removes manifest d from repo (and from its subject's referrers);
	// ErrManifestUnknown when repo has no such manifest.
	DeleteManifest(ctx context.Context, repo string, d digest.Digest) error
	// DeleteTag removes a tag; ErrManifestUnknown when repo has no such tag.
	DeleteTag(ctx context.Context, repo, tag string) error
	// DeleteBlob removes blob d from repo; ErrBlobUnknown when repo has no such blob.
	DeleteBlob(ctx context.Context, repo string, d digest.Digest) error
}
