package scheduler

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// An origin counts the pieces it sent an agent as the agent's (the agent announces them to
// every peer but the origin), so the window it reveals from follows the agent's real lowest
// missing piece instead of the first piece it ever sent.
func TestSuperSeedFollowsPiecesItSent(t *testing.T) {
	t.Parallel()
	const pieces, window = 64, 8
	tr, conns := newSuperSeedConns(t, pieces, window, 0, 1, 1)
	c := conns[0]
	got := wire.NewBitfield(pieces) // what the agent holds: everything the origin sent it
	for step := 0; !got.Full(); step++ {
		require.Less(t, step, pieces, "the origin stopped revealing pieces")
		low := wire.NewFullBitfield(pieces).NextNotIn(got, 0)
		next := -1
		for i := range c.shown.All() {
			if got.Has(i) {
				continue
			}
			require.Less(t, i, low+window, "piece %d revealed outside the window after the agent's lowest missing piece %d", i, low)
			if next < 0 {
				next = i
			}
		}
		require.GreaterOrEqual(t, next, 0, "nothing revealed")
		// The agent fetches the lowest piece it was shown from the origin (so it announces it
		// to its other peers, not to the origin); the origin sends it in full.
		tr.mu.Unlock()
		tr.served(c, wire.Request{Piece: uint32(next), Length: uint32(metainfo.MinPieceLength)})
		tr.mu.Lock()
		got.Set(next)
		require.True(t, c.remote.Has(next))
		require.EqualValues(t, 1, tr.ss.avail[next], "piece %d: one agent has it", next)
	}
}

// newSuperSeedConns returns an origin torrent of pieces pieces (stripe of stripes) and n agent
// connections to it that hold nothing; the caller holds tr.mu from then on.
func newSuperSeedConns(t *testing.T, pieces, window, stripe, stripes, n int) (*torrent, []*conn) {
	t.Helper()
	st, err := castore.Open(t.TempDir(), castore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	s, err := New(Config{SeedOnly: true, Window: window}, Deps{Store: st, Listener: ln})
	require.NoError(t, err)
	mi := metainfo.MetaInfo{
		Digest: digest.FromString("blob"), Length: int64(pieces) * metainfo.MinPieceLength,
		PieceLength: metainfo.MinPieceLength, PieceSums: make([][32]byte, pieces),
	}
	tr := newSeedTorrent(s, mi, stripe, stripes)
	conns := make([]*conn, n)
	for k := range conns {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
		conns[k] = newConn(tr, a, wire.Handshake{PeerID: wire.RandomPeerID(), Bitfield: wire.NewBitfield(pieces)}, "agent", false, false)
	}
	tr.mu.Lock()
	t.Cleanup(tr.mu.Unlock)
	for _, c := range conns {
		tr.conns[c.id] = c
		tr.ssAdd(c)
	}
	return tr, conns
}

func shown(c *conn) []int { return slices.Collect(c.shown.All()) }

// An origin reveals the pieces no agent has lowest first, a different run of them to each
// agent: the swarm's frontier then moves through the blob in order, and with it every
// agent's verified prefix.
func TestSuperSeedRevealsInOrder(t *testing.T) {
	t.Parallel()
	tr, conns := newSuperSeedConns(t, 64, 16, 0, 1, 3)
	require.Equal(t, []int{0, 1, 2, 3}, shown(conns[0]))
	require.Equal(t, []int{4, 5, 6, 7}, shown(conns[1]))
	require.Equal(t, []int{8, 9, 10, 11}, shown(conns[2]))

	// The first agent fetches piece 2 from the origin: the origin shows it the next piece
	// nobody was shown yet.
	tr.mu.Unlock()
	tr.served(conns[0], wire.Request{Piece: 2, Length: uint32(metainfo.MinPieceLength)})
	tr.mu.Lock()
	require.Equal(t, []int{0, 1, 2, 3, 12}, shown(conns[0]))
}

// Origins serving one blob reveal their own stripe first, so they do not send the same
// pieces; once an agent's window holds nothing of its own stripe left to reveal, an origin
// reveals the others' pieces too (lowest first), covering for an origin that is down.
func TestSuperSeedStripes(t *testing.T) {
	t.Parallel()
	const window = 12
	tr, conns := newSuperSeedConns(t, 64, window, 1, 3, 1)
	c := conns[0]
	require.Equal(t, []int{1, 4, 7, 10}, shown(c), "origin 1 of 3 reveals pieces 1 mod 3, in order")

	// The agent gets what it was shown, but never piece 0 (its origin is down): its window
	// stays [0, 12), whose own pieces are all revealed, so piece 0 comes next, then 2.
	for _, i := range []int{1, 4, 7, 10} {
		tr.mu.Unlock()
		tr.served(c, wire.Request{Piece: uint32(i), Length: uint32(metainfo.MinPieceLength)})
		tr.mu.Lock()
	}
	require.Equal(t, []int{0, 1, 2, 3, 4, 5, 7, 10}, shown(c))

	// Another origin of the same blob, stripe 0 of 3, shows a fresh agent 0, 3, 6, 9: no
	// piece in common with what stripe 1 revealed first.
	_, others := newSuperSeedConns(t, 64, window, 0, 3, 1)
	require.Equal(t, []int{0, 3, 6, 9}, shown(others[0]))
}

// claimPiece records that c claims piece i, as onHave does; tr.mu held.
func claimPiece(tr *torrent, c *conn, i int) {
	c.remote.Set(i)
	tr.ssHave(c, i)
}

// lastChallenge is the request of c's newest challenge; it fails the test if there is none.
func lastChallenge(t *testing.T, c *conn) wire.Request {
	t.Helper()
	require.NotEmpty(t, c.challenges, "no challenge sent")
	return c.challenges[len(c.challenges)-1].r
}

// A peer's claims count only once it has answered a challenge (a request for a small block of
// a piece it claims and was not sent); a failed challenge demotes it (its claims stop
// counting, and it is challenged once more), a second one is the error that closes the
// connection. Pieces the origin sent count whatever the peer's standing.
func TestSuperSeedCountsOnlyProvedClaims(t *testing.T) {
	t.Parallel()
	const pieces = 64
	tr, conns := newSuperSeedConns(t, pieces, 16, 0, 1, 1)
	p := conns[0]
	tr.mu.Unlock()
	tr.served(p, wire.Request{Piece: 0, Length: uint32(metainfo.MinPieceLength)})
	tr.mu.Lock()
	require.EqualValues(t, 1, tr.ss.avail[0], "a piece the origin sent counts")

	claimPiece(tr, p, 40)
	require.Zero(t, tr.ss.avail[40], "an unproved claim counts")
	r := lastChallenge(t, p)
	require.EqualValues(t, 40, r.Piece, "the claim is challenged")
	require.LessOrEqual(t, int64(r.Offset)+int64(r.Length), int64(metainfo.MinPieceLength))
	require.EqualValues(t, challengeLength, r.Length)
	claimPiece(tr, p, 41)
	require.Len(t, p.challenges, 1, "one challenge at a time")
	require.Zero(t, tr.ss.avail[41])

	_, ok := p.takeChallenge(r)
	require.True(t, ok)
	tr.proveOK(p)
	require.EqualValues(t, 1, tr.ss.avail[40], "a proved peer's claims count")
	if p.challenging() {
		// 41 was claimed while 40's challenge waited, so the answer did not vouch for it: it
		// is challenged at the odds of any later claim (one in 16), and counts once answered.
		require.EqualValues(t, 41, lastChallenge(t, p).Piece)
		require.Zero(t, tr.ss.avail[41], "a claim the answer did not vouch for counts")
		_, ok := p.takeChallenge(lastChallenge(t, p))
		require.True(t, ok)
		tr.proveOK(p)
	}
	require.EqualValues(t, 1, tr.ss.avail[41])
	for i := 42; i < pieces; i++ {
		claimPiece(tr, p, i)
		if p.challenging() {
			require.Zero(t, tr.ss.avail[i], "a claim made while a challenge waits counts")
			_, ok := p.takeChallenge(lastChallenge(t, p))
			require.True(t, ok)
			tr.proveOK(p)
		}
		require.EqualValues(t, 1, tr.ss.avail[i])
	}

	// The peer claims piece 1 and, challenged on it, fails: demoted.
	p.challenges = nil
	tr.challenge(p, 1)
	claimPiece(tr, p, 1)
	_, ok = p.takeChallenge(lastChallenge(t, p))
	require.True(t, ok)
	demoted, err := tr.proveFailed(p, 1, "wrong bytes")
	require.True(t, demoted)
	require.NoError(t, err)
	for i := 1; i < pieces; i++ {
		require.Zero(t, tr.ss.avail[i], "piece %d: a demoted peer's claims count", i)
	}
	require.EqualValues(t, 1, tr.ss.avail[0], "what the origin sent still counts")
	require.True(t, p.challenging(), "a demoted peer is challenged once more")
	_, ok = p.takeChallenge(lastChallenge(t, p))
	require.True(t, ok)
	demoted, err = tr.proveFailed(p, 1, "no answer")
	require.False(t, demoted)
	require.ErrorIs(t, err, ErrFalseClaim)

	tr.ssRemove(p)
	require.Zero(t, tr.ss.avail[0], "a peer that leaves takes its pieces with it")
}

// An agent stuck (no progress for stuckAfter) gets pieces revealed that other peers have, as
// fast as it fetches them, for the whole stuck period: its have messages of pieces another
// origin sent it do not end the period. Before, only the housekeeping tick revealed them,
// revealAhead a second, and those have messages stopped even that (attack-findings.md §4).
func TestSuperSeedStuckAgentIsFedUntilTheEnd(t *testing.T) {
	t.Parallel()
	const pieces = 64
	tr, conns := newSuperSeedConns(t, pieces, 16, 0, 1, 2)
	now := time.Now()
	tr.s.now = func() time.Time { return now }
	hoarder, agent := conns[0], conns[1]
	// The hoarder proves its claims to every piece but reveals nothing.
	hoarder.remote = wire.NewFullBitfield(pieces)
	hoarder.trust = proved
	tr.ssCount(hoarder)
	agent.shown = wire.NewBitfield(pieces)
	agent.showPending = 0
	tr.reveal(agent, false)
	require.Zero(t, agent.shown.Count(), "every piece is available elsewhere")

	now = now.Add(stuckAfter + time.Second)
	tr.mu.Unlock()
	tr.unstick(now)
	tr.mu.Lock()
	for agent.remote.Count() < pieces {
		var next int
		for next = range agent.shown.All() {
			if !agent.remote.Has(next) {
				break
			}
		}
		require.False(t, agent.remote.Has(next), "the stuck agent was shown nothing more")
		tr.mu.Unlock()
		tr.served(agent, wire.Request{Piece: uint32(next), Length: uint32(metainfo.MinPieceLength)})
		tr.mu.Lock()
		// Another origin sends it a piece too, which it announces here.
		if i := wire.NewFullBitfield(pieces).NextNotIn(agent.remote, 0); i >= 0 && !agent.shown.Has(i) {
			claimPiece(tr, agent, i)
		}
	}
}
