package scheduler

import (
	"net"
	"slices"
	"testing"

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
