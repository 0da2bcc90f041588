package snapshot

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// The tracker's view of its swarms (served on the tracker's SwarmsPath, server/api).

// TrackerSwarm is one blob's swarm as a tracker knows it: the peers that announced it and have
// not expired, and the blob's owning origins.
type TrackerSwarm struct {
	Digest    digest.Digest `json:"digest"`
	Namespace string        `json:"namespace,omitempty"`
	// Seeders and Leechers count the announced peers that are and are not complete.
	Seeders  int `json:"seeders"`
	Leechers int `json:"leechers"`
	// LastAnnounce is the newest announce of any member.
	LastAnnounce time.Time `json:"last_announce"`
	// Members lists the peers (only in the answer for one digest).
	Members []TrackerMember `json:"members,omitempty"`
}

// TrackerMember is one member of a tracker's swarm.
type TrackerMember struct {
	PeerID string `json:"peer_id"`
	// Addr is the member's swarm address; API, when the member announced it, the address of
	// its HTTP API (where /swarm/torrents is served).
	Addr string `json:"addr"`
	API  string `json:"api,omitempty"`
	// Role is "agent" or "origin".
	Role     string `json:"role"`
	Complete bool   `json:"complete"`
	// Have and Pieces are the progress the member announced (0 and 0 when it did not say).
	Have         int       `json:"have"`
	Pieces       int       `json:"pieces"`
	LastAnnounce time.Time `json:"last_announce,omitzero"`
}

// The cluster as `krakenctl top` and `krakenctl swarm` see it, gathered by server/observe from
// the tracker, agents, origins, ring and build-index.

// Cluster is one snapshot of a whole cluster.
type Cluster struct {
	Time   time.Time   `json:"time"`
	Swarms []Swarm     `json:"swarms"`
	Hosts  []Host      `json:"hosts"`
	Ring   []RingEntry `json:"ring"`
	// BuildIndex is the Raft group's state; nil when the cluster has no build-index.
	BuildIndex *BuildIndexState `json:"build_index,omitempty"`
	// Events are the newest events of the hosts, oldest first (bounded); in a delta, only the
	// ones since the previous snapshot.
	Events []HostEvent `json:"events"`
	// Errors names every source that could not be read, so a view can say what it lacks.
	Errors []SourceError `json:"errors,omitempty"`
}

// Swarm is one blob's swarm across the cluster: every member's part and who sent to whom.
// It is also `krakenctl swarm inspect`'s document.
type Swarm struct {
	Digest    digest.Digest `json:"digest"`
	Namespace string        `json:"namespace,omitempty"`
	Size      int64         `json:"size_bytes"`
	Pieces    int           `json:"pieces"`
	// Progress is the agents' mean fraction of pieces held, in [0, 1].
	Progress float64 `json:"progress"`
	// RateIn is the agents' summed receive rate in bytes per second (0 in a single snapshot;
	// set from the difference of two).
	RateIn float64 `json:"rate_in"`
	// OriginShare is the fraction of the agents' received bytes that came from origins.
	OriginShare float64 `json:"origin_share"`
	// OriginCopies is the origins' bytes sent for this blob divided by its size.
	OriginCopies float64 `json:"origin_copies"`
	// Efficiency is the agents' mean receive rate over the run against Rate, the configured
	// per-host ingress cap (0 and 0 when no cap is known).
	Efficiency float64 `json:"efficiency,omitempty"`
	Rate       int64   `json:"rate,omitempty"`
	// ETA is the time left at RateIn, in seconds; 0 when done or unknown.
	ETA float64 `json:"eta_s,omitempty"`
	// Done says every agent seen has the whole blob.
	Done bool `json:"done"`
	// Started is the earliest start of a member's torrent.
	Started time.Time `json:"started,omitzero"`
	// Members are every agent and origin of the swarm, origins first.
	Peers []SwarmPeer `json:"peers"`
	// Edges are who sent to whom, by swarm address, from the receivers' reports.
	Edges []Edge `json:"edges"`
	// Seeders and Leechers as the tracker counts them (-1 when the tracker was not read).
	Seeders  int `json:"seeders"`
	Leechers int `json:"leechers"`
}

// SwarmPeer is one member of a swarm: an agent or an origin.
type SwarmPeer struct {
	// Addr is the swarm address; API the HTTP API address it was read at ("" when not read).
	Addr   string `json:"addr"`
	API    string `json:"api,omitempty"`
	PeerID string `json:"peer_id,omitempty"`
	// Role is "agent" or "origin".
	Role string `json:"role"`
	// State is the torrent's state ("starting", "downloading", "seeding", "failed",
	// "retired"), or "announced" for a member only the tracker reported, or "unreachable".
	State            string                 `json:"state"`
	Pieces           int                    `json:"pieces"`
	BytesFromPeers   int64                  `json:"bytes_from_peers"`
	BytesFromOrigins int64                  `json:"bytes_from_origins"`
	BytesSent        int64                  `json:"bytes_sent"`
	OriginReasons    map[OriginReason]int64 `json:"origin_reasons"`
	Blacklisted      []Blacklisted          `json:"blacklisted,omitempty"`
	Started          *time.Time             `json:"started,omitempty"`
	Finished         *time.Time             `json:"finished,omitempty"`
	LastAnnounce     *time.Time             `json:"last_announce,omitempty"`
	// RateIn and RateOut in bytes per second, from the difference of two snapshots.
	RateIn  float64 `json:"rate_in"`
	RateOut float64 `json:"rate_out"`
	Error   string  `json:"error,omitempty"`
}

// Edge is the bytes one member sent another for one blob.
type Edge struct {
	From string `json:"from"`
	To   string `json:"to"`
	// FromOrigin marks an edge whose sender is an origin.
	FromOrigin bool  `json:"from_origin,omitempty"`
	Bytes      int64 `json:"bytes"`
	// Rate in bytes per second, from the difference of two snapshots; Live says the
	// connection is open.
	Rate float64 `json:"rate"`
	Live bool    `json:"live"`
}

// Host is one agent or origin as a whole.
type Host struct {
	// API is the address it was read at; Addr its swarm address.
	API  string `json:"api"`
	Addr string `json:"addr,omitempty"`
	Role string `json:"role"`
	// Up says the host answered; Error says why not.
	Up    bool   `json:"up"`
	Error string `json:"error,omitempty"`
	// RateIn and RateOut in bytes per second, against the caps (0: none).
	RateIn      float64       `json:"rate_in"`
	RateOut     float64       `json:"rate_out"`
	IngressCap  int64         `json:"ingress_cap"`
	EgressCap   int64         `json:"egress_cap"`
	Conns       int           `json:"conns"`
	Torrents    int           `json:"torrents"`
	BytesIn     int64         `json:"bytes_in"`
	BytesOut    int64         `json:"bytes_out"`
	Blacklisted []Blacklisted `json:"blacklisted,omitempty"`
}

// RingEntry is one origin of the hash ring and its health as an origin sees it.
type RingEntry struct {
	Addr    string `json:"addr"`
	Healthy bool   `json:"healthy"`
	// Failures counts consecutive failed health checks.
	Failures int `json:"failures"`
	// Reachable says the gatherer could read this origin itself.
	Reachable bool `json:"reachable"`
}

// BuildIndexState is the build-index's Raft group.
type BuildIndexState struct {
	Leader string `json:"leader"` // the leader's API address; "" when there is none
	Term   uint64 `json:"term"`
	Nodes  int    `json:"nodes"`
	Error  string `json:"error,omitempty"`
	// Replication is the leader's queue to each remote cluster; empty without rules.
	Replication []RemoteQueue `json:"replication,omitempty"`
}

// RemoteQueue is the build-index leader's replication queue to one remote cluster.
type RemoteQueue struct {
	Name    string `json:"name"`
	Pending int    `json:"pending"`
	Parked  int    `json:"parked"`
	// OldestPending is when the oldest pending item was queued; zero when none is.
	OldestPending time.Time `json:"oldest_pending,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	// LastErrorAt and LastSuccess say which came last.
	LastErrorAt    time.Time `json:"last_error_at,omitzero"`
	LastSuccess    time.Time `json:"last_success,omitzero"`
	Replicated     int64     `json:"replicated"`
	BytesPerSecond float64   `json:"bytes_per_second"`
}

// HostEvent is an Event and the host that reported it.
type HostEvent struct {
	Host string `json:"host"`
	Role string `json:"role"`
	Event
}

// SourceError is a role that could not be read.
type SourceError struct {
	Role  string `json:"role"`
	Addr  string `json:"addr"`
	Error string `json:"error"`
}
