package agent

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/role"
)

// serviceDNS answers names from a table the test changes.
type serviceDNS struct {
	mu    sync.Mutex
	names map[string][]netip.Addr
}

func (s *serviceDNS) set(name string, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names[name] = nil
	for _, a := range addrs {
		s.names[name] = append(s.names[name], netip.MustParseAddr(a))
	}
}

func (s *serviceDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.names[host]) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return slices.Clone(s.names[host]), nil
}

// TestAgentFollowsDNS: the agent's announce client and build-index client take a new DNS
// answer for trackers and build_index without a restart.
func TestAgentFollowsDNS(t *testing.T) {
	t.Parallel()
	dns := &serviceDNS{names: map[string][]netip.Addr{}}
	dns.set("tracker.test", "10.0.2.1")
	dns.set("bi.test", "10.0.1.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s, err := New(Config{
		Trackers:    []string{"dns:///tracker.test:16100"},
		BuildIndex:  []string{"dns:///bi.test:15100"},
		StoreDir:    t.TempDir(),
		DNSInterval: 10 * time.Millisecond, // the test waits on the outcome, not on time
	}, Deps{Deps: role.Deps{Listener: ln, Resolver: dns}, PeerListener: pln})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	d := digest.FromString("any")
	require.Equal(t, []string{"10.0.2.1:16100"}, s.trackers.Trackers(d))
	require.Equal(t, []string{"10.0.1.1:15100"}, s.ix.Addrs())

	dns.set("tracker.test", "10.0.2.1", "10.0.2.2")
	dns.set("bi.test", "10.0.1.2")
	require.Eventually(t, func() bool {
		tr := s.trackers.Trackers(d)
		slices.Sort(tr)
		return slices.Equal([]string{"10.0.2.1:16100", "10.0.2.2:16100"}, tr) &&
			slices.Equal([]string{"10.0.1.2:15100"}, s.ix.Addrs())
	}, 30*time.Second, 5*time.Millisecond)
}
