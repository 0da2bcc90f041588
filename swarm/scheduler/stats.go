package scheduler

import (
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
)

// TorrentStats is a snapshot of one torrent.
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
	// Open only); Checked when the whole blob's digest matched, releasing its last byte to
	// readers; Finished when the blob was committed to the store (made durable and renamed).
	Downloaded *time.Time  `json:"downloaded,omitempty"`
	Checked    *time.Time  `json:"checked,omitempty"`
	Finished   *time.Time  `json:"finished,omitempty"`
	Error      string      `json:"error,omitempty"`
	Peers      []PeerStats `json:"peers"`
}

// PeerStats is a snapshot of one connection.
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

func (t *torrent) stats() TorrentStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := TorrentStats{
		Digest: t.d, Namespace: t.ns, Size: t.mi.Length, PieceLength: t.mi.PieceLength,
		Pieces: t.mi.NumPieces(), Resumed: t.tot.resumed, Verified: t.prefix,
		BytesIn: t.tot.in, BytesInOrigin: t.tot.inOrigin, BytesOut: t.tot.out, Wasted: t.tot.wasted,
		BadPieces: t.tot.bad, Started: t.started, Peers: []PeerStats{},
	}
	if t.have != nil {
		st.Have = t.have.Count()
	}
	if !t.downloaded.IsZero() {
		d := t.downloaded
		st.Downloaded = &d
	}
	if !t.checkedAt.IsZero() {
		c := t.checkedAt
		st.Checked = &c
	}
	switch {
	case t.err != nil && !t.committed:
		st.State, st.Error = "failed", t.err.Error()
	case t.committed:
		st.State = "seeding"
		f := t.finished
		st.Finished = &f
	case t.picker != nil:
		st.State = "downloading"
	default:
		st.State = "starting"
	}
	for _, c := range t.conns {
		st.Peers = append(st.Peers, PeerStats{
			ID: string(c.id), Addr: c.addr, Origin: c.origin, Outbound: c.outbound, Have: c.remote.Count(),
			Pending: len(c.pending), BytesIn: c.in.Load(), BytesOut: c.out.Load(), Opened: c.opened,
		})
	}
	sort.Slice(st.Peers, func(a, b int) bool { return st.Peers[a].ID < st.Peers[b].ID })
	return st
}
