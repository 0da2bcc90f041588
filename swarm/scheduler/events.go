package scheduler

import (
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// EventKind names what happened.
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
	Duration time.Duration `json:"duration,omitempty"`
	Err      string        `json:"error,omitempty"`
}

func (e Event) attrs() []any {
	a := []any{slog.String("kind", string(e.Kind))}
	if e.Digest != "" {
		a = append(a, slog.String("digest", e.Digest.String()))
	}
	if e.Peer != "" {
		a = append(a, slog.String("peer", e.Peer))
	}
	if e.Addr != "" {
		a = append(a, slog.String("addr", e.Addr))
	}
	switch e.Kind {
	case EventPieceReceived, EventPieceSent, EventPieceBad:
		a = append(a, slog.Int("piece", e.Piece))
	}
	if e.Bytes != 0 {
		a = append(a, slog.Int64("bytes", e.Bytes))
	}
	if e.Err != "" {
		a = append(a, slog.String("err", e.Err))
	}
	return a
}

// hub fans events out to subscribers without ever blocking the publisher.
type hub struct {
	mu     sync.Mutex
	subs   map[chan Event]struct{}
	closed bool
}

func newHub() *hub { return &hub{subs: map[chan Event]struct{}{}} }

func (h *hub) subscribe(buf int) (<-chan Event, func()) {
	ch := make(chan Event, max(buf, 1))
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(ch)
		return ch, func() {}
	}
	h.subs[ch] = struct{}{}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
	}
}

func (h *hub) publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for ch := range h.subs {
		close(ch)
		delete(h.subs, ch)
	}
}
