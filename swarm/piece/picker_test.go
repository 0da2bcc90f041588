package piece_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/piece"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// clock is a manual clock for Config.Now.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func newPicker(t testing.TB, cfg piece.Config, seed uint64) *piece.Picker {
	t.Helper()
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return t0 }
	}
	p, err := piece.New(cfg)
	require.NoError(t, err)
	return p
}

func bitfield(n int, set ...int) *wire.Bitfield {
	b := wire.NewBitfield(n)
	for _, i := range set {
		b.Set(i)
	}
	return b
}

func addPeer(t testing.TB, p *piece.Picker, id piece.PeerID, origin bool, bits *wire.Bitfield) {
	t.Helper()
	require.NoError(t, p.AddPeer(id, origin))
	_, err := p.PeerBitfield(id, bits)
	require.NoError(t, err)
}

func sorted(s []int) []int {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, cfg := range []piece.Config{
		{Pieces: -1},
		{Pieces: wire.MaxPieces + 1},
		{Pieces: 4, EndgameDuplicates: -1},
		{Pieces: 4, OriginPolicy: piece.OriginAsPeer + 1},
		{Pieces: 4, OriginPolicy: -1},
	} {
		_, err := piece.New(cfg)
		require.ErrorIs(t, err, piece.ErrInvalidConfig, "%+v", cfg)
	}
	p, err := piece.New(piece.Config{})
	require.NoError(t, err)
	require.True(t, p.Complete(), "a blob of zero pieces is complete")
	require.NoError(t, p.AddPeer("a", false))
	require.Nil(t, p.Next("a", 4))
}

func TestNextRarestFirst(t *testing.T) {
	t.Parallel()
	p := newPicker(t, piece.Config{Pieces: 8}, 1)
	addPeer(t, p, "a", false, wire.NewFullBitfield(8))
	addPeer(t, p, "b", false, bitfield(8, 0, 1, 2, 3))
	addPeer(t, p, "c", false, bitfield(8, 0, 1))
	require.Equal(t, 3, p.Availability(0))
	require.Equal(t, 2, p.Availability(2))
	require.Equal(t, 1, p.Availability(7))

	got := p.Next("a", 8)
	require.Len(t, got, 8)
	require.Equal(t, []int{4, 5, 6, 7}, sorted(got[:4]), "held by one peer: first")
	require.Equal(t, []int{2, 3}, sorted(got[4:6]))
	require.Equal(t, []int{0, 1}, sorted(got[6:]))
	require.True(t, p.Endgame(), "every missing piece is requested")
	require.Equal(t, []int{0, 1, 2, 3}, sorted(p.Next("b", 8)), "endgame: b duplicates what it has")
}

func TestNextOnlyOffersWhatPeerHasAndWeLack(t *testing.T) {
	t.Parallel()
	p := newPicker(t, piece.Config{Pieces: 10}, 2)
	addPeer(t, p, "a", false, bitfield(10, 1, 3, 5, 7))
	_, err := p.Received("", 3)
	require.NoError(t, err)
	require.Equal(t, []int{1, 5, 7}, sorted(p.Next("a", 10)))
	require.Nil(t, p.Next("a", 10))
	require.Nil(t, p.Next("nobody", 10))
	require.Nil(t, p.Next("a", 0))
	require.Equal(t, []int{1, 5, 7}, p.Outstanding("a"))
}

func TestNextTiesAreRandomButReproducible(t *testing.T) {
	t.Parallel()
	const pieces = 64
	first := map[int]bool{}
	for seed := range uint64(200) {
		p := newPicker(t, piece.Config{Pieces: pieces}, seed)
		addPeer(t, p, "o", true, wire.NewFullBitfield(pieces))
		got := p.Next("o", 4)
		first[got[0]] = true

		q := newPicker(t, piece.Config{Pieces: pieces}, seed)
		addPeer(t, q, "o", true, wire.NewFullBitfield(pieces))
		require.Equal(t, got, q.Next("o", 4), "same seed, same choice")
	}
	require.Greater(t, len(first), pieces/2, "first picks spread over the pieces")
}

// TestNoHerding is the Kraken failure: N nodes start together on a fresh blob that only the
// origin has, and each asks the origin for its first pieces. With a deterministic tie-break
// (modelled by giving every node the same seed) they all ask for the same pieces; with random
// tie-breaks the requests spread, so the nodes soon have different pieces to trade.
func TestNoHerding(t *testing.T) {
	t.Parallel()
	const (
		pieces = 512
		nodes  = 16
		window = 4
		runs   = 100
	)
	collisions := func(seedOf func(run, node int) uint64) float64 {
		total := 0
		for run := range runs {
			asked := map[int]int{}
			for node := range nodes {
				p := newPicker(t, piece.Config{Pieces: pieces}, seedOf(run, node))
				addPeer(t, p, "origin", true, wire.NewFullBitfield(pieces))
				for i := range nodes - 1 {
					require.NoError(t, p.AddPeer(piece.PeerID(rune('a'+i)), false))
				}
				for _, i := range p.Next("origin", window) {
					asked[i]++
				}
			}
			total += nodes*window - len(asked) // requests beyond the first for a piece
		}
		return float64(total) / runs
	}
	random := collisions(func(run, node int) uint64 { return uint64(run*nodes + node) })
	herd := collisions(func(run, _ int) uint64 { return uint64(run) })
	t.Logf("redundant origin requests per start: random tie-break %.2f, deterministic %.2f (of %d)", random, herd, nodes*window)
	require.Equal(t, float64(nodes*window-window), herd, "deterministic tie-break: all ask for the same pieces")
	// Expected for uniform choice is about (64·63/2)/512 ≈ 3.9; allow generous slack.
	require.Less(t, random, 8.0)
}

func TestOriginOnlyUnique(t *testing.T) {
	t.Parallel()
	p := newPicker(t, piece.Config{Pieces: 8}, 3)
	addPeer(t, p, "origin", true, wire.NewFullBitfield(8))
	addPeer(t, p, "b", false, bitfield(8, 0, 1))
	got := p.Next("origin", 8)
	require.Equal(t, []int{2, 3, 4, 5, 6, 7}, sorted(got), "the origin is not asked for what b can serve")
	require.Equal(t, []int{0, 1}, sorted(p.Next("b", 8)))

	// a peer announcing a piece withdraws the origin's request for it
	p2 := newPicker(t, piece.Config{Pieces: 4}, 3)
	addPeer(t, p2, "origin", true, wire.NewFullBitfield(4))
	addPeer(t, p2, "b", false, wire.NewBitfield(4))
	require.Len(t, p2.Next("origin", 4), 4)
	withdrawn, err := p2.PeerHas("b", 2)
	require.NoError(t, err)
	require.Equal(t, []piece.Request{{Piece: 2, Peer: "origin", Sent: t0}}, withdrawn)
	require.Equal(t, []int{0, 1, 3}, p2.Outstanding("origin"))
	require.Equal(t, []int{2}, p2.Next("b", 4))

	withdrawn, err = p2.PeerBitfield("b", bitfield(4, 0, 1, 2))
	require.NoError(t, err)
	require.Equal(t, []piece.Request{{Piece: 0, Peer: "origin", Sent: t0}, {Piece: 1, Peer: "origin", Sent: t0}}, withdrawn)
	require.Equal(t, []int{3}, p2.Outstanding("origin"))

	// an origin announcing a piece withdraws nothing
	addPeer(t, p2, "origin2", true, wire.NewBitfield(4))
	withdrawn, err = p2.PeerHas("origin2", 3)
	require.NoError(t, err)
	require.Empty(t, withdrawn)
	// and when b goes, the origin is eligible for its pieces again
	p2.PeerGone("b")
	require.ElementsMatch(t, []int{0, 1, 2}, p2.Next("origin", 4))
}

func TestOriginPreferUnique(t *testing.T) {
	t.Parallel()
	p := newPicker(t, piece.Config{Pieces: 8, OriginPolicy: piece.OriginPreferUnique}, 4)
	addPeer(t, p, "origin", true, wire.NewFullBitfield(8))
	addPeer(t, p, "b", false, bitfield(8, 0, 1, 2))
	addPeer(t, p, "c", false, bitfield(8, 0))
	got := p.Next("origin", 8)
	require.Equal(t, []int{3, 4, 5, 6, 7}, sorted(got[:5]))
	require.Equal(t, []int{1, 2}, sorted(got[5:7]))
	require.Equal(t, []int{0}, got[7:])
	withdrawn, err := p.PeerHas("c", 5)
	require.NoError(t, err)
	require.Empty(t, withdrawn, "PreferUnique never withdraws")
}

func TestOriginAsPeer(t *testing.T) {
	t.Parallel()
	p := newPicker(t, piece.Config{Pieces: 4, OriginPolicy: piece.OriginAsPeer}, 5)
	addPeer(t, p, "origin", true, wire.NewFullBitfield(4))
	addPeer(t, p, "b", false, bitfield(4, 0, 1, 2))
	require.Equal(t, []int{3}, p.Next("origin", 1), "rarest counts the origin like anyone")
	require.Len(t, p.Next("origin", 4), 3)
	withdrawn, err := p.PeerHas("b", 3)
	require.NoError(t, err)
	require.Empty(t, withdrawn)
}

func TestNoDuplicatesOutsideEndgame(t *testing.T) {
	t.Parallel()
	const pieces = 300
	for seed := range uint64(20) {
		rnd := rand.New(rand.NewPCG(seed, 99))
		p := newPicker(t, piece.Config{Pieces: pieces, EndgameDuplicates: 3}, seed)
		peers := []piece.PeerID{"a", "b", "c", "d", "e"}
		for _, id := range peers {
			b := wire.NewBitfield(pieces)
			for i := range pieces {
				if rnd.IntN(3) > 0 {
					b.Set(i)
				}
			}
			addPeer(t, p, id, false, b)
		}
		for !p.Endgame() && !p.Complete() {
			id := peers[rnd.IntN(len(peers))]
			wasEndgame := p.Endgame()
			got := p.Next(id, 1+rnd.IntN(8))
			for _, i := range got {
				if !wasEndgame {
					require.Equal(t, []piece.PeerID{id}, p.Requesters(i), "piece %d asked twice outside endgame", i)
				}
			}
			// receive some outstanding pieces
			if out := p.Outstanding(id); len(out) > 0 && rnd.IntN(2) == 0 {
				cancel, err := p.Received(id, out[0])
				require.NoError(t, err)
				require.Empty(t, cancel)
			}
			if len(got) == 0 && !p.Endgame() {
				// nothing left for this peer; others may still have pieces to offer
				if allEmpty(p, peers) {
					break
				}
			}
		}
	}
}

func allEmpty(p *piece.Picker, peers []piece.PeerID) bool {
	for _, id := range peers {
		if got := p.Next(id, 1); len(got) > 0 {
			p.Release(id, got[0])
			return false
		}
	}
	return true
}

func TestEndgame(t *testing.T) {
	t.Parallel()
	p := newPicker(t, piece.Config{Pieces: 4}, 6)
	for _, id := range []piece.PeerID{"a", "b", "c"} {
		addPeer(t, p, id, false, wire.NewFullBitfield(4))
	}
	require.False(t, p.Endgame())
	require.Len(t, p.Next("a", 3), 3)
	require.False(t, p.Endgame())
	require.Len(t, p.Next("b", 4), 1, "one piece left, no duplicates before endgame")
	require.True(t, p.Endgame())

	require.Len(t, p.Next("a", 4), 1, "endgame: a may duplicate only b's piece, not its own")
	dupB := p.Next("b", 4)
	require.Len(t, dupB, 3, "b duplicates a's three remaining single requests")
	require.Nil(t, p.Next("c", 4), "the bound of 2 outstanding requests per piece holds")
	for i := range 4 {
		require.Len(t, p.Requesters(i), 2)
	}

	cancel, err := p.Received("b", dupB[0])
	require.NoError(t, err)
	require.Equal(t, []piece.PeerID{"a"}, cancel, "the other requester gets a cancel")
	require.Empty(t, p.Requesters(dupB[0]))
	require.NotContains(t, p.Outstanding("a"), dupB[0])
	_, err = p.Received("a", dupB[0])
	require.ErrorIs(t, err, piece.ErrAlreadyHave)
	require.Equal(t, 3, p.Missing())
	require.True(t, p.Endgame())

	// with a larger bound, endgame prefers the pieces with fewer outstanding requests
	q := newPicker(t, piece.Config{Pieces: 4, EndgameDuplicates: 3}, 7)
	for _, id := range []piece.PeerID{"a", "b", "c"} {
		addPeer(t, q, id, false, wire.NewFullBitfield(4))
	}
	q.Next("a", 4)
	two := q.Next("b", 2)
	got := q.Next("c", 4)
	require.Len(t, got, 4)
	require.NotContains(t, got[:2], two[0])
	require.NotContains(t, got[:2], two[1])

	// EndgameDuplicates 1 disables duplication
	r := newPicker(t, piece.Config{Pieces: 2, EndgameDuplicates: 1}, 8)
	addPeer(t, r, "a", false, wire.NewFullBitfield(2))
	addPeer(t, r, "b", false, wire.NewFullBitfield(2))
	r.Next("a", 2)
	require.True(t, r.Endgame())
	require.Nil(t, r.Next("b", 2))
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	p := newPicker(t, piece.Config{Pieces: 6, Now: c.Now}, 9)
	addPeer(t, p, "a", false, wire.NewFullBitfield(6))
	addPeer(t, p, "b", false, wire.NewFullBitfield(6))
	old := p.Next("a", 2)
	c.now = t0.Add(5 * time.Second)
	recent := p.Next("b", 2)

	require.Empty(t, p.Timeout(t0.Add(9*time.Second), 10*time.Second))
	expired := p.Timeout(t0.Add(10*time.Second), 10*time.Second)
	require.Len(t, expired, 2)
	slices.Sort(old)
	for j, r := range expired {
		require.Equal(t, piece.Request{Piece: old[j], Peer: "a", Sent: t0}, r)
	}
	require.Empty(t, p.Outstanding("a"))
	require.ElementsMatch(t, recent, p.Outstanding("b"))
	require.Empty(t, p.Timeout(t0.Add(10*time.Second), 10*time.Second), "released once")

	// the timed-out pieces are eligible again, for b
	var rest []int
	for i := range 6 {
		if !slices.Contains(recent, i) {
			rest = append(rest, i)
		}
	}
	require.Equal(t, rest, sorted(p.Next("b", 6)))
	require.Len(t, p.Timeout(t0.Add(time.Hour), time.Second), 6)
	require.False(t, p.Endgame())
}

func TestPeerGone(t *testing.T) {
	t.Parallel()
	p := newPicker(t, piece.Config{Pieces: 5}, 10)
	addPeer(t, p, "a", false, bitfield(5, 0, 1, 2))
	addPeer(t, p, "b", false, bitfield(5, 0, 3))
	got := p.Next("a", 2)
	require.Len(t, got, 2)
	require.Equal(t, 2, p.Availability(0))

	released := p.PeerGone("a")
	require.Len(t, released, 2)
	for j, i := range sorted(got) {
		require.Equal(t, piece.Request{Piece: i, Peer: "a", Sent: t0}, released[j])
	}
	require.Equal(t, 1, p.Availability(0))
	require.Equal(t, 0, p.Availability(1))
	require.Nil(t, p.Outstanding("a"))
	require.Nil(t, p.PeerGone("a"), "unknown peers are ignored")
	_, err := p.PeerHas("a", 1)
	require.ErrorIs(t, err, piece.ErrUnknownPeer)
	require.ElementsMatch(t, []int{0, 3}, p.Next("b", 5))

	// the id can come back as a new connection
	addPeer(t, p, "a", false, bitfield(5, 4))
	require.Equal(t, []int{4}, p.Next("a", 5))
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	p := newPicker(t, piece.Config{Pieces: 5}, 11)
	require.NoError(t, p.AddPeer("a", false))
	require.ErrorIs(t, p.AddPeer("a", true), piece.ErrPeerExists)
	_, err := p.PeerHas("a", 5)
	require.ErrorIs(t, err, piece.ErrOutOfRange)
	_, err = p.PeerHas("a", -1)
	require.ErrorIs(t, err, piece.ErrOutOfRange)
	_, err = p.PeerBitfield("a", wire.NewBitfield(6))
	require.ErrorIs(t, err, piece.ErrBadBitfield)
	_, err = p.PeerBitfield("a", nil)
	require.ErrorIs(t, err, piece.ErrBadBitfield)
	_, err = p.PeerBitfield("x", wire.NewBitfield(5))
	require.ErrorIs(t, err, piece.ErrUnknownPeer)
	_, err = p.Received("a", 7)
	require.ErrorIs(t, err, piece.ErrOutOfRange)
	require.False(t, p.Release("a", 9))
	require.False(t, p.Release("a", 1))
	require.Equal(t, 0, p.Availability(0), "rejected input changed nothing")
	require.Equal(t, 5, p.Missing())

	// the bitfield given is copied, and replacing it moves availability
	b := bitfield(5, 0, 1)
	_, err = p.PeerBitfield("a", b)
	require.NoError(t, err)
	b.Set(2)
	require.Equal(t, 0, p.Availability(2))
	_, err = p.PeerBitfield("a", bitfield(5, 1, 4))
	require.NoError(t, err)
	require.Equal(t, []int{0, 1, 0, 0, 1}, []int{p.Availability(0), p.Availability(1), p.Availability(2), p.Availability(3), p.Availability(4)})
	_, err = p.PeerHas("a", 4) // repeated have is harmless
	require.NoError(t, err)
	require.Equal(t, 1, p.Availability(4))
}

func TestReceivedResumeAndComplete(t *testing.T) {
	t.Parallel()
	p := newPicker(t, piece.Config{Pieces: 3}, 12)
	for i := range 3 {
		cancel, err := p.Received("", i)
		require.NoError(t, err)
		require.Empty(t, cancel)
	}
	require.True(t, p.Complete())
	require.False(t, p.Endgame())
	require.True(t, p.Have().Full())
	require.True(t, p.Has(2))
	require.False(t, p.Has(3))
	addPeer(t, p, "a", false, wire.NewFullBitfield(3))
	require.Nil(t, p.Next("a", 3))
}

// With a window, requests stay among the first missing pieces while any of them is eligible,
// and spill over only when none is; the choice inside the window is still random.
func TestWindowKeepsRequestsNearThePrefix(t *testing.T) {
	p, err := piece.New(piece.Config{Pieces: 100, Window: 10, Rand: rand.New(rand.NewPCG(1, 2))})
	require.NoError(t, err)
	require.NoError(t, p.AddPeer("a", false))
	_, err = p.PeerBitfield("a", wire.NewFullBitfield(100))
	require.NoError(t, err)
	got := p.Next("a", 5)
	require.Len(t, got, 5)
	for _, i := range got {
		require.Less(t, i, 10, "piece %d is outside the window", i)
	}
	rest := p.Next("a", 20)
	require.Len(t, rest, 20)
	inWindow := 0
	for _, i := range rest {
		if i < 10 {
			inWindow++
		}
	}
	require.Equal(t, 5, inWindow, "the rest of the window comes first, the spill-over fills the request")
	// Receiving the first pieces slides the window.
	for i := range 10 {
		if p.Has(i) {
			continue
		}
		_, err := p.Received("a", i)
		require.NoError(t, err)
	}
	for _, i := range p.Next("a", 5) {
		require.GreaterOrEqual(t, i, 10)
		require.Less(t, i, 20+15, "requests follow the slid window (pieces 10..19 plus earlier spill-over)")
	}
	_, err = piece.New(piece.Config{Pieces: 1, Window: -1})
	require.ErrorIs(t, err, piece.ErrInvalidConfig)
}

// Endgame never asks a second origin for a piece an origin is already sending: that copy would
// arrive too, wasted (a one-piece blob fetched from three origins came in twice). Peers may still
// duplicate it, and with OriginAsPeer origins are peers like any other.
func TestEndgameDoesNotDuplicateAcrossOrigins(t *testing.T) {
	t.Parallel()
	p := newPicker(t, piece.Config{Pieces: 1}, 10)
	addPeer(t, p, "o1", true, wire.NewFullBitfield(1))
	addPeer(t, p, "o2", true, wire.NewFullBitfield(1))
	require.Equal(t, []int{0}, p.Next("o1", 4))
	require.True(t, p.Endgame())
	require.Nil(t, p.Next("o2", 4), "o1 is sending piece 0; o2 would send it again")
	addPeer(t, p, "peer", false, wire.NewFullBitfield(1))
	require.Equal(t, []int{0}, p.Next("peer", 4), "a peer may still duplicate the origin's request")

	q := newPicker(t, piece.Config{Pieces: 1, OriginPolicy: piece.OriginAsPeer}, 11)
	addPeer(t, q, "o1", true, wire.NewFullBitfield(1))
	addPeer(t, q, "o2", true, wire.NewFullBitfield(1))
	require.Equal(t, []int{0}, q.Next("o1", 4))
	require.Equal(t, []int{0}, q.Next("o2", 4), "OriginAsPeer: origins duplicate like peers")

	// once the origin's request expires it may go to the other origin
	c := &clock{now: t0}
	r := newPicker(t, piece.Config{Pieces: 1, Now: c.Now}, 12)
	addPeer(t, r, "o1", true, wire.NewFullBitfield(1))
	addPeer(t, r, "o2", true, wire.NewFullBitfield(1))
	require.Equal(t, []int{0}, r.Next("o1", 4))
	c.now = t0.Add(time.Minute)
	require.Len(t, r.Timeout(c.now, time.Second), 1)
	require.Equal(t, []int{0}, r.Next("o2", 4))
}
