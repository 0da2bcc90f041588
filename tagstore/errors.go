package tagstore

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the Store returns wraps at most one of the first six, so callers
// (the HTTP layer) map them to a status in one place with errors.Is. The last two describe what
// became of a write that failed, and may be wrapped alongside one of the others.
var (
	// ErrNotFound: the tag, repository or member does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNotLeader: the call needs the leader and this node is not it. Errors that wrap it are
	// *NotLeaderError values naming the leader when one is known. Nothing was applied.
	ErrNotLeader = errors.New("not the leader")
	// ErrInvalid: the input breaks the OCI grammar (repository, tag, digest) or is otherwise
	// malformed; the message names the bad part. Nothing was applied.
	ErrInvalid = errors.New("invalid")
	// ErrExists: a member with that ID or Raft address is already in the cluster with
	// different details. Nothing was applied.
	ErrExists = errors.New("already exists")
	// ErrQuorum: the membership change would leave the voters without a quorum of live
	// members; the message names who does not answer. Nothing was applied.
	ErrQuorum = errors.New("would leave no quorum")
	// ErrClosed: the Store is closed (or closing). Unless the error also wraps
	// ErrIndeterminate, nothing was applied.
	ErrClosed = errors.New("tag store closed")

	// ErrUnavailable: no leader could take the write right now (the leader is transferring
	// leadership, or the write could not be queued in time). Nothing was applied; retry later.
	ErrUnavailable = errors.New("tag store unavailable")
	// ErrIndeterminate: the write was handed to Raft but its outcome is unknown: leadership was
	// lost before it committed, the node shut down, or ctx ended while waiting. It may or may
	// not have been applied, and a reader will eventually see one or the other. Callers must not
	// report it as failed, and must not retry a delete blindly.
	ErrIndeterminate = errors.New("outcome unknown")
)

// ErrInvalidDigest marks, alongside ErrInvalid, an error whose cause is a malformed digest:
// one given alone (ValidateDigest) or inside a link name or prefix, as opposed to a name of
// the wrong shape. The registry API answers the first with DIGEST_INVALID.
var ErrInvalidDigest = errors.New("invalid digest")

// digestError is an ErrInvalid error caused by a digest: errors.Is matches ErrInvalidDigest
// too, and its text is the wrapped error's.
type digestError struct{ error }

func (e digestError) Unwrap() error      { return e.error }
func (digestError) Is(target error) bool { return target == ErrInvalidDigest }

// NotLeaderError says this node cannot serve the call and who can. The fields are empty when
// no leader is known (an election is under way, or this node is cut off). errors.Is(err,
// ErrNotLeader) holds for it.
type NotLeaderError struct {
	LeaderID       string
	LeaderAPIAddr  string
	LeaderRaftAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "not the leader, and no leader is known"
	}
	if e.LeaderAPIAddr == "" {
		return fmt.Sprintf("not the leader; the leader is %s (raft %s, API address not yet recorded)", e.LeaderID, e.LeaderRaftAddr)
	}
	return fmt.Sprintf("not the leader; the leader is %s at %s", e.LeaderID, e.LeaderAPIAddr)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
