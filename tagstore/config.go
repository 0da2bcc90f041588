package tagstore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Defaults applied by Config.Defaults to fields left at their zero value. The timeouts are
// hashicorp/raft's LAN defaults: a dead leader is replaced in one to three seconds.
const (
	DefaultSnapshotThreshold  = 8192
	DefaultSnapshotInterval   = 2 * time.Minute
	DefaultTrailingLogs       = 10240
	DefaultSnapshotRetain     = 2
	DefaultHeartbeatTimeout   = time.Second
	DefaultElectionTimeout    = time.Second
	DefaultLeaderLeaseTimeout = 500 * time.Millisecond
	DefaultCommitTimeout      = 50 * time.Millisecond
	DefaultMaxAppendEntries   = 64
	DefaultApplyTimeout       = 10 * time.Second
	DefaultChangeFeedRetain   = 16384
	DefaultJoinTimeout        = 10 * time.Second
)

// Config configures a Store. It is meant to be a section of the build-index YAML file;
// durations are Go duration strings ("500ms", "2m"). Call Defaults, then Validate (Open does
// both on its own copy).
type Config struct {
	// NodeID names this node in the Raft group. It must be unique in the cluster and stable
	// across restarts (the Raft state in Dir belongs to it).
	NodeID string `yaml:"node_id"`
	// Dir holds the Raft log and stable store (raft.db) and file snapshots (snapshots/).
	Dir string `yaml:"dir"`
	// Advertise is the Raft address peers dial, host:port. When empty, Open uses the address of
	// Deps.Listener (or Deps.Transport), which must then be concrete (not 0.0.0.0).
	Advertise string `yaml:"advertise"`
	// APIAddr is this node's HTTP API address, host:port. It is recorded in the replicated
	// membership metadata so followers can tell clients (and forward writes) where the leader's
	// API is. Optional, but without it nobody can find this node's API when it leads.
	APIAddr string `yaml:"api_addr"`
	// Bootstrap forms a new single-node cluster when Dir holds no Raft state. It is ignored
	// when state exists, so it is safe to leave on for the first node.
	Bootstrap bool `yaml:"bootstrap"`
	// BootstrapOrdinal derives Bootstrap from the host name, for a StatefulSet whose pods
	// share one config: the pod NAME-0 bootstraps a new group when it has no state, every
	// other ordinal joins an existing one. The role resolves it (Ordinal) before Open; it
	// excludes Bootstrap.
	BootstrapOrdinal bool `yaml:"bootstrap_ordinal"`

	// SnapshotThreshold is how many log entries since the last snapshot trigger a new one
	// (checked every SnapshotInterval).
	SnapshotThreshold uint64 `yaml:"snapshot_threshold"`
	// SnapshotInterval is how often Raft checks whether to snapshot (with random jitter).
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// TrailingLogs is how many log entries are kept after a snapshot, so a follower that is a
	// little behind catches up from the log instead of a full snapshot.
	TrailingLogs uint64 `yaml:"trailing_logs"`
	// SnapshotRetain is how many snapshots are kept in Dir/snapshots.
	SnapshotRetain int `yaml:"snapshot_retain"`

	// HeartbeatTimeout is how long a follower waits without hearing from the leader before it
	// starts an election.
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout"`
	// ElectionTimeout is how long a candidate waits before starting a new election.
	ElectionTimeout time.Duration `yaml:"election_timeout"`
	// LeaderLeaseTimeout is how long a leader stays leader without reaching a quorum; after it
	// the leader steps down and stops accepting writes.
	LeaderLeaseTimeout time.Duration `yaml:"leader_lease_timeout"`
	// CommitTimeout bounds how long the leader waits before sending a heartbeat that carries
	// the commit index when there is nothing else to send.
	CommitTimeout time.Duration `yaml:"commit_timeout"`
	// MaxAppendEntries bounds how many log entries go in one append (and how many concurrent
	// writes are batched into one disk write), 1..1024.
	MaxAppendEntries int `yaml:"max_append_entries"`

	// ApplyTimeout bounds how long a write waits to be queued by the leader (and how long the
	// leader waits to be ready to serve linearizable reads after an election).
	ApplyTimeout time.Duration `yaml:"apply_timeout"`
	// JoinTimeout bounds how long a joining node may stay silent (not answer the leader, or
	// not get further through the log) before the join gives up and removes it again. A new
	// voter joins as a non-voter and is promoted once it has caught up, so a node that never
	// answers costs no quorum.
	JoinTimeout time.Duration `yaml:"join_timeout"`
	// ChangeFeedRetain is how many tag changes are kept in memory for the change feed; a
	// subscriber further behind than that is told to resync.
	ChangeFeedRetain int `yaml:"change_feed_retain"`
}

// Defaults fills the fields left at their zero value. NodeID, Dir, Advertise and APIAddr have
// no defaults.
func (c *Config) Defaults() {
	setDefault(&c.SnapshotThreshold, DefaultSnapshotThreshold)
	setDefault(&c.SnapshotInterval, DefaultSnapshotInterval)
	setDefault(&c.TrailingLogs, DefaultTrailingLogs)
	setDefault(&c.SnapshotRetain, DefaultSnapshotRetain)
	setDefault(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	setDefault(&c.ElectionTimeout, DefaultElectionTimeout)
	setDefault(&c.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	setDefault(&c.CommitTimeout, DefaultCommitTimeout)
	setDefault(&c.MaxAppendEntries, DefaultMaxAppendEntries)
	setDefault(&c.ApplyTimeout, DefaultApplyTimeout)
	setDefault(&c.ChangeFeedRetain, DefaultChangeFeedRetain)
	setDefault(&c.JoinTimeout, DefaultJoinTimeout)
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Validate reports every problem in c, each naming its YAML key (for example
// "heartbeat_timeout: must be at least 5ms, got 1ms"), joined into one error. Keys are relative
// to the section the Config is decoded from. Call Defaults first: zero values are errors.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.NodeID == "" {
		bad("node_id: required")
	} else if err := ValidateNodeID(c.NodeID); err != nil {
		bad("node_id: %v", err)
	}
	if c.Dir == "" {
		bad("dir: required")
	}
	if c.Bootstrap && c.BootstrapOrdinal {
		bad("bootstrap_ordinal: excludes bootstrap (the ordinal decides who bootstraps); set one of them")
	}
	if c.Advertise != "" {
		if err := checkHostPort(c.Advertise); err != nil {
			bad("advertise: %v", err)
		}
	}
	if c.APIAddr != "" {
		if err := checkHostPort(c.APIAddr); err != nil {
			bad("api_addr: %v", err)
		}
	}
	if c.SnapshotThreshold < 1 {
		bad("snapshot_threshold: must be at least 1")
	}
	atLeast := func(key string, d, lim time.Duration) {
		if d < lim {
			bad("%s: must be at least %s, got %s", key, lim, d)
		}
	}
	atLeast("snapshot_interval", c.SnapshotInterval, 5*time.Millisecond)
	atLeast("heartbeat_timeout", c.HeartbeatTimeout, 5*time.Millisecond)
	atLeast("election_timeout", c.ElectionTimeout, 5*time.Millisecond)
	atLeast("leader_lease_timeout", c.LeaderLeaseTimeout, 5*time.Millisecond)
	atLeast("commit_timeout", c.CommitTimeout, time.Millisecond)
	atLeast("apply_timeout", c.ApplyTimeout, time.Millisecond)
	atLeast("join_timeout", c.JoinTimeout, time.Millisecond)
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("leader_lease_timeout (%s) must not exceed heartbeat_timeout (%s)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("election_timeout (%s) must not be less than heartbeat_timeout (%s)", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.TrailingLogs < 1 {
		bad("trailing_logs: must be at least 1")
	}
	if c.SnapshotRetain < 1 {
		bad("snapshot_retain: must be at least 1, got %d", c.SnapshotRetain)
	}
	if c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024 {
		bad("max_append_entries: must be in 1..1024, got %d", c.MaxAppendEntries)
	}
	if c.ChangeFeedRetain < 1 {
		bad("change_feed_retain: must be at least 1, got %d", c.ChangeFeedRetain)
	}
	return errors.Join(errs...)
}

// ErrNoOrdinal is wrapped by Ordinal when a host name does not end in "-N".
var ErrNoOrdinal = errors.New("host name has no ordinal")

// Ordinal returns the ordinal of a StatefulSet pod's host name, "NAME-N": N, a decimal number
// without leading zeros, after the last '-' of a non-empty NAME. A host name without one (or a
// fully qualified name: a pod's host name is its short name) is an error wrapping ErrNoOrdinal
// that quotes it.
func Ordinal(hostname string) (int, error) {
	i := strings.LastIndexByte(hostname, '-')
	if i <= 0 || i == len(hostname)-1 || hostname[i-1] == '-' || strings.Contains(hostname, ".") {
		return 0, fmt.Errorf("%w: %q (want NAME-N, as a StatefulSet pod's)", ErrNoOrdinal, hostname)
	}
	digits := hostname[i+1:]
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 || strconv.Itoa(n) != digits {
		return 0, fmt.Errorf("%w: %q ends in %q, not a number (want NAME-N, as a StatefulSet pod's)", ErrNoOrdinal, hostname, digits)
	}
	return n, nil
}
