package tracker

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/swarm/announce"
)

// peerEntry is one peer of one blob's swarm.
type peerEntry struct {
	id, addr string
	api      string    // the HTTP API address it announced and the tracker kept; "" for none
	by       announcer // who announced it last
	complete bool
	have     int // progress it announced: have of pieces (0 and 0 when it did not say)
	pieces   int
	last     time.Time // its last announce
	expires  time.Time
	idx      int // position in its swarm's list (seeders or leechers)
}

// peerSwarm is the peer set of one blob. Seeders and leechers are kept in separate slices so
// that a handout can sample either group at random in time proportional to what it takes.
type peerSwarm struct {
	ns       string // the namespace of the last announce (a blob may be pulled under several)
	byID     map[string]*peerEntry
	byAddr   map[string]*peerEntry
	seeders  []*peerEntry
	leechers []*peerEntry
}

func (sw *peerSwarm) list(complete bool) *[]*peerEntry {
	if complete {
		return &sw.seeders
	}
	return &sw.leechers
}

func (sw *peerSwarm) add(e *peerEntry) {
	l := sw.list(e.complete)
	e.idx = len(*l)
	*l = append(*l, e)
	sw.byID[e.id] = e
	sw.byAddr[e.addr] = e
}

// remove takes e out of its list (swapping the last entry into its place) and the indexes.
func (sw *peerSwarm) remove(e *peerEntry) {
	l := sw.list(e.complete)
	last := len(*l) - 1
	(*l)[e.idx] = (*l)[last]
	(*l)[e.idx].idx = e.idx
	(*l)[last] = nil
	*l = (*l)[:last]
	delete(sw.byID, e.id)
	if sw.byAddr[e.addr] == e {
		delete(sw.byAddr, e.addr)
	}
}

func (sw *peerSwarm) empty() bool { return len(sw.byID) == 0 }

// peerTable holds the swarms of every blob. It is safe for concurrent use.
type peerTable struct {
	ttl      time.Duration
	max      int
	sameHost func(a, b announcer) bool // whether two announces came from one host
	changed  func(delta int)           // told of every change in the number of entries

	mu     sync.Mutex
	swarms map[digest.Digest]*peerSwarm
	n      int
}

func newPeerTable(ttl time.Duration, maxPeers int, sameHost func(a, b announcer) bool, changed func(int)) *peerTable {
	return &peerTable{ttl: ttl, max: maxPeers, sameHost: sameHost, changed: changed, swarms: map[digest.Digest]*peerSwarm{}}
}

// announce records req, announced by who, at now and returns the handout for it: the given
// origins (minus the requester) in random order, then seeders, then leechers, each group in
// random order, at most max peers, never the requester and never an expired peer. It refuses
// (conflictError) an announce whose address or peer id another host holds.
func (t *peerTable) announce(req announce.Request, who announcer, now time.Time, origins []announce.Peer) ([]announce.Peer, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sw, err := t.upsert(req, who, now)
	if err != nil {
		return nil, err
	}

	out := make([]announce.Peer, 0, t.max)
	skip := make(map[string]bool, len(origins)+1)
	skip[req.PeerID] = true
	rand.Shuffle(len(origins), func(i, j int) { origins[i], origins[j] = origins[j], origins[i] })
	for _, o := range origins {
		if len(out) == t.max {
			break
		}
		if !skip[o.ID] {
			skip[o.ID] = true
			out = append(out, o)
		}
	}
	var expired []*peerEntry
	out, expired = sample(out, t.max, sw.seeders, skip, now, expired)
	out, expired = sample(out, t.max, sw.leechers, skip, now, expired)
	for _, e := range expired {
		sw.remove(e)
	}
	t.add(-len(expired))
	return out, nil
}

// sample appends entries of list in random order to out until it holds max peers, skipping the
// ids in skip and collecting expired entries in expired. It draws from a virtual shuffle of
// list (a Fisher-Yates shuffle whose swaps are kept in a map), so it costs time in the number
// of entries it looks at, not in the length of list.
func sample(out []announce.Peer, max int, list []*peerEntry, skip map[string]bool, now time.Time, expired []*peerEntry) ([]announce.Peer, []*peerEntry) {
	n := len(list)
	if len(out) >= max || n == 0 {
		return out, expired
	}
	swaps := make(map[int]int, min(n, 2*max))
	at := func(i int) int {
		if v, ok := swaps[i]; ok {
			return v
		}
		return i
	}
	for i := 0; i < n && len(out) < max; i++ {
		j := i + rand.IntN(n-i)
		vi, vj := at(i), at(j)
		swaps[j] = vi
		e := list[vj]
		switch {
		case !e.expires.After(now):
			expired = append(expired, e)
		case skip[e.id]:
		default:
			out = append(out, announce.Peer{ID: e.id, Addr: e.addr, Complete: e.complete})
		}
	}
	return out, expired
}

// upsert records req, announced by who, in its blob's swarm with a fresh expiry and returns the
// swarm. A live entry belongs to the host that announced it: another peer id on its address
// replaces it only when it comes from that host (a peer that restarted, with a new id), and so
// does a move of its peer id to another address; from another host either is a conflict, or
// one announce could push any peer out of every handout. The caller holds t.mu.
func (t *peerTable) upsert(req announce.Request, who announcer, now time.Time) (*peerSwarm, error) {
	sw := t.swarms[req.Digest]
	if sw == nil {
		sw = &peerSwarm{byID: map[string]*peerEntry{}, byAddr: map[string]*peerEntry{}}
		t.swarms[req.Digest] = sw
	}
	e := sw.byID[req.PeerID]
	if e != nil && e.expires.After(now) && !t.sameHost(e.by, who) {
		return sw, conflictError("peer_id", req.PeerID)
	}
	if old := sw.byAddr[req.Addr]; old != nil && old.id != req.PeerID {
		if old.expires.After(now) && !t.sameHost(old.by, who) {
			return sw, conflictError("addr", req.Addr)
		}
		sw.remove(old)
		t.add(-1)
	}
	expires := now.Add(t.ttl)
	sw.ns = req.Namespace
	if e == nil {
		sw.add(&peerEntry{id: req.PeerID, addr: req.Addr, api: req.API, by: who, complete: req.Complete,
			have: req.Have, pieces: req.Pieces, last: now, expires: expires})
		t.add(1)
		return sw, nil
	}
	if e.addr != req.Addr || e.complete != req.Complete {
		sw.remove(e)
		e.addr, e.complete = req.Addr, req.Complete
		sw.add(e)
	}
	e.by, e.expires, e.last = who, expires, now
	e.api, e.have, e.pieces = req.API, req.Have, req.Pieces
	return sw, nil
}

// add changes the entry count by delta. The caller holds t.mu.
func (t *peerTable) add(delta int) {
	if delta == 0 {
		return
	}
	t.n += delta
	if t.changed != nil {
		t.changed(delta)
	}
}

// sweep drops every expired entry, and the swarms left empty, and returns how many entries it
// dropped.
func (t *peerTable) sweep(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	dropped := 0
	for d, sw := range t.swarms {
		for _, l := range [][]*peerEntry{sw.seeders, sw.leechers} {
			// Walk backwards: remove swaps the last entry into the hole.
			for i := len(l) - 1; i >= 0; i-- {
				if e := l[i]; !e.expires.After(now) {
					sw.remove(e)
					dropped++
				}
			}
		}
		if sw.empty() {
			delete(t.swarms, d)
		}
	}
	t.add(-dropped)
	return dropped
}
