package api

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// The cache API of agents and origins (server/cacheapi): what the node's store holds, what its
// cleanup policy would remove now, and manual eviction. Under TLS only an `admin` certificate
// may call them; an agent with auth: configured serves them to the admin group only.
//
//	GET  /cache          [?blobs=N] -> CacheStatus (N: the N least recently used blobs, at most CacheMaxBlobs)
//	POST /cache/evict    CacheEvictRequest -> CacheEvictReport
const (
	CachePath      = "/cache"
	CacheEvictPath = "/cache/evict"
	// CacheBlobsParam on CachePath lists that many least recently used blobs (CacheStatus.Blobs).
	CacheBlobsParam = "blobs"
	// CacheMaxBlobs bounds CacheBlobsParam.
	CacheMaxBlobs = 10000
	// CacheMaxRequest bounds the body of an eviction request.
	CacheMaxRequest = 1 << 20
)

// Removal reasons of the cache API (castore's): the policy's idle time, age and watermarks, and
// manual evictions.
const (
	CacheReasonTTI       = "tti"
	CacheReasonTTL       = "ttl"
	CacheReasonWatermark = "watermark"
	CacheReasonManual    = "manual"
)

// Why a blob stays although chosen: read or sent at the moment, held (awaiting write-back),
// active in the swarm (seeded or downloaded), or not in the store.
const (
	CacheKeptOpen   = "open"
	CacheKeptHeld   = "held"
	CacheKeptActive = "active"
	CacheKeptAbsent = "absent"
)

// CachePolicy is a node's cleanup policy. Durations are Go durations ("6h0m0s"); "0s" is off.
type CachePolicy struct {
	Interval      string `json:"interval"`
	TTI           string `json:"tti"`
	TTL           string `json:"ttl"`
	HighWatermark int    `json:"high_watermark"`
	LowWatermark  int    `json:"low_watermark"`
}

// CacheStatus is GET /cache.
type CacheStatus struct {
	// Role is "agent" or "origin".
	Role string    `json:"role"`
	Now  time.Time `json:"now"`
	// UsedBytes are the committed blobs; ReservedBytes the writes in progress and upload
	// sessions; CapacityBytes the store's capacity (0: unlimited).
	UsedBytes     int64 `json:"used_bytes"`
	ReservedBytes int64 `json:"reserved_bytes"`
	CapacityBytes int64 `json:"capacity_bytes"`
	BlobCount     int   `json:"blob_count"`
	// Filesystem is the disk holding the store, when it could be measured.
	Filesystem *CacheFilesystem `json:"filesystem,omitempty"`
	Policy     CachePolicy      `json:"policy"`
	// Basis is what the watermarks measure ("capacity" or "filesystem"), and UsagePercent
	// that usage now.
	Basis        string  `json:"basis"`
	UsagePercent float64 `json:"usage_percent"`
	// Oldest arrived first; Idlest was used least recently.
	Oldest *CacheBlob `json:"oldest,omitempty"`
	Idlest *CacheBlob `json:"idlest,omitempty"`
	// IdleBuckets and AgeBuckets count the blobs by time since last use and since arrival.
	IdleBuckets []CacheBucket `json:"idle_buckets"`
	AgeBuckets  []CacheBucket `json:"age_buckets"`
	// WouldRemove is what the policy would remove now, per reason (tti, ttl, watermark, in
	// that order; absent reasons omitted); WouldKeep what it would choose but keep in use.
	WouldRemove []CacheReasonTotal `json:"would_remove"`
	WouldKeep   []CacheReasonTotal `json:"would_keep"`
	// Blobs are the least recently used blobs, with ?blobs=N.
	Blobs []CacheBlob `json:"blobs,omitempty"`
}

// CacheFilesystem is the file system holding a store.
type CacheFilesystem struct {
	TotalBytes int64 `json:"total_bytes"`
	UsedBytes  int64 `json:"used_bytes"`
}

// CacheBucket counts the blobs whose idle time or age is below Below (a Go duration; "" for
// the last bucket, everything older).
type CacheBucket struct {
	Below string `json:"below,omitempty"`
	Blobs int    `json:"blobs"`
	Bytes int64  `json:"bytes"`
}

// CacheReasonTotal counts blobs and bytes for one reason (or why kept).
type CacheReasonTotal struct {
	Reason string `json:"reason"`
	Blobs  int    `json:"blobs"`
	Bytes  int64  `json:"bytes"`
}

// CacheBlob is one blob of a store.
type CacheBlob struct {
	Digest   digest.Digest `json:"digest"`
	Size     int64         `json:"size"`
	Created  time.Time     `json:"created,omitzero"`
	LastUsed time.Time     `json:"last_used,omitzero"`
	// InUse says what keeps it now: "open", "held" or "active"; "" when nothing does.
	InUse string `json:"in_use,omitempty"`
	// Reason, in an eviction report, is why it was chosen; Kept why it stayed (open, held,
	// active, absent, or "error" with Error).
	Reason string `json:"reason,omitempty"`
	Kept   string `json:"kept,omitempty"`
	Error  string `json:"error,omitempty"`
}

// CacheEvictRequest is POST /cache/evict. Policy runs the node's own policy now; otherwise at
// least one of the criteria is set, and what they choose together goes (never a blob in use).
// Durations are Go durations ("36h"), not negative; DownToPercent is 0 to 100, of the capacity
// or, without one, of the file system. Unknown fields are refused.
type CacheEvictRequest struct {
	Policy        bool     `json:"policy,omitempty"`
	Digests       []string `json:"digests,omitempty"`
	IdleOver      string   `json:"idle_over,omitempty"`
	OlderThan     string   `json:"older_than,omitempty"`
	DownToBytes   *int64   `json:"down_to_bytes,omitempty"`
	DownToPercent *float64 `json:"down_to_percent,omitempty"`
	DryRun        bool     `json:"dry_run,omitempty"`
}

// CacheEvictReport is what an eviction removed (or, dry, would remove) and kept.
type CacheEvictReport struct {
	Role       string      `json:"role"`
	DryRun     bool        `json:"dry_run"`
	Now        time.Time   `json:"now"`
	Removed    []CacheBlob `json:"removed"`
	Kept       []CacheBlob `json:"kept"`
	FreedBytes int64       `json:"freed_bytes"`
	// UsedBytes is the store's committed bytes after the run (before it, for a dry run).
	UsedBytes int64 `json:"used_bytes"`
	// Basis and TargetBytes: what a watermark or down-to measured and the usage it aimed at
	// (-1: none applied). Note explains a target that could not apply.
	Basis       string `json:"basis,omitempty"`
	TargetBytes int64  `json:"target_bytes"`
	Note        string `json:"note,omitempty"`
}
