package observe

import (
	"context"
	"sync"
	"time"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// WatchedKinds are the events a Watcher streams from agents: what an operator acts on. The
// per-piece and per-connection events are left on the agents: at hundreds of pieces a
// second they would cost the data plane and bury the few that matter.
var WatchedKinds = []snapshot.EventKind{
	snapshot.EventBlacklist, snapshot.EventOriginFallback, snapshot.EventTrackerFailover,
	snapshot.EventTorrentDone, snapshot.EventTorrentFailed, snapshot.EventPieceBad,
	snapshot.EventDemoted, snapshot.EventEvicted,
}

// Watcher turns a Gatherer into a stream of snapshots, one per interval: each carries the
// rates since the snapshot before it (hosts, swarms, members and edges) and only the events
// that arrived since. It implements the source `krakenctl top` reads. Not safe for
// concurrent use of Next; the event streams it starts run until the ctx given to Start ends.
type Watcher struct {
	g     *Gatherer
	every time.Duration

	prev  *snapshot.Cluster
	timer *time.Timer

	mu     sync.Mutex
	events []snapshot.HostEvent
}

// NewWatcher returns a Watcher that gathers every interval (at least 100ms).
func NewWatcher(g *Gatherer, every time.Duration) *Watcher {
	return &Watcher{g: g, every: max(every, 100*time.Millisecond)}
}

// Start streams the agents' and origins' events (WatchedKinds) until ctx ends, reconnecting
// to a host that drops the stream. Without Deps.Events it does nothing.
func (w *Watcher) Start(ctx context.Context) {
	if w.g.deps.Events == nil {
		return
	}
	for _, a := range w.g.cfg.Agents {
		go w.stream(ctx, a, RoleAgent)
	}
	for _, o := range w.g.cfg.Origins {
		go w.stream(ctx, o, RoleOrigin)
	}
}

func (w *Watcher) stream(ctx context.Context, addr, role string) {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		err := w.g.deps.Events(ctx, addr, WatchedKinds, func(e snapshot.Event) error {
			w.add(snapshot.HostEvent{Host: addr, Role: role, Event: e})
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			backoff = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (w *Watcher) add(e snapshot.HostEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Oldest out: the newest are what a view shows. The slice is cut back to MaxEvents only
	// when it reaches twice that, so that a flood of events costs a copy per MaxEvents
	// events rather than one per event; Next keeps the newest MaxEvents.
	if len(w.events) >= 2*w.g.cfg.MaxEvents {
		n := copy(w.events, w.events[len(w.events)-w.g.cfg.MaxEvents:])
		clear(w.events[n:])
		w.events = w.events[:n]
	}
	w.events = append(w.events, printableEvent(e))
}

// Next returns the next snapshot: the first at once, then one per interval after the last.
// It returns ctx's error when ctx ends first.
func (w *Watcher) Next(ctx context.Context) (snapshot.Cluster, error) {
	if w.prev != nil {
		if w.timer == nil {
			w.timer = time.NewTimer(w.every)
		} else {
			w.timer.Reset(w.every)
		}
		select {
		case <-ctx.Done():
			return snapshot.Cluster{}, ctx.Err()
		case <-w.timer.C:
		}
	}
	c := w.g.Snapshot(ctx)
	if err := ctx.Err(); err != nil {
		return snapshot.Cluster{}, err
	}
	if w.prev != nil {
		Rates(w.prev, &c)
	}
	w.mu.Lock()
	c.Events, w.events = w.events, nil
	w.mu.Unlock()
	if n := len(c.Events) - w.g.cfg.MaxEvents; n > 0 {
		c.Events = c.Events[n:]
	}
	if c.Events == nil {
		c.Events = []snapshot.HostEvent{}
	}
	p := c
	w.prev = &p
	return c, nil
}

// Rates sets cur's rates from the counters' growth since prev: per host, per swarm, per member
// and per edge, and each swarm's ETA. A counter that went down (a restarted host) gives no
// rate rather than a negative one.
func Rates(prev *snapshot.Cluster, cur *snapshot.Cluster) {
	dt := cur.Time.Sub(prev.Time).Seconds()
	if dt <= 0 {
		return
	}
	rate := func(now, before int64) float64 {
		if now < before {
			return 0
		}
		return float64(now-before) / dt
	}
	hosts := map[string]snapshot.Host{}
	for _, h := range prev.Hosts {
		if h.Up {
			hosts[h.API] = h
		}
	}
	for i := range cur.Hosts {
		h := &cur.Hosts[i]
		if p, ok := hosts[h.API]; ok && h.Up {
			h.RateIn, h.RateOut = rate(h.BytesIn, p.BytesIn), rate(h.BytesOut, p.BytesOut)
		}
	}
	swarms := map[string]*snapshot.Swarm{}
	for i := range prev.Swarms {
		swarms[prev.Swarms[i].Digest.String()] = &prev.Swarms[i]
	}
	for i := range cur.Swarms {
		s := &cur.Swarms[i]
		p := swarms[s.Digest.String()]
		if p == nil {
			continue
		}
		// Members whose counters prev read from the host itself: one the tracker only named
		// ("announced") has no counters, and one that was down then has none either, so
		// the growth since then is unknown, not everything it ever moved.
		peers := map[string]snapshot.SwarmPeer{}
		for _, pp := range p.Peers {
			if pp.State != stateAnnounced {
				peers[pp.Addr] = pp
			}
		}
		var in float64
		for j := range s.Peers {
			m := &s.Peers[j]
			pm, ok := peers[m.Addr]
			if !ok {
				continue
			}
			m.RateIn = rate(m.BytesFromPeers+m.BytesFromOrigins, pm.BytesFromPeers+pm.BytesFromOrigins)
			m.RateOut = rate(m.BytesSent, pm.BytesSent)
			if m.Role == RoleAgent {
				in += m.RateIn
			}
		}
		s.RateIn = in
		edges := map[edgeKey]int64{}
		for _, e := range p.Edges {
			edges[edgeKey{e.From, e.To}] = e.Bytes
		}
		for j := range s.Edges {
			e := &s.Edges[j]
			_, fromRead := peers[e.From]
			_, toRead := peers[e.To]
			if b, ok := edges[edgeKey{e.From, e.To}]; ok {
				e.Rate = rate(e.Bytes, b)
			} else if e.Live && (fromRead || toRead) {
				// A live edge that a host read last time did not report opened since.
				e.Rate = float64(e.Bytes) / dt
			}
		}
		if !s.Done && in > 0 && s.Pieces > 0 {
			var left float64
			for _, m := range s.Peers {
				if m.Role == RoleAgent {
					left += float64(max(s.Pieces-m.Pieces, 0)) / float64(s.Pieces) * float64(s.Size)
				}
			}
			s.ETA = left / in
		}
	}
}
