// Package piece holds the data structures a swarm scheduler uses to decide which pieces of a blob
// to request from which peer: Picker tracks what this node has, what it has asked for and from
// whom, and how many connected peers hold each piece, and chooses the next requests. The sets
// of pieces it takes and returns are wire.Bitfield, the bitfield the handshake and the bitfield
// message carry, so that there is one bitfield type and one wire format.
//
// The picker exists to avoid the failure modes measured on Uber's Kraken (issue 3, DESIGN §5):
// rarest-first with a deterministic tie-break makes every node ask the origin for the same few
// pieces (herding), and random choice without regard to the origin makes the origin send the
// same piece several times where peers could have served it. Picker chooses rarest first among
// the pieces a peer offers, breaks ties with a caller-supplied *rand.Rand (so tests are
// reproducible), asks origins preferably or only for pieces no other connected peer has,
// withdraws origin requests once a peer can serve the piece, and duplicates requests only in
// endgame, within a bound.
//
// Nothing here starts goroutines, does I/O or reads the clock on its own (the Picker's clock is
// a Config field); nothing is safe for concurrent use.
package piece

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/krakenctl/krakenctl/swarm/wire"
)

// Sentinel errors. Errors returned by this package wrap one of them.
var (
	// ErrBadBitfield reports a bitfield of the wrong length for the blob, or a nil one. It is
	// wire.ErrBadBitfield, which also reports an undecodable bitfield (and wraps
	// wire.ErrMalformed).
	ErrBadBitfield = wire.ErrBadBitfield
	// ErrOutOfRange reports a piece index outside [0, pieces).
	ErrOutOfRange = errors.New("piece index out of range")
	// ErrUnknownPeer reports a peer that was never added or has gone.
	ErrUnknownPeer = errors.New("unknown peer")
	// ErrPeerExists reports AddPeer for a peer that is already connected.
	ErrPeerExists = errors.New("peer already added")
	// ErrAlreadyHave reports Received for a piece this node already has.
	ErrAlreadyHave = errors.New("piece already held")
	// ErrInvalidConfig reports a Config that New cannot use.
	ErrInvalidConfig = errors.New("invalid picker config")
)

// PeerID names a connected peer. The picker only compares them; the scheduler chooses the
// representation (for example the wire peer id as a string).
type PeerID string

// Request is one outstanding request: Piece was asked of Peer at Sent.
type Request struct {
	Piece int
	Peer  PeerID
	Sent  time.Time
}

// OriginPolicy says how the picker treats peers added as origins (or other seeders whose
// upload the swarm should spare).
type OriginPolicy int

const (
	// OriginOnlyUnique asks an origin only for pieces that no connected non-origin peer has,
	// and withdraws a request to an origin (PeerHas and PeerBitfield return it, so the caller
	// sends a cancel) as soon as a non-origin peer announces the piece. This keeps the origin
	// from sending a piece that peers can serve. If the origin had already started sending a
	// withdrawn piece, Received still accepts it. It is the default.
	OriginOnlyUnique OriginPolicy = iota
	// OriginPreferUnique asks an origin first for pieces no connected non-origin peer has, then
	// for the others, rarest among non-origin peers first. Requests are never withdrawn.
	OriginPreferUnique
	// OriginAsPeer treats origins like any other peer.
	OriginAsPeer
)

// DefaultEndgameDuplicates is the default bound on outstanding requests per piece in endgame.
const DefaultEndgameDuplicates = 2

// Config configures a Picker.
type Config struct {
	// Pieces is the number of pieces of the blob, in [0, wire.MaxPieces] (0 is allowed: the
	// picker starts complete).
	Pieces int
	// Rand breaks ties between equally rare pieces. Pass a seeded source for reproducible
	// choices; nil means a randomly seeded source.
	Rand *rand.Rand
	// Now stamps requests made by Next; nil means time.Now.
	Now func() time.Time
	// OriginPolicy says how peers added as origins are asked; the zero value is
	// OriginOnlyUnique.
	OriginPolicy OriginPolicy
	// EndgameDuplicates bounds the outstanding requests per piece once every missing piece has
	// been requested (endgame); 0 means DefaultEndgameDuplicates, 1 disables duplication.
	EndgameDuplicates int
	// Window, when positive, makes Next rank the Window pieces from the lowest missing one before
	// every other piece: the rest of the blob is asked for only when the window cannot fill
	// the request. Origins (under OriginOnlyUnique and OriginPreferUnique) are asked across the
	// whole blob regardless, so that nodes do not collide on the few unique pieces of a window. A node that streams
	// the blob in order to a client then keeps its verified prefix close behind its download,
	// while the choice inside the window stays rarest-first with random ties, so that nodes
	// starting together still spread their requests. 0 considers the whole blob at once.
	Window int
}

type peerState struct {
	bits    *wire.Bitfield
	origin  bool
	pending map[int]time.Time // pieces asked of this peer and not yet received or released
}

type outstanding struct {
	peer PeerID
	sent time.Time
}

// Picker chooses which pieces of one blob to request from which peer. It tracks the pieces this
// node has, the outstanding requests (piece, peer, time sent), and for each piece how many
// connected peers have it.
//
// Next never asks for a piece this node has or one already requested, except in endgame (every
// missing piece has an outstanding request), when a piece may be requested from up to
// Config.EndgameDuplicates peers at once, never twice from the same peer and (unless origins are
// asked as peers) never from a second origin while an origin has it outstanding. Among the eligible
// pieces it picks the rarest first (fewest connected peers have it; in endgame, fewest
// outstanding requests first) and breaks ties at random, so that nodes starting together do
// not all ask for the same pieces. Origins are asked according to Config.OriginPolicy.
//
// Methods that take a piece index from the network validate it and return an error wrapping
// ErrOutOfRange; methods that name a peer that was never added (or is gone) return an error
// wrapping ErrUnknownPeer. No error leaves the picker changed.
//
// A Picker is not safe for concurrent use: it is owned by the one scheduler event loop of its
// torrent (as Kraken's dispatcher owns its state), which serialises peer events, timer ticks and
// requests through it. It starts no goroutines and reads the clock only through Config.Now.
type Picker struct {
	n      int
	rnd    *rand.Rand
	now    func() time.Time
	policy OriginPolicy
	maxDup int
	window int

	have      *wire.Bitfield
	haveCount int
	low       int     // no piece below low is missing
	avail     []int32 // connected peers that have each piece, origins included
	oavail    []int32 // connected origins that have each piece
	reqs      [][]outstanding
	requested int // missing pieces with at least one outstanding request
	peers     map[PeerID]*peerState

	// scratch for Next, reused between calls
	cand, keys, counts, tie []int
}

// New returns a picker for a blob of cfg.Pieces pieces with none held and no peers. It returns
// an error wrapping ErrInvalidConfig for a piece count outside [0, wire.MaxPieces], a negative
// duplicate bound or an unknown origin policy.
func New(cfg Config) (*Picker, error) {
	if cfg.Pieces < 0 || cfg.Pieces > wire.MaxPieces {
		return nil, fmt.Errorf("new picker: %d pieces: %w", cfg.Pieces, ErrInvalidConfig)
	}
	if cfg.EndgameDuplicates < 0 {
		return nil, fmt.Errorf("new picker: endgame duplicates %d: %w", cfg.EndgameDuplicates, ErrInvalidConfig)
	}
	if cfg.Window < 0 {
		return nil, fmt.Errorf("new picker: window %d: %w", cfg.Window, ErrInvalidConfig)
	}
	if cfg.OriginPolicy < OriginOnlyUnique || cfg.OriginPolicy > OriginAsPeer {
		return nil, fmt.Errorf("new picker: origin policy %d: %w", cfg.OriginPolicy, ErrInvalidConfig)
	}
	p := &Picker{
		n:      cfg.Pieces,
		rnd:    cfg.Rand,
		now:    cfg.Now,
		policy: cfg.OriginPolicy,
		maxDup: cfg.EndgameDuplicates,
		window: cfg.Window,
		have:   wire.NewBitfield(cfg.Pieces),
		avail:  make([]int32, cfg.Pieces),
		oavail: make([]int32, cfg.Pieces),
		reqs:   make([][]outstanding, cfg.Pieces),
		peers:  make(map[PeerID]*peerState),
	}
	if p.rnd == nil {
		p.rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.maxDup == 0 {
		p.maxDup = DefaultEndgameDuplicates
	}
	return p, nil
}

func (p *Picker) checkPiece(op string, i int) error {
	if i < 0 || i >= p.n {
		return fmt.Errorf("%s: piece %d of %d: %w", op, i, p.n, ErrOutOfRange)
	}
	return nil
}

func (p *Picker) peer(op string, id PeerID) (*peerState, error) {
	ps := p.peers[id]
	if ps == nil {
		return nil, fmt.Errorf("%s: peer %q: %w", op, id, ErrUnknownPeer)
	}
	return ps, nil
}

// Pieces returns the number of pieces of the blob.
func (p *Picker) Pieces() int { return p.n }

// Have returns a copy of the bitfield of pieces this node has.
func (p *Picker) Have() *wire.Bitfield { return p.have.Clone() }

// Has reports whether this node has piece i (false for an index out of range).
func (p *Picker) Has(i int) bool { return i >= 0 && i < p.n && p.have.Has(i) }

// Missing returns the number of pieces this node lacks.
func (p *Picker) Missing() int { return p.n - p.haveCount }

// Complete reports whether this node has every piece.
func (p *Picker) Complete() bool { return p.haveCount == p.n }

// Endgame reports whether every missing piece has an outstanding request, which is when Next
// starts duplicating requests.
func (p *Picker) Endgame() bool {
	m := p.Missing()
	return m > 0 && p.requested == m
}

// Availability returns how many connected peers (origins included) have piece i, or 0 for an
// index out of range.
func (p *Picker) Availability(i int) int {
	if i < 0 || i >= p.n {
		return 0
	}
	return int(p.avail[i])
}

// Outstanding returns the pieces requested of peer and not yet received or released, in
// increasing order (nil for an unknown peer).
func (p *Picker) Outstanding(peer PeerID) []int {
	ps := p.peers[peer]
	if ps == nil || len(ps.pending) == 0 {
		return nil
	}
	out := make([]int, 0, len(ps.pending))
	for i := range ps.pending {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// Requesters returns the peers piece i is outstanding with, oldest request first.
func (p *Picker) Requesters(i int) []PeerID {
	if i < 0 || i >= p.n {
		return nil
	}
	out := make([]PeerID, len(p.reqs[i]))
	for j, o := range p.reqs[i] {
		out[j] = o.peer
	}
	return out
}

// AddPeer registers a connected peer that has no pieces yet (PeerBitfield and PeerHas report
// them). origin marks an origin or seeder whose upload Config.OriginPolicy spares. It returns
// an error wrapping ErrPeerExists if the peer is already connected.
func (p *Picker) AddPeer(peer PeerID, origin bool) error {
	if p.peers[peer] != nil {
		return fmt.Errorf("add peer %q: %w", peer, ErrPeerExists)
	}
	p.peers[peer] = &peerState{bits: wire.NewBitfield(p.n), origin: origin, pending: make(map[int]time.Time)}
	return nil
}

// PeerBitfield replaces what peer is known to have with bits (the bitfield message). Under
// OriginOnlyUnique it returns the requests to origins withdrawn because peer (a non-origin) now
// has their piece: send a cancel for each; those pieces are eligible for Next again. It returns
// an error wrapping ErrBadBitfield if bits is nil or has the wrong length. The picker keeps a
// copy.
// Requests already made of peer for pieces bits no longer has stay outstanding until they are
// received, released or time out.
func (p *Picker) PeerBitfield(peer PeerID, bits *wire.Bitfield) ([]Request, error) {
	ps, err := p.peer("update peer bitfield", peer)
	if err != nil {
		return nil, err
	}
	if bits == nil {
		return nil, fmt.Errorf("update peer bitfield: nil bitfield: %w", ErrBadBitfield)
	}
	if bits.Len() != p.n {
		return nil, fmt.Errorf("update peer bitfield: %d bits for %d pieces: %w", bits.Len(), p.n, ErrBadBitfield)
	}
	for i := range ps.bits.All() {
		p.addAvail(i, ps.origin, -1)
	}
	ps.bits = bits.Clone()
	var withdrawn []Request
	for i := range ps.bits.All() {
		p.addAvail(i, ps.origin, +1)
		if !ps.origin {
			withdrawn = p.withdrawOrigin(i, withdrawn)
		}
	}
	return withdrawn, nil
}

// PeerHas records that peer has piece i (the have message); repeating it is harmless. It
// returns withdrawn origin requests as PeerBitfield does.
func (p *Picker) PeerHas(peer PeerID, i int) ([]Request, error) {
	ps, err := p.peer("update peer have", peer)
	if err != nil {
		return nil, err
	}
	if err := p.checkPiece("update peer have", i); err != nil {
		return nil, err
	}
	if ps.bits.Has(i) {
		return nil, nil
	}
	ps.bits.Set(i)
	p.addAvail(i, ps.origin, +1)
	if ps.origin {
		return nil, nil
	}
	return p.withdrawOrigin(i, nil), nil
}

func (p *Picker) addAvail(i int, origin bool, d int32) {
	p.avail[i] += d
	if origin {
		p.oavail[i] += d
	}
}

// withdrawOrigin releases the requests for piece i made to origins, under OriginOnlyUnique,
// appending them to out.
func (p *Picker) withdrawOrigin(i int, out []Request) []Request {
	if p.policy != OriginOnlyUnique || p.have.Has(i) {
		return out
	}
	for j := 0; j < len(p.reqs[i]); {
		o := p.reqs[i][j]
		if !p.peers[o.peer].origin {
			j++
			continue
		}
		out = append(out, Request{Piece: i, Peer: o.peer, Sent: o.sent})
		p.release(i, j)
	}
	return out
}

// release removes the j-th outstanding request of piece i.
func (p *Picker) release(i, j int) {
	o := p.reqs[i][j]
	delete(p.peers[o.peer].pending, i)
	p.reqs[i] = slices.Delete(p.reqs[i], j, j+1)
	if len(p.reqs[i]) == 0 {
		p.reqs[i] = nil
		if !p.have.Has(i) {
			p.requested--
		}
	}
}

// PeerGone forgets peer: its pieces no longer count towards availability and its outstanding
// requests are released (returned in piece order) so that Next can ask someone else. Unknown
// peers are ignored.
func (p *Picker) PeerGone(peer PeerID) []Request {
	ps := p.peers[peer]
	if ps == nil {
		return nil
	}
	released := make([]Request, 0, len(ps.pending))
	for _, i := range p.Outstanding(peer) {
		j := slices.IndexFunc(p.reqs[i], func(o outstanding) bool { return o.peer == peer })
		released = append(released, Request{Piece: i, Peer: peer, Sent: p.reqs[i][j].sent})
		p.release(i, j)
	}
	for i := range ps.bits.All() {
		p.addAvail(i, ps.origin, -1)
	}
	delete(p.peers, peer)
	return released
}

// Release drops the outstanding request of piece i to peer (the peer rejected it, the piece
// failed verification, or the caller cancelled it) and reports whether there was one.
func (p *Picker) Release(peer PeerID, i int) bool {
	if i < 0 || i >= p.n {
		return false
	}
	j := slices.IndexFunc(p.reqs[i], func(o outstanding) bool { return o.peer == peer })
	if j < 0 {
		return false
	}
	p.release(i, j)
	return true
}

// Received records that piece i, verified, came from peer from (use "" for a piece found
// locally, such as on resume). It releases every outstanding request of the piece and returns
// the other peers it was outstanding with, oldest request first: send each a cancel. For a
// piece already held it releases from's request and returns an error wrapping ErrAlreadyHave
// (the data was a wasted duplicate).
func (p *Picker) Received(from PeerID, i int) ([]PeerID, error) {
	if err := p.checkPiece("receive piece", i); err != nil {
		return nil, err
	}
	if p.have.Has(i) {
		p.Release(from, i)
		return nil, fmt.Errorf("receive piece %d from %q: %w", i, from, ErrAlreadyHave)
	}
	var cancel []PeerID
	for _, o := range p.reqs[i] {
		delete(p.peers[o.peer].pending, i)
		if o.peer != from {
			cancel = append(cancel, o.peer)
		}
	}
	if len(p.reqs[i]) > 0 {
		p.requested--
	}
	p.reqs[i] = nil
	p.have.Set(i)
	p.haveCount++
	return cancel, nil
}

// Timeout releases and returns, ordered by time sent then piece, every outstanding request
// whose age at now is at least d, so that the caller can re-request the pieces elsewhere (and
// count a strike against the slow peer).
func (p *Picker) Timeout(now time.Time, d time.Duration) []Request {
	var expired []Request
	for i := range p.reqs {
		for j := 0; j < len(p.reqs[i]); {
			o := p.reqs[i][j]
			if now.Sub(o.sent) < d {
				j++
				continue
			}
			expired = append(expired, Request{Piece: i, Peer: o.peer, Sent: o.sent})
			p.release(i, j)
		}
	}
	slices.SortStableFunc(expired, func(a, b Request) int { return a.Sent.Compare(b.Sent) })
	return expired
}

// Next chooses up to max pieces to request from peer now and records them as outstanding with
// the time from Config.Now. Eligible are the pieces peer has and this node lacks that have no
// outstanding request; in endgame also those with fewer than Config.EndgameDuplicates
// outstanding requests, none of them to peer. An origin (under OriginOnlyUnique) is offered
// only pieces no connected non-origin peer has. The result is ordered rarest first (for an
// origin: fewest non-origin holders first; in endgame: fewest outstanding requests first), ties
// in random order from Config.Rand. It returns nil for an unknown peer, max <= 0, or nothing
// eligible.
func (p *Picker) Next(peer PeerID, max int) []int {
	ps := p.peers[peer]
	if ps == nil || max <= 0 || p.Complete() {
		return nil
	}
	endgame := p.Endgame()
	asOrigin := ps.origin && p.policy != OriginAsPeer
	// key = outstanding requests × stride + holders, so fewer duplicates come first in endgame
	for p.low < p.n && p.have.Has(p.low) {
		p.low++
	}
	hi := p.n
	// Origins are asked across the whole blob: inside a window, nodes asking an origin at the
	// same time would more often pick the same piece, and the origin would send it twice.
	if p.window > 0 && !asOrigin {
		hi = min(p.n, p.low+p.window)
	}
	p.cand, p.keys = p.cand[:0], p.keys[:0]
	maxKey := p.candidates(ps, endgame, asOrigin, p.low, hi, 0)
	if len(p.cand) < max && hi < p.n {
		// the rest of the blob ranks after every piece of the window
		maxKey = p.candidates(ps, endgame, asOrigin, hi, p.n, maxKey+1)
	}
	picked := p.choose(min(max, len(p.cand)), maxKey)
	now := p.now()
	for _, i := range picked {
		if len(p.reqs[i]) == 0 {
			p.requested++
		}
		p.reqs[i] = append(p.reqs[i], outstanding{peer: peer, sent: now})
		ps.pending[i] = now
	}
	return picked
}

// candidates appends to p.cand and p.keys the pieces in [lo, hi) that Next may ask ps for, with
// their keys raised by off, and returns the largest key so far.
func (p *Picker) candidates(ps *peerState, endgame, asOrigin bool, lo, hi, off int) int {
	// key = outstanding requests × stride + holders, so fewer duplicates come first in endgame
	stride := len(p.peers) + 1
	maxKey := max(0, off-1)
	for i := ps.bits.NextNotIn(p.have, lo); i >= 0 && i < hi; i = ps.bits.NextNotIn(p.have, i+1) {
		r := len(p.reqs[i])
		if r > 0 && (!endgame || r >= p.maxDup || p.pendingWith(ps, i) || (asOrigin && p.askedOfOrigin(i))) {
			continue
		}
		holders := int(p.avail[i])
		if asOrigin {
			holders -= int(p.oavail[i])
			if holders > 0 && p.policy == OriginOnlyUnique {
				continue
			}
		}
		k := off + r*stride + holders
		if k > maxKey {
			maxKey = k
		}
		p.cand = append(p.cand, i)
		p.keys = append(p.keys, k)
	}
	return maxKey
}

// askedOfOrigin reports whether a request for piece i is outstanding with an origin. Endgame
// does not duplicate such a request to another origin: origins answer at once, so the second
// copy would almost always arrive too, wasted, and double the origins' egress for the piece (a
// one-piece blob fetched once from R origins came in R times). A slow origin's request is
// re-asked when it times out (Timeout), and peers may still duplicate it.
func (p *Picker) askedOfOrigin(i int) bool {
	for _, o := range p.reqs[i] {
		if ps := p.peers[o.peer]; ps != nil && ps.origin {
			return true
		}
	}
	return false
}

func (p *Picker) pendingWith(ps *peerState, i int) bool {
	_, ok := ps.pending[i]
	return ok
}

// choose returns take of p.cand with the smallest keys, smallest first, equal keys in random
// order. It runs in O(len(cand) + maxKey) and draws at most about take random numbers: only the
// groups that make the cut are shuffled, and from the group at the cut a random subset is drawn.
func (p *Picker) choose(take, maxKey int) []int {
	if take == 0 {
		return nil
	}
	p.counts = slices.Grow(p.counts[:0], maxKey+1)[:maxKey+1]
	clear(p.counts)
	for _, k := range p.keys {
		p.counts[k]++
	}
	// cut: the smallest key whose group completes take; below holds the candidates under it
	cut, below := 0, 0
	for ; below+p.counts[cut] < take; cut++ {
		below += p.counts[cut]
	}
	// counting sort of the groups under the cut into out[:below]; the cut group into tie
	out := make([]int, take)
	off := 0
	for k := range cut {
		c := p.counts[k]
		p.counts[k] = off
		off += c
	}
	p.tie = p.tie[:0]
	for j, i := range p.cand {
		switch k := p.keys[j]; {
		case k < cut:
			out[p.counts[k]] = i
			p.counts[k]++
		case k == cut:
			p.tie = append(p.tie, i)
		}
	}
	// after placement p.counts[k] is the end of group k; shuffle each group in place
	start := 0
	for k := range cut {
		g := out[start:p.counts[k]]
		p.rnd.Shuffle(len(g), func(a, b int) { g[a], g[b] = g[b], g[a] })
		start = p.counts[k]
	}
	for j := below; j < take; j++ {
		s := j - below + p.rnd.IntN(len(p.tie)-(j-below))
		p.tie[j-below], p.tie[s] = p.tie[s], p.tie[j-below]
		out[j] = p.tie[j-below]
	}
	return out
}
