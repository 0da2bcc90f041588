package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
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
// has it (its first recipient has not got it yet, or left). An agent that has made no progress
// for stuckAfter is stuck: for the next stuckAfter (and again while it stays without progress)
// it is also shown pieces other agents have, as fast as it fetches them, in case it cannot get
// them from those agents (they left, are unreachable, or hold them and serve nobody).
//
// Availability counts only what the origin has evidence for (attack-findings.md §4): a piece
// it sent the peer in full, or a piece the peer claims (handshake bitfield, bitfield,
// complete, have) once the peer has proved that its claims are true. The proof is a challenge:
// the origin asks the peer, with an ordinary request, for challengeLength bytes at a random
// offset of a piece it claims and the origin did not send it, and compares the answer with its
// own copy. A peer's claims count once it has answered its first challenge; later claims are
// challenged at random (one in rechallengeOdds); claims made while a challenge is waiting for
// its answer are not vouched for by it, and count only once a challenge of one of them (always
// if there are several) is answered. A wrong answer, a cancel, or no answer within
// Config.RequestTimeout demotes the peer: none of its claims count again on this connection,
// and it is challenged once more; a second failure closes the connection and blacklists the
// peer. Honest agents answer challenges like any request for a piece they hold.

const (
	// revealAhead is how many revealed pieces an agent may have not yet fetched.
	revealAhead = 4
	stuckAfter  = 2 * time.Second
	// challengeLength is the size of a challenge's answer: small, and no liar guesses it.
	challengeLength = 1 << 10
	// rechallengeOdds: a proved peer's new claim is challenged with probability 1/rechallengeOdds,
	// so about pieces/rechallengeOdds challenges per connection and blob.
	rechallengeOdds = 16
)

// ErrFalseClaim marks a peer that claimed pieces it could not prove it holds, twice.
var ErrFalseClaim = errors.New("scheduler: claimed pieces it could not prove")

// trust is how far a super-seeding origin believes a peer's claims.
type trust uint8

const (
	unproved trust = iota // claims do not count until a challenge is answered
	proved                // claims count
	demoted               // a challenge failed: claims never count on this connection
)

// challenge is a request sent to prove a peer's claim. An expired challenge has failed
// already; its answer may still arrive and is read and ignored.
type challenge struct {
	r        wire.Request
	deadline time.Time
	expired  bool
}

// superSeed is the super-seeding state of a seed-only torrent, guarded by the torrent's mutex.
type superSeed struct {
	reveals []uint16 // times each piece was revealed to an agent that did not get it elsewhere
	avail   []int32  // connected agents that have each piece, counted from evidence (conn.counted)
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

// ssAdd starts super-seeding to c (register): its handshake's claims are challenged; t.mu
// held.
func (t *torrent) ssAdd(c *conn) {
	c.lastHave = t.s.now()
	t.ssClaims(c, c.remote)
	t.reveal(c, false)
}

// ssRemove takes c's pieces out of availability and forgets the reveals it never used (drop);
// t.mu held.
func (t *torrent) ssRemove(c *conn) {
	for i := range c.counted.All() {
		t.ss.avail[i]--
	}
	c.counted = wire.NewBitfield(c.counted.Len())
	for i := range c.shown.All() {
		if !c.remote.Has(i) && !c.sent.Has(i) && t.ss.reveals[i] > 0 {
			t.ss.reveals[i]--
		}
	}
}

// ssHave records that c claims piece i (got from anyone else); t.mu held.
func (t *torrent) ssHave(c *conn, i int) {
	if c.shown.Has(i) && !c.sent.Has(i) {
		c.showPending--
	}
	now := t.s.now()
	c.lastHave = now
	if !c.sent.Has(i) {
		switch {
		case c.challenging():
			c.unvouched.Set(i) // the outstanding challenge proves nothing about it
		case c.trust == proved:
			if t.ss.rnd.IntN(rechallengeOdds) == 0 {
				t.challenge(c, i)
			}
		case c.trust == unproved || !c.rechecked:
			t.challenge(c, i)
			c.rechecked = c.trust == demoted
		}
		if c.trust == proved && !c.challenging() {
			t.ssCountPiece(c, i)
		}
	}
	t.reveal(c, t.stuck(c, now))
}

// ssBitfield replaces c's pieces (bitfield or complete message); t.mu held.
func (t *torrent) ssBitfield(c *conn, old *wire.Bitfield) {
	c.showPending = 0
	for i := range c.shown.All() {
		if !c.remote.Has(i) && !c.sent.Has(i) {
			c.showPending++
		}
	}
	now := t.s.now()
	c.lastHave = now
	// Many claims at once are the cheapest lie: a proved peer's are challenged too.
	added := c.remote.AndNot(old).AndNot(c.sent)
	switch {
	case c.challenging():
		for i := range added.All() {
			c.unvouched.Set(i)
		}
	case c.trust == proved && added.Count() > 1:
		t.challenge(c, t.randomClaim(c, added))
		c.covered = added
	}
	t.ssClaims(c, added)
	t.ssCount(c)
	t.reveal(c, t.stuck(c, now))
}

// ssClaims challenges one of c's claims in among (nil: any claim) if c's claims are not
// proved yet, or it was demoted and has not had its second challenge; t.mu held.
func (t *torrent) ssClaims(c *conn, among *wire.Bitfield) {
	if c.challenging() || c.trust == proved || c.rechecked {
		return
	}
	if among == nil {
		among = c.remote
	}
	if i := t.randomClaim(c, among); i >= 0 {
		t.challenge(c, i)
		c.rechecked = c.trust == demoted
	}
}

// ssCount brings c's counted pieces in line with the evidence: the pieces sent to it, and its
// claims if they are proved, except those made while a challenge was outstanding and those
// the outstanding challenge is to vouch for (they wait; claims it withdrew stop counting);
// t.mu held.
func (t *torrent) ssCount(c *conn) {
	for i := range c.counted.All() {
		if !c.sent.Has(i) && (c.trust != proved || !c.remote.Has(i)) {
			c.counted.Clear(i)
			t.ss.avail[i]--
		}
	}
	for i := range c.sent.All() {
		t.ssCountPiece(c, i)
	}
	if c.trust == proved {
		for i := range c.remote.All() {
			if !c.unvouched.Has(i) && !c.covered.Has(i) {
				t.ssCountPiece(c, i)
			}
		}
	}
}

// ssCountPiece counts piece i as c's, if it is not yet; t.mu held.
func (t *torrent) ssCountPiece(c *conn, i int) {
	if !c.counted.Has(i) {
		c.counted.Set(i)
		t.ss.avail[i]++
	}
}

// randomClaim returns a piece of among that c claims and was not sent, at random, or -1.
func (t *torrent) randomClaim(c *conn, among *wire.Bitfield) int {
	pick, n := -1, 0
	for i := range among.All() {
		if c.remote.Has(i) && !c.sent.Has(i) {
			if n++; t.ss.rnd.IntN(n) == 0 {
				pick = i
			}
		}
	}
	return pick
}

// challenge asks c for a random block of challengeLength bytes of piece i; t.mu held.
func (t *torrent) challenge(c *conn, i int) {
	l := t.pieceLen(i)
	n := min(challengeLength, l)
	off := t.ss.rnd.Int64N(l - n + 1)
	r := wire.Request{Piece: uint32(i), Offset: uint32(off), Length: uint32(n)}
	c.challenges = append(c.challenges, challenge{r: r, deadline: t.s.now().Add(t.s.cfg.RequestTimeout)})
	c.covered = wire.NewBitfield(c.covered.Len())
	c.covered.Set(i)
	// A challenge is a request: the connection is not request-less (slots.go), so a peer that
	// leaves it unanswered is demoted and blacklisted for it, not merely dropped as unused.
	c.requested = true
	c.queue(r)
}

// challenging reports whether a challenge of c's waits for its answer; t.mu held.
func (c *conn) challenging() bool {
	for _, ch := range c.challenges {
		if !ch.expired {
			return true
		}
	}
	return false
}

// takeChallenge removes and returns c's challenge r, if there is one; t.mu held.
func (c *conn) takeChallenge(r wire.Request) (challenge, bool) {
	for k, ch := range c.challenges {
		if ch.r == r {
			c.challenges = append(c.challenges[:k], c.challenges[k+1:]...)
			return ch, true
		}
	}
	return challenge{}, false
}

// proveOK records a correct answer: c's claims count, unless it was demoted; t.mu held.
//
// The answer vouches for the claims made before its challenge was sent, not for those made
// while it was outstanding: else a peer holding one piece claimed it first, claimed every other
// piece while that challenge waited, answered it, and had them all counted, never challenged
// again (TestOnePieceLiarIsCaught). Those are sampled by a challenge of their own: always when
// there are several, like a bitfield's, else one in rechallengeOdds like a have.
func (t *torrent) proveOK(c *conn) {
	t.s.met.challenges.WithLabelValues("proved").Inc()
	if c.trust == unproved {
		c.trust = proved
	}
	c.covered = wire.NewBitfield(c.covered.Len())
	if c.trust == proved {
		w := c.unvouched.And(c.remote).AndNot(c.sent)
		c.unvouched = wire.NewBitfield(c.unvouched.Len())
		if n := w.Count(); n > 1 || n == 1 && t.ss.rnd.IntN(rechallengeOdds) == 0 {
			t.challenge(c, t.randomClaim(c, w))
			c.covered = w
		}
	}
	t.ssCount(c)
}

// proveFailed records a failed challenge of piece i: the first demotes c (its claims stop
// counting, and it is asked for another block of the same piece, which an honest peer that
// was slow or hit a bad read answers), the second returns the error to close the connection
// with. demotedNow reports whether this failure demoted c. t.mu held.
func (t *torrent) proveFailed(c *conn, i int, why string) (demotedNow bool, err error) {
	c.failures++
	t.s.met.challenges.WithLabelValues("failed").Inc()
	if c.failures > 1 {
		return false, fmt.Errorf("%w: %s, after being demoted", ErrFalseClaim, why)
	}
	c.trust = demoted
	c.unvouched, c.covered = wire.NewBitfield(c.unvouched.Len()), wire.NewBitfield(c.covered.Len())
	t.ssCount(c)
	if c.remote.Has(i) && !c.sent.Has(i) && !c.challenging() {
		t.challenge(c, i)
		c.rechecked = true
	}
	t.ssClaims(c, nil)
	return true, nil
}

// demoteEvent publishes c's demotion; call it without t.mu.
func (t *torrent) demoteEvent(c *conn, why string) {
	t.s.met.demoted.Inc()
	t.s.event(Event{Kind: snapshot.EventDemoted, Digest: t.d, Peer: string(c.id), Addr: c.addr, Err: why})
}

// onChallengeAnswer reads a block that answers one of c's challenges and checks it against
// the stored blob. ok is false when the block answers no challenge (it is a piece like any
// other); err closes the connection.
func (c *conn) onChallengeAnswer(ctx context.Context, dec *wire.Decoder, m wire.PieceHeader) (ok bool, err error) {
	t := c.t
	if t.ss == nil { // set before the torrent's first connection, never changed: no lock needed
		return false, nil
	}
	t.mu.Lock()
	ch, ok := c.takeChallenge(wire.Request(m))
	t.mu.Unlock()
	if !ok {
		return false, nil
	}
	var got, want [challengeLength]byte
	for n := 0; dec.PayloadPending() > 0; {
		k, err := dec.ReadPayloadPart(got[n:m.Length])
		c.in.Add(int64(k))
		n += k
		if err != nil {
			return true, fmt.Errorf("read from %s: %w", c.addr, err)
		}
	}
	if ch.expired {
		return true, nil // failed already; the answer came too late
	}
	b, err := t.s.store.Open(ctx, t.d)
	if err == nil {
		off, _ := t.mi.PieceRange(int(m.Piece))
		_, err = b.ReadAt(want[:m.Length], off+int64(m.Offset))
		_ = b.Close()
	}
	if err != nil {
		// No verdict without our own copy: the claim stays unproved and a later one is
		// challenged.
		t.s.log.Warn("read a challenged block", "digest", t.d, "err", err)
		return true, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if bytes.Equal(got[:m.Length], want[:m.Length]) {
		t.proveOK(c)
		return true, nil
	}
	why := fmt.Sprintf("answered a challenge for piece %d with the wrong bytes", m.Piece)
	return true, t.proveFailedLocked(c, int(m.Piece), why)
}

// onChallengeCancel handles a cancel that declines one of c's challenges: the peer does not
// have the piece it claimed. ok is false when the cancel is about something else.
func (c *conn) onChallengeCancel(r wire.Request) (ok bool, err error) {
	t := c.t
	if t.ss == nil { // as in onChallengeAnswer
		return false, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ch, ok := c.takeChallenge(r)
	if !ok || ch.expired {
		return ok, nil
	}
	return true, t.proveFailedLocked(c, int(r.Piece), fmt.Sprintf("declined a challenge for piece %d it claimed", r.Piece))
}

// proveFailedLocked is proveFailed, publishing the demotion without holding t.mu (it is
// released and taken again); t.mu held.
func (t *torrent) proveFailedLocked(c *conn, i int, why string) error {
	dem, err := t.proveFailed(c, i, why)
	if dem {
		t.mu.Unlock()
		t.demoteEvent(c, why)
		t.mu.Lock()
	}
	return err
}

// stuck reports whether c is in a stuck period (see above); t.mu held.
func (t *torrent) stuck(c *conn, now time.Time) bool { return now.Before(c.stuckUntil) }

// ssMayServe reports whether c may have piece i, which this origin holds (t.mu held): only
// once it was revealed to c (an honest agent asks a super-seeding origin for nothing else),
// and not while c owes the answer to a challenge of it. Else a peer holding nothing could
// answer every challenge by asking the challenger for the very block it was asked for, and
// relaying it back: its claims of every piece would count, and the origin would stop
// revealing them to anyone (TestRelayingLiarIsCaught).
func (t *torrent) ssMayServe(c *conn, i int) bool {
	if !c.shown.Has(i) && !c.sent.Has(i) {
		return false
	}
	for _, ch := range c.challenges {
		if int(ch.r.Piece) == i {
			return false
		}
	}
	return true
}

// ssServed records block r sent to c, and the piece as sent once each of its blocks (the
// blocks an agent asks for, at multiples of wire.MaxBlockLength) went out. Any other block
// counts for nothing: taking the piece's last byte for the piece let a peer that fetched a byte
// of each piece have every piece counted as its, and revealed to nobody else. t.mu held.
func (t *torrent) ssServed(c *conn, r wire.Request) {
	i, l := int(r.Piece), t.pieceLen(int(r.Piece))
	off, n := int64(r.Offset), int64(r.Length)
	if off%wire.MaxBlockLength != 0 || n != min(wire.MaxBlockLength, l-off) {
		return
	}
	if c.sentBlocks == nil {
		c.sentBlocks = map[int]uint32{}
	}
	blocks := c.sentBlocks[i] | 1<<(off/wire.MaxBlockLength)
	if all := uint32(1)<<((l+wire.MaxBlockLength-1)/wire.MaxBlockLength) - 1; blocks != all {
		c.sentBlocks[i] = blocks
		return
	}
	delete(c.sentBlocks, i)
	t.ssSent(c, i)
}

// ssSent records that piece i was sent to c in full; t.mu held.
func (t *torrent) ssSent(c *conn, i int) {
	if c.sent.Has(i) {
		return
	}
	// Progress, and on a super-seeding origin the only use a request makes of a connection
	// (slots.go): a peer asking for a byte now and then, or for what it got already, held its
	// slot against agents that would download (TestSippersDoNotHoldSlots).
	c.markUsed()
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
	c.remote.Set(i)
	t.ssCountPiece(c, i)
	t.reveal(c, t.stuck(c, t.s.now()))
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

// unstick shows more pieces to agents that made no progress for a while and fails the
// challenges that were not answered in time; housekeeping calls it every second.
func (t *torrent) unstick(now time.Time) {
	type failure struct {
		c       *conn
		why     string
		demoted bool
		err     error
	}
	var failed []failure
	t.mu.Lock()
	if t.ss == nil {
		t.mu.Unlock()
		return
	}
	for _, c := range t.conns {
		for k := range c.challenges {
			ch := &c.challenges[k]
			if ch.expired || now.Before(ch.deadline) {
				continue
			}
			ch.expired = true
			why := fmt.Sprintf("did not answer a challenge for piece %d within %v", ch.r.Piece, t.s.cfg.RequestTimeout)
			dem, err := t.proveFailed(c, int(ch.r.Piece), why)
			failed = append(failed, failure{c, why, dem, err})
			break // the next one, if any, was sent by proveFailed just now
		}
		if now.Sub(c.lastHave) > stuckAfter && !t.stuck(c, now) {
			c.stuckUntil = now.Add(stuckAfter)
		}
		t.reveal(c, t.stuck(c, now))
	}
	t.mu.Unlock()
	for _, f := range failed {
		if f.demoted {
			t.demoteEvent(f.c, f.why)
		}
		if f.err != nil {
			go func() { f.c.goodbye(f.err); f.c.fail(f.err) }()
		}
	}
}
