package scheduler

import (
	"net"
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
	st, err := castore.Open(t.TempDir(), castore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	s, err := New(Config{SeedOnly: true, Window: window}, Deps{Store: st, Listener: ln})
	require.NoError(t, err)
	mi := metainfo.MetaInfo{
		Digest: digest.FromString("blob"), Length: pieces * metainfo.MinPieceLength,
		PieceLength: metainfo.MinPieceLength, PieceSums: make([][32]byte, pieces),
	}
	tr := newSeedTorrent(s, mi)
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	c := newConn(tr, a, wire.Handshake{PeerID: wire.RandomPeerID(), Bitfield: wire.NewBitfield(pieces)}, "agent", false, false)

	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.conns[c.id] = c
	tr.ssAdd(c)
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
