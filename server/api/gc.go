package api

import (
	"net/url"
	"time"

	"github.com/opencontainers/go-digest"
)

// Origin garbage-collection API (docs/gc.md). Under TLS, listing and deleting take an `admin`
// certificate; a touch takes `proxy` or `admin`.
//
//	GET    /gc/blobs                     ?after=D&n=N -> GCBlobPage (n=0: only the origin's clock)
//	POST   /gc/blobs/{digest}/touch      ?ns=NS -> 204 (the blob, pulled through if need be, counts as used now); 404 when nobody has it
//	DELETE /gc/blobs/{digest}            ?cutoff=T[&dry_run=true] -> GCDeleteResult (the local copy, if idle since before T)
//	GET    /gc/backend/{ns}              ?prefix=P -> GCBackendList (names of the namespace's backend objects)
//	DELETE /gc/backend/{ns}/{digest}     ?cutoff=T[&dry_run=true] -> GCDeleteResult (the backend copy, unless a local copy exists or it changed after T)
const (
	GCBlobsPath   = "/gc/blobs"
	GCBackendPath = "/gc/backend"
	// QueryCutoff is an RFC 3339 time (nanoseconds): only what was last used before it goes.
	QueryCutoff = "cutoff"
	QueryDryRun = "dry_run"
	QueryAfter  = "after"
	QueryPrefix = "prefix"
	QueryNS     = "ns"
)

// GCBlobPath addresses one blob of an origin's GC API.
func GCBlobPath(d digest.Digest) string { return GCBlobsPath + "/" + d.String() }

// GCTouchPath marks one blob used.
func GCTouchPath(d digest.Digest) string { return GCBlobPath(d) + "/touch" }

// GCBackendNSPath lists one namespace's backend objects.
func GCBackendNSPath(ns string) string { return GCBackendPath + "/" + url.PathEscape(ns) }

// GCBackendBlobPath addresses one backend object of a namespace.
func GCBackendBlobPath(ns string, d digest.Digest) string {
	return GCBackendNSPath(ns) + "/" + d.String()
}

// GCBlobPage is one page of an origin's committed blobs, in digest order.
type GCBlobPage struct {
	// Now is the origin's clock when it answered: a GC computes its cutoff from the origin's
	// own clock, so clock skew between hosts cannot make a fresh blob look old.
	Now   time.Time `json:"now"`
	Blobs []GCBlob  `json:"blobs"`
	// Next is the after= of the next page; empty on the last page.
	Next string `json:"next,omitempty"`
}

// GCBlob is one committed blob of an origin.
type GCBlob struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// LastUsed is when it was last committed, read or touched (the store's LRU time).
	LastUsed time.Time `json:"last_used"`
	// Namespaces are those it was stored, replicated, mounted or pulled through under.
	Namespaces []string `json:"namespaces,omitempty"`
}

// GCDeleteResult says what a conditional delete did (or, in a dry run, would do).
type GCDeleteResult struct {
	Deleted bool  `json:"deleted"`
	Bytes   int64 `json:"bytes"`
	// Kept, when not deleted, says why: "absent", "recently used", "in use" (read or awaiting
	// write-back), "present on the origin", "unsupported" (a backend that cannot delete).
	Kept string `json:"kept,omitempty"`
}

// Reasons a conditional delete keeps a blob.
const (
	GCKeptAbsent      = "absent"
	GCKeptRecent      = "recently used"
	GCKeptInUse       = "in use"
	GCKeptLocal       = "present on the origin"
	GCKeptUnsupported = "unsupported"
)

// GCDefaultPageLimit is the page size of GET /gc/blobs without n=.
const GCDefaultPageLimit = 1000

// GCBackendList is the names (hex digests) of a namespace's backend objects under a prefix.
type GCBackendList struct {
	Names []string `json:"names"`
}
