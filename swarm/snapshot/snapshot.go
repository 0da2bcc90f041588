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
)

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
