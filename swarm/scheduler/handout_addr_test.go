package scheduler_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// TestConnectDialsOnlyIPLiterals: whatever a Tracker hands out, the scheduler dials only IP
// literals of kinds a host can have. It never resolves a name and never dials an unspecified,
// link-local, broadcast or multicast address. The dialer here records every address it is
// asked for and dials only loopback IP literals, so nothing leaves the host if that breaks.
func TestConnectDialsOnlyIPLiterals(t *testing.T) {
	tr := announcetest.New()
	blob := randomBlob(t, 256<<10)
	_, d := startOrigin(t, tr, blob, scheduler.Config{})
	forbidden := []string{"localhost:1", "evil.example:80", "999.1.1.1:80", "0.0.0.0:1", "169.254.169.254:80", "255.255.255.255:1", "[ff02::1]:80"}
	for _, addr := range forbidden {
		tr.AddPeers(announce.Peer{ID: wire.RandomPeerID().String(), Addr: addr, Complete: true})
	}
	var mu sync.Mutex
	var dialed []string
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		mu.Unlock()
		if ap, err := netip.ParseAddrPort(addr); err != nil || !ap.Addr().IsLoopback() {
			return nil, errors.New("test dialer: not a loopback address")
		}
		return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
	}
	a := startNodeDeps(t, t.TempDir(), scheduler.Config{}, scheduler.Deps{Tracker: tr, Dial: dial})
	got, err := pull(t.Context(), a.s, d)
	require.NoError(t, err)
	require.Equal(t, blob, got)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, dialed, "the agent dialled the origin")
	for _, addr := range dialed {
		require.NotContains(t, forbidden, addr)
	}
}
