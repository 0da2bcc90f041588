package scheduler

import (
	"log/slog"
	"sync"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// The swarm's events are snapshot's: the scheduler publishes the values the swarm API serves.
type (
	EventKind = snapshot.EventKind
	Event     = snapshot.Event
)

// eventAttrs are the slog attributes of e, for the debug log of every event.
func eventAttrs(e Event) []any {
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
	case snapshot.EventPieceReceived, snapshot.EventPieceSent, snapshot.EventPieceBad:
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
