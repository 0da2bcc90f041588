package tracker

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// TestSwarmOfManyMembers: a swarm of 15,000 peers is answered whole, in a document of a few
// megabytes (what docs/protocol.md promises, and well inside server/client's bound).
func TestSwarmOfManyMembers(t *testing.T) {
	t.Parallel()
	const n = 15000
	tbl := newPeerTable(time.Minute, DefaultMaxPeers, func(a, b announcer) bool { return a == b }, nil)
	now := time.Unix(1_700_000_000, 123456789).UTC()
	d := digest.FromString("many")
	for i := range n {
		addr := fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)
		req := announce.Request{Namespace: "library/app", Digest: d, PeerID: wire.RandomPeerID().String(),
			Addr: addr + ":16001", API: addr + ":16000", Have: i % 5000, Pieces: 5000, Complete: i%3 == 0}
		_, err := tbl.upsert(req, announcer{from: netip.MustParseAddr(addr)}, now)
		require.NoError(t, err)
	}
	sw, ok := tbl.swarm(d, now)
	require.True(t, ok)
	require.Len(t, sw.Members, n)
	require.Equal(t, n, sw.Seeders+sw.Leechers)
	b, err := json.Marshal(sw)
	require.NoError(t, err)
	t.Logf("a swarm of %d members is %d bytes", n, len(b))
	require.Less(t, len(b), 4<<20)
	require.Len(t, tbl.list(now, DefaultSwarmsLimit), 1)
}
