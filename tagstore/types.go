package tagstore

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// Tag is a tag's current value. In Export, Import and Changes it may also be a link, whose
// Name is LinkKey of the link's name (IsLink reports it; see Link).
type Tag struct {
	Repo   string
	Name   string
	Digest digest.Digest
	// Index is the Raft log index of the change that set this value; it only grows.
	Index uint64
	// Updated is the leader's clock when the value was set (for an imported tag, the time
	// recorded where it was imported from). It is carried in the log entry, so every replica
	// agrees on it.
	Updated time.Time
}

// Consistency chooses how a read relates to concurrent writes.
type Consistency int

const (
	// Linearizable reads see every write acknowledged before the read started. Only the leader
	// serves them; a follower returns a *NotLeaderError.
	Linearizable Consistency = iota
	// Stale reads return this node's local state, which may lag the leader by a little (or by
	// a lot, on a node cut off from the cluster). Any node serves them.
	Stale
)

// String returns "linearizable" or "stale".
func (c Consistency) String() string {
	if c == Stale {
		return "stale"
	}
	return "linearizable"
}

// Suffrage values of Member.Suffrage.
const (
	SuffrageVoter    = "voter"
	SuffrageNonvoter = "nonvoter"
)

// Member is one node of the Raft group. Its fields are those of the build-index API's
// api.Member, so the HTTP layer converts with a plain type conversion.
type Member struct {
	ID       string
	RaftAddr string
	// APIAddr is the node's HTTP address, as recorded in the replicated membership metadata;
	// empty when it has not been recorded.
	APIAddr string
	// Suffrage is SuffrageVoter or SuffrageNonvoter (empty in Join means voter).
	Suffrage string
	Leader   bool
}

// ClusterStatus is a node's view of the Raft group (the fields of api.ClusterStatus).
type ClusterStatus struct {
	ID string
	// State is "leader", "follower", "candidate" or "shutdown".
	State         string
	LeaderID      string
	LeaderAPIAddr string
	Term          uint64
	CommitIndex   uint64
	// AppliedIndex is the last log index whose effect is visible in this node's state.
	AppliedIndex      uint64
	LastLogIndex      uint64
	LastSnapshotIndex uint64
	// Members are the servers of the latest configuration, sorted by ID.
	Members []Member
}

// Change operations (Change.Op).
const (
	OpPut    = "put"
	OpDelete = "delete"
	// OpResync is the last value sent on a change feed whose subscriber fell behind what the
	// store retains (or whose state was replaced by a snapshot). Changes were lost: rebuild
	// from a full listing (Store.Export), then subscribe again from the index it returns.
	OpResync = "resync"
)

// Change is one entry of the change feed (the fields of api.TagChange).
type Change struct {
	// Index is the Raft log index of the change. Changes arrive in index order; the tags of
	// one import batch share an index.
	Index uint64
	// Op is OpPut, OpDelete or OpResync.
	Op string
	// Tag is the new value for a put. For a delete it names the removed tag and the digest it
	// pointed to, with Index and Updated of the delete itself. For a resync it is empty.
	Tag Tag
}
