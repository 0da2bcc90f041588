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
//	DELETE /gc/backend/{ns}/{digest}     ?cutoff=T[&dry_run=true]&member=ADDR@T... -> GCDeleteResult (the backend copy, unless a
//	                                     local copy exists, a ring member holds or touched it since its own cutoff, or it changed after T)
//	GET    /gc/blobs/{digest}/use        ?cutoff=T[&dry_run=true] -> GCUse (origin to origin: does this member hold d, or touched it since T?)
//	POST   /gc/blobs/{digest}/writeback  ?ns=NS -> 202 (a write-back of the held copy is queued); 404 when the member does not hold d
const (
	GCBlobsPath   = "/gc/blobs"
	GCBackendPath = "/gc/backend"
	// QueryCutoff is an RFC 3339 time (nanoseconds): only what was last used before it goes.
	QueryCutoff = "cutoff"
	QueryDryRun = "dry_run"
	QueryAfter  = "after"
	QueryPrefix = "prefix"
	QueryNS     = "ns"
	// QueryMember is one ring member's cutoff, "ADDR@T" (T as for QueryCutoff), repeated: the
	// deciding origin asks each member about a blob with that member's own cutoff.
	QueryMember = "member"
)

// GCBlobPath addresses one blob of an origin's GC API.
func GCBlobPath(d digest.Digest) string { return GCBlobsPath + "/" + d.String() }

// GCTouchPath marks one blob used.
func GCTouchPath(d digest.Digest) string { return GCBlobPath(d) + "/touch" }

// GCUsePath asks a ring member whether it holds or touched one blob.
func GCUsePath(d digest.Digest) string { return GCBlobPath(d) + "/use" }

// GCWritebackPath asks a ring member to write its copy of one blob back to storage.
func GCWritebackPath(d digest.Digest) string { return GCBlobPath(d) + "/writeback" }

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
	// Error, on a delete that was done, is what went wrong after it: a ring member that touched
	// the blob meanwhile could not be made to write its copy back. The run counts it as failed.
	Error string `json:"error,omitempty"`
}

// GCUse is a ring member's answer about one blob, asked by the origin deciding whether to delete
// the blob's backend copy.
type GCUse struct {
	// Used means the backend copy must stay; Reason says why (GCKeptLocal, GCKeptTouched,
	// GCKeptUnknown).
	Used   bool   `json:"used"`
	Reason string `json:"reason,omitempty"`
}

// Reasons a conditional delete keeps a blob.
const (
	GCKeptAbsent      = "absent"
	GCKeptRecent      = "recently used"
	GCKeptInUse       = "in use"
	GCKeptLocal       = "present on the origin"
	GCKeptUnsupported = "unsupported"
	// GCKeptTouched: a ring member touched the blob for a push since its cutoff.
	GCKeptTouched = "touched since the cutoff"
	// GCKeptUnknown: a ring member's touch journal does not reach back to its cutoff.
	GCKeptUnknown = "touches not known since the cutoff"
	// GCKeptUnasked: a ring member could not be asked (unreachable, or not in the run).
	GCKeptUnasked = "member not asked"
	// GCKeptSlow: the deciding origin could not delete the object within half its
	// writeback.touch_hold of asking the members (docs/gc.md).
	GCKeptSlow = "decision too slow"
)

// GCDefaultPageLimit is the page size of GET /gc/blobs without n=.
const GCDefaultPageLimit = 1000

// GCBackendList is the names (hex digests) of a namespace's backend objects under a prefix.
type GCBackendList struct {
	Names []string `json:"names"`
}
