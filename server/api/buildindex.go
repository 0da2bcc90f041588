package api

import (
	"net/url"
	"time"

	"github.com/opencontainers/go-digest"
)

// Build-index API paths. Repository names are path-escaped into one segment, as namespaces are.
//
//	PUT    /repositories/{repo}/tags/{tag}     body PutTagRequest -> Tag
//	GET    /repositories/{repo}/tags/{tag}     [?stale=true] -> Tag
//	DELETE /repositories/{repo}/tags/{tag}     -> Tag (the deleted value)
//	GET    /repositories/{repo}/tags           ?n=&last= -> TagList (+ Link rel="next")
//	GET    /repositories/{repo}/tags           ?digest=D&n=&last= -> TagList of the tags pointing at D
//	GET    /repositories                       ?n=&last= -> Catalog (+ Link rel="next")
//	PUT    /repositories/{repo}/links/{name}   body PutTagRequest -> Link
//	GET    /repositories/{repo}/links/{name}   [?stale=true] -> Link
//	DELETE /repositories/{repo}/links/{name}   -> Link (the deleted value)
//	GET    /repositories/{repo}/links          ?prefix=P [&stale=true] -> LinkList (every match)
//	GET    /cluster                            -> ClusterStatus
//	POST   /cluster/members                    body Member -> ClusterStatus
//	DELETE /cluster/members/{id}               -> ClusterStatus
//	POST   /cluster/restore                    -> RestoreResult
//	GET    /changes                            ?from=INDEX -> newline-delimited TagChange stream
//	GET    /replication                        -> ReplicationStatus (this node's queues)
//	POST   /replication/retry                  RetryRequest -> RetryResult
const (
	RepositoriesPath   = "/repositories"
	ClusterPath        = "/cluster"
	ClusterMembersPath = "/cluster/members"
	ClusterRestorePath = "/cluster/restore"
	ChangesPath        = "/changes"
	ReplicationPath    = "/replication"
	// QueryUpstream=false on a tag GET answers only from the Raft store: a tag only an
	// upstream registry has is then 404.
	QueryUpstream = "upstream"
	// QueryDigest=D on a tag list lists only the tags pointing at D (through the build-index's
	// reverse index, without reading the others); the answer's TagList.Digest says so.
	QueryDigest      = "digest"
	ReplicationRetry = "/replication/retry"
)

// HeaderLeader carries the API address of the node the answering node believes leads, so clients
// can send writes there directly instead of through a follower's forwarding hop.
const HeaderLeader = "Krakenctl-Leader"

// TagPath addresses one tag of a repository.
func TagPath(repo, tag string) string {
	return RepositoriesPath + "/" + url.PathEscape(repo) + "/tags/" + url.PathEscape(tag)
}

// LinkPath addresses one link of a repository. Links are per-repository records of the OCI
// registry (which blobs and manifests a repository holds, and the referrers of a manifest;
// registry.BlobLink and friends build their names). They live in the tag store next to the
// tags, replicate and are read with the same guarantees (linearizable unless stale=true), but
// never appear in tag listings. A name is one path segment, escaped ("blob/sha256:..." is sent
// as "blob%2Fsha256:...").
func LinkPath(repo, name string) string {
	return LinksPath(repo) + "/" + url.PathEscape(name)
}

// LinksPath lists the links of a repository whose names start with ?prefix=.
func LinksPath(repo string) string { return RepositoriesPath + "/" + url.PathEscape(repo) + "/links" }

// TagsPath lists the tags of a repository.
func TagsPath(repo string) string { return RepositoriesPath + "/" + url.PathEscape(repo) + "/tags" }

// ClusterMemberPath addresses one member for removal.
func ClusterMemberPath(id string) string { return ClusterMembersPath + "/" + url.PathEscape(id) }

// PutTagRequest is the body of a tag PUT.
type PutTagRequest struct {
	Digest digest.Digest `json:"digest"`
}

// Tag is a tag's current value.
type Tag struct {
	Repo   string        `json:"repo"`
	Tag    string        `json:"tag"`
	Digest digest.Digest `json:"digest"`
	// Index is the Raft log index of the change that set this value; it only grows.
	Index   uint64    `json:"index"`
	Updated time.Time `json:"updated"`
}

// Link is one link's current value (see LinkPath).
type Link struct {
	Repo   string        `json:"repo"`
	Name   string        `json:"name"`
	Digest digest.Digest `json:"digest"`
	Index  uint64        `json:"index"`
}

// LinkList is every link of a repository under a prefix, in lexical order of name.
type LinkList struct {
	Links []Link `json:"links"`
}

// TagList is one page of a repository's tags, in lexical order (as the OCI tag list).
type TagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
	// Digest is set on the answer to a list by digest (QueryDigest): the tags are those
	// pointing at it. A server that predates the filter ignores the query and leaves it out, so
	// a client knows it got the whole list instead.
	Digest digest.Digest `json:"digest,omitempty"`
}

// Catalog is one page of repository names, in lexical order (as the OCI catalog).
type Catalog struct {
	Repositories []string `json:"repositories"`
}

// Member is one node of the build-index Raft group.
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	// APIAddr is the node's HTTP address (where writes are forwarded when it leads).
	APIAddr  string `json:"api_addr"`
	Suffrage string `json:"suffrage,omitempty"`
	Leader   bool   `json:"leader,omitempty"`
}

// ClusterStatus is a node's view of the Raft group.
type ClusterStatus struct {
	ID                string   `json:"id"`
	State             string   `json:"state"`
	LeaderID          string   `json:"leader_id"`
	LeaderAPIAddr     string   `json:"leader_api_addr"`
	Term              uint64   `json:"term"`
	CommitIndex       uint64   `json:"commit_index"`
	AppliedIndex      uint64   `json:"applied_index"`
	LastLogIndex      uint64   `json:"last_log_index"`
	LastSnapshotIndex uint64   `json:"last_snapshot_index"`
	Members           []Member `json:"members"`
}

// RestoreResult says what a restore from the storage backend did.
type RestoreResult struct {
	Imported int `json:"imported"`
	Skipped  int `json:"skipped"`
}

// TagChange is one entry of the change feed.
type TagChange struct {
	Index uint64 `json:"index"`
	// Op is "put", "delete", or "resync": the subscriber fell behind what the feed retains, the
	// stream ends after this entry, and the subscriber must re-read the full listing.
	Op  string `json:"op"`
	Tag Tag    `json:"tag"`
}

// ReplicationStatus is one build-index node's replication state: a durable queue per remote
// cluster. Every node queues the changes its rules match; the leader sends at once and
// followers after a delay, so a follower's pending items are the leader's safety net.
type ReplicationStatus struct {
	Node    string         `json:"node"`
	Leader  bool           `json:"leader"`
	Remotes []RemoteStatus `json:"remotes"`
}

// RemoteStatus is the state of the queue to one remote cluster.
type RemoteStatus struct {
	Name string `json:"name"`
	// EndpointsFile is the remote's endpoints file, as the rule names it.
	EndpointsFile string `json:"endpoints_file"`
	// Rules are the repository patterns that send to this remote.
	Rules []string `json:"rules"`
	// Pending counts the items waiting (due or backing off); Parked those that failed in a
	// way retrying cannot fix, until `krakenctl replicate retry`.
	Pending int `json:"pending"`
	Parked  int `json:"parked"`
	// OldestPending is when the oldest pending item was queued; zero when none is.
	OldestPending time.Time `json:"oldest_pending,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorAt   time.Time `json:"last_error_at,omitzero"`
	LastSuccess   time.Time `json:"last_success,omitzero"`
	// Replicated counts the tags sent since the node started; Blobs and Bytes what they took.
	Replicated int64 `json:"replicated"`
	Blobs      int64 `json:"blobs"`
	Bytes      int64 `json:"bytes"`
	// BytesPerSecond is Bytes over the time spent copying them.
	BytesPerSecond float64 `json:"bytes_per_second"`
	// Items lists pending and parked items, oldest first, up to a bound.
	Items []ReplicationItem `json:"items,omitempty"`
}

// ReplicationItem is one queued tag.
type ReplicationItem struct {
	Repo string `json:"repository"`
	Tag  string `json:"tag"`
	// Index is the Raft index of the change the item was queued for.
	Index     uint64    `json:"index"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
	Parked    bool      `json:"parked"`
	Created   time.Time `json:"created"`
	NotBefore time.Time `json:"not_before,omitzero"`
}

// RetryRequest asks a node to queue parked items again: all of them, those of one remote, or
// one tag (Repo and Tag) of one remote.
type RetryRequest struct {
	Remote string `json:"remote,omitempty"`
	Repo   string `json:"repository,omitempty"`
	Tag    string `json:"tag,omitempty"`
}

// RetryResult says how many parked items were queued again.
type RetryResult struct {
	Requeued int `json:"requeued"`
}
