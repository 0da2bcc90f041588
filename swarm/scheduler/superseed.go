package scheduler

import (
	"math/rand/v2"
	"time"

	"github.com/krakenctl/krakenctl/swarm/wire"
)

// Super-seeding: how an origin keeps from sending a piece twice.
//
// An origin that announced every piece would leave each agent to choose which pieces to ask it
// for, and agents that do not see each other's outstanding requests pick the same piece now and
// then — more often towards the end, when few pieces exist only at the origin. Instead a
// super-seeding origin starts every connection with an empty bitfield and reveals pieces one by
// one with have messages, a few ahead of what each agent has fetched: first pieces that no agent
// connected to it has and that it has revealed least often, so that each piece leaves the
// origin about once and the agents trade it from there. Agents send have messages to the origin
// like to any peer, which gives the origin a view of the whole swarm's availability.
//
// Unrevealed pieces go out lowest first: the pieces an origin reveals are the swarm's frontier
// (each leaves the origin about once and every agent then gets it from its peers), so
// revealing them in order keeps every agent's verified prefix, which its clients stream, close
// behind its download. Revealed at random across the window, the piece the prefixes waited
// for was often among the last to leave the origin, and the agents hashed, and their clients
// read, a window's worth at the very end (measured: 1.6–2.0 s after the last piece at N = 16,
// against 0.3–0.6 s in order; docs/benchmarks.md). Several origins serving one blob would then
// show the agents the same lowest pieces, and the agents would take each from whichever
// showed it first, so one origin would carry most of the blob. Instead each takes a stripe:
// origin k of n (Deps.SeedStripe, from the ring's placement) reveals pieces i with
// i mod n = k first and the others' only once its own in the agent's window are revealed,
// which also covers for an origin that is down.
//
// Once every piece has been revealed, a piece is revealed again only while no connected agent
// has it (its first recipient has not got it yet, or left); an agent that has made no progress
// for stuckAfter is also shown pieces other agents have, in case it cannot reach them.

const (
	// revealAhead is how many revealed pieces an agent may have not yet fetched.
	revealAhead = 4
	stuckAfter  = 2 * time.Second
)

// superSeed is the super-seeding state of a seed-only torrent, guarded by the torrent's mutex.
type superSeed struct {
	reveals []uint16 // times each piece was revealed to an agent that did not get it elsewhere
	avail   []int32  // connected agents that have each piece
	window  int      // pieces after an agent's lowest missing one that are revealed first
	stripe  int      // this origin's stripe: pieces i with i mod stripes = stripe go first
	stripes int
	full    *wire.Bitfield
	rnd     *rand.Rand
}

// newSuperSeed returns the state for n pieces; stripe and stripes are this origin's stripe
// (any stripes < 1, or a stripe outside [0, stripes), means one stripe: every piece is its own).
func newSuperSeed(n, window, stripe, stripes int) *superSeed {
	if stripes < 1 || stripe < 0 || stripe >= stripes {
		stripe, stripes = 0, 1
	}
	return &superSeed{
		reveals: make([]uint16, n), avail: make([]int32, n), window: window, full: wire.NewFullBitfield(n),
		stripe: stripe, stripes: stripes,
		rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
}

// ssAdd counts c's pieces into availability (register); t.mu held.
func (t *torrent) ssAdd(c *conn) {
	for i := range c.remote.All() {
		t.ss.avail[i]++
	}
	c.lastHave = t.s.now()
	t.reveal(c, false)
}

// ssRemove takes c's pieces out of availability and forgets the reveals it never used (drop);
// t.mu held.
func (t *torrent) ssRemove(c *conn) {
	for i := range c.remote.All() {
		t.ss.avail[i]--
	}
	for i := range c.shown.All() {
		if !c.remote.Has(i) && !c.sent.Has(i) && t.ss.reveals[i] > 0 {
			t.ss.reveals[i]--
		}
	}
}

// ssHave records that c got piece i (from anyone); t.mu held.
func (t *torrent) ssHave(c *conn, i int) {
	t.ss.avail[i]++
	if c.shown.Has(i) && !c.sent.Has(i) {
		c.showPending--
	}
	c.lastHave = t.s.now()
	t.reveal(c, false)
}

// ssBitfield replaces c's pieces (bitfield or complete message); t.mu held.
func (t *torrent) ssBitfield(c *conn, old *wire.Bitfield) {
	for i := range old.All() {
		t.ss.avail[i]--
	}
	c.showPending = 0
	for i := range c.remote.All() {
		t.ss.avail[i]++
	}
	for i := range c.shown.All() {
		if !c.remote.Has(i) && !c.sent.Has(i) {
			c.showPending++
		}
	}
	c.lastHave = t.s.now()
	t.reveal(c, false)
}

// ssSent records that piece i was sent to c in full; t.mu held.
func (t *torrent) ssSent(c *conn, i int) {
	if c.sent.Has(i) {
		return
	}
	c.sent.Set(i)
	if c.shown.Has(i) && !c.remote.Has(i) {
		c.showPending--
	}
	// An agent announces a piece to every peer but the one it got it from, so the origin
	// would never hear of the pieces it sent itself: count them as the agent's now. Else its
	// availability stays 0 (the origin might reveal it again) and, worse, the agent's lowest
	// missing piece as seen from here never moves past the first piece it got from the
	// origin, so pick's window (the pieces right after it) points at the start of the blob
	// and the pieces the agent's prefix waits for are revealed in random order.
	if !c.remote.Has(i) {
		c.remote.Set(i)
		t.ss.avail[i]++
	}
	t.reveal(c, false)
}

// reveal shows c pieces until revealAhead are pending; stuck allows pieces other agents
// have. t.mu held.
func (t *torrent) reveal(c *conn, stuck bool) {
	for c.showPending < revealAhead {
		i := t.ss.pick(c, stuck)
		if i < 0 {
			return
		}
		c.shown.Set(i)
		t.ss.reveals[i]++
		c.showPending++
		c.queue(wire.Have{Piece: uint32(i)})
	}
}

// pick returns the piece to reveal to c next, or -1. Among the pieces c lacks and was not
// shown: those no connected agent has, least revealed first; among those, the ones in the
// window after c's lowest missing piece first, then this origin's stripe first, then the
// lowest index (see above). When c is stuck, otherwise the rarest, ties at random.
func (s *superSeed) pick(c *conn, stuck bool) int {
	low := s.full.NextNotIn(c.remote, 0)
	if low < 0 {
		return -1
	}
	best, bestKey, ties := -1, int64(-1), 0
	for i := low; i < len(s.avail); i++ {
		if c.remote.Has(i) || c.shown.Has(i) {
			continue
		}
		var key int64
		switch {
		case s.avail[i] == 0:
			key = 4 * int64(s.reveals[i])
			if i >= low+s.window {
				key += 2
			}
			if i%s.stripes != s.stripe {
				key++
			}
		case stuck:
			key = 1<<20 + int64(s.avail[i])
		default:
			continue
		}
		switch {
		case best < 0 || key < bestKey:
			best, bestKey, ties = i, key, 1
		case key == bestKey && key >= 1<<20:
			ties++
			if s.rnd.IntN(ties) == 0 {
				best = i
			}
		}
		if key == 0 {
			break // nothing ranks before an unrevealed piece of the stripe in the window
		}
	}
	return best
}

// unstick shows more pieces to agents that made no progress for a while; housekeeping calls
// it every second.
func (t *torrent) unstick(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ss == nil {
		return
	}
	for _, c := range t.conns {
		t.reveal(c, now.Sub(c.lastHave) > stuckAfter)
	}
}
