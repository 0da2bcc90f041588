// Package snapshot holds what the swarm reports about itself, as served by the swarm API
// (server/api's SwarmTorrentsPath and SwarmEventsPath): a snapshot of each torrent and its
// connections, and the events of the swarm. swarm/scheduler produces these values, agents and
// origins encode them as they are, and clients (server/client) decode them without linking the
// swarm engine, its storage or the servers'. It imports only the standard library and
// go-digest.
package snapshot

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// TorrentStats is a snapshot of one torrent: a blob being downloaded or seeded.
type TorrentStats struct {
	Digest      digest.Digest `json:"digest"`
	Namespace   string        `json:"namespace,omitempty"`
	State       string        `json:"state"` // "starting", "downloading", "seeding", "failed"
	Size        int64         `json:"size_bytes"`
	PieceLength int64         `json:"piece_length"`
	Pieces      int           `json:"pieces"`
	Have        int           `json:"have"`
	Resumed     int           `json:"resumed,omitempty"`
	Verified    int64         `json:"verified_prefix_bytes"`
	// BytesIn counts verified piece bytes received, BytesInOrigin the part from origins.
	BytesIn       int64 `json:"bytes_in"`
	BytesInOrigin int64 `json:"bytes_in_origin"`
	// BytesOut counts piece bytes sent to peers.
	BytesOut int64 `json:"bytes_out"`
	// Wasted counts bytes received that were not needed (duplicates, cancelled pieces).
	Wasted    int64     `json:"wasted_bytes"`
	BadPieces int       `json:"bad_pieces"`
	Started   time.Time `json:"started"`
	// Downloaded is when the last missing piece was verified and written (downloads started by
	// the scheduler's Open only, not a torrent that only seeds); Checked when the whole blob's
	// digest matched, releasing its last byte to readers; Finished when the blob was committed
	// to the store (made durable and renamed).
	Downloaded *time.Time  `json:"downloaded,omitempty"`
	Checked    *time.Time  `json:"checked,omitempty"`
	Finished   *time.Time  `json:"finished,omitempty"`
	Error      string      `json:"error,omitempty"`
	Peers      []PeerStats `json:"peers"`
	// PastPeers are connections of this torrent that have closed, newest first, so that who
	// sent what survives the end of a download. Bounded (MaxPastPeers): the ones beyond are
	// summed into PastPeersDropped.
	PastPeers        []PeerStats `json:"past_peers,omitempty"`
	PastPeersDropped int         `json:"past_peers_dropped,omitempty"`
	// OriginReasons counts the pieces this node requested from origins, by why no other peer
	// was asked (OriginReason values).
	OriginReasons map[OriginReason]int64 `json:"origin_reasons,omitempty"`
	// Blacklisted are the peers this torrent refused or dropped, with why, newest first
	// (bounded like PastPeers).
	Blacklisted []Blacklisted `json:"blacklisted,omitempty"`
	// Retired is when the scheduler let the torrent go (it had seeded long enough, or failed);
	// set only on torrents from the history (TorrentsHistory).
	Retired *time.Time `json:"retired,omitempty"`
}

// MaxPastPeers bounds TorrentStats.PastPeers and TorrentStats.Blacklisted.
const MaxPastPeers = 64

// OriginReason says why a node asked an origin for a piece rather than a peer.
type OriginReason string

// Origin reasons.
const (
	// ReasonNoPeers: no peer other than origins was connected (the tracker handed out none,
	// or none could be reached).
	ReasonNoPeers OriginReason = "no_peers"
	// ReasonPeersLackPiece: peers were connected but none had announced the piece.
	ReasonPeersLackPiece OriginReason = "peers_lack_piece"
	// ReasonPeersSaturated: a connected peer had the piece but its request pipeline was full
	// or it was too slow (the piece timed out with it).
	ReasonPeersSaturated OriginReason = "peers_saturated"
	// ReasonBlacklisted: the only peers that could have served were blacklisted.
	ReasonBlacklisted OriginReason = "blacklisted"
	// ReasonEndgame: the last pieces were asked of several senders at once.
	ReasonEndgame OriginReason = "endgame"
)

// Blacklisted is one peer a node stopped talking to, and why.
type Blacklisted struct {
	Addr   string        `json:"addr"`
	Peer   string        `json:"peer_id,omitempty"`
	Digest digest.Digest `json:"digest,omitempty"`
	Reason string        `json:"reason"`
	Since  time.Time     `json:"since"`
	Until  time.Time     `json:"until"`
}

// HostStats is what one agent or origin reports about its swarm engine as a whole (server/api
// SwarmHostPath): its identity, caps, connections and totals.
type HostStats struct {
	// Role is "agent" or "origin".
	Role string `json:"role"`
	// PeerID is the lower-case hex of the node's wire peer id; Addr its advertised swarm address.
	PeerID string `json:"peer_id"`
	Addr   string `json:"addr"`
	// EgressCap and IngressCap are the configured limits in bytes per second (0: none).
	EgressCap  int64 `json:"egress_cap"`
	IngressCap int64 `json:"ingress_cap"`
	// Conns counts open swarm connections; Torrents the torrents in memory.
	Conns    int `json:"conns"`
	Torrents int `json:"torrents"`
	// BytesIn and BytesOut are piece bytes received and sent since the process started.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	// Blacklisted are the peers banned now, newest first.
	Blacklisted []Blacklisted `json:"blacklisted"`
	Time        time.Time     `json:"time"` // when the report was made, by the host's clock
}

// PeerStats is a snapshot of one connection of a torrent.
type PeerStats struct {
	ID       string    `json:"peer_id"`
	Addr     string    `json:"addr"`
	Origin   bool      `json:"origin,omitempty"`
	Outbound bool      `json:"outbound"`
	Have     int       `json:"have"`
	Pending  int       `json:"pending"`
	BytesIn  int64     `json:"bytes_in"`
	BytesOut int64     `json:"bytes_out"`
	Opened   time.Time `json:"opened"`
	// Closed and CloseReason are set on past peers (TorrentStats.PastPeers) only.
	Closed      *time.Time `json:"closed,omitempty"`
	CloseReason string     `json:"close_reason,omitempty"`
}

// EventKind names what happened in the swarm.
type EventKind string

// Event kinds.
const (
	EventTorrentStart  EventKind = "torrent_start"
	EventTorrentResume EventKind = "torrent_resume"
	EventTorrentSeed   EventKind = "torrent_seed"
	EventTorrentDone   EventKind = "torrent_done"
	EventTorrentFailed EventKind = "torrent_failed"
	EventConnOpen      EventKind = "conn_open"
	EventConnClose     EventKind = "conn_close"
	EventConnRejected  EventKind = "conn_rejected"
	EventDialFailed    EventKind = "dial_failed"
	EventBlacklist     EventKind = "blacklist"
	EventPieceReceived EventKind = "piece_received"
	EventPieceSent     EventKind = "piece_sent"
	EventPieceBad      EventKind = "piece_bad"
	// EventDemoted: a super-seeding origin stopped counting a peer's claims (pieces it says it
	// has) because one was not borne out; Err says which.
	EventDemoted EventKind = "demoted"
	// EventEvicted: a connection was closed to free its slot, or for holding one without use;
	// Err says why.
	EventEvicted EventKind = "evicted"
	// EventOriginFallback: a download asked an origin for pieces; Err holds the OriginReason
	// and Pieces how many pieces with that reason since the last such event. Sent at most once
	// a second per torrent and reason, so it is a trickle, not one per piece.
	EventOriginFallback EventKind = "origin_fallback"
	// EventTrackerFailover: an announce failed at one tracker (Addr, Err) and was retried on
	// the next.
	EventTrackerFailover EventKind = "tracker_failover"
)

// EventKinds lists every kind, for validating filters.
var EventKinds = []EventKind{
	EventTorrentStart, EventTorrentResume, EventTorrentSeed, EventTorrentDone, EventTorrentFailed,
	EventConnOpen, EventConnClose, EventConnRejected, EventDialFailed, EventBlacklist,
	EventPieceReceived, EventPieceSent, EventPieceBad, EventDemoted, EventEvicted,
	EventOriginFallback, EventTrackerFailover,
}

// Event is one structured thing that happened in the swarm: a connection, a piece, a torrent.
// Fields that do not apply to a kind are zero.
type Event struct {
	Time     time.Time     `json:"time"`
	Kind     EventKind     `json:"kind"`
	Digest   digest.Digest `json:"digest,omitempty"`
	Peer     string        `json:"peer,omitempty"` // hex peer id
	Addr     string        `json:"addr,omitempty"`
	Origin   bool          `json:"origin,omitempty"`
	Outbound bool          `json:"outbound,omitempty"`
	Piece    int           `json:"piece,omitempty"`
	Pieces   int           `json:"pieces,omitempty"`
	Bytes    int64         `json:"bytes,omitempty"` // received, or the blob's size
	Sent     int64         `json:"sent,omitempty"`
	Duration time.Duration `json:"duration,omitempty"` // nanoseconds
	Err      string        `json:"error,omitempty"`
}
