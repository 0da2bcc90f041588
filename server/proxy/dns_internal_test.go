package proxy

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring/ringtest"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
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

// startDNSProxy runs a proxy whose origins and build-index nodes are the DNS names
// origin.test and bi.test, answered by dns.
func startDNSProxy(t *testing.T, dns *serviceDNS) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s, err := New(Config{
		Origins:     []string{"dns:///origin.test:15000"},
		BuildIndex:  []string{"dns:///bi.test:15100"},
		DNSInterval: 10 * time.Millisecond, // the test waits on the outcome, not on time
	}, Deps{Deps: role.Deps{Listener: ln, Resolver: dns}, Checker: &ringtest.Checker{}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return s
}

// TestProxyFollowsDNS: the proxy's ring, its seeder's origin client and its build-index
// client take a new DNS answer without a restart.
func TestProxyFollowsDNS(t *testing.T) {
	t.Parallel()
	dns := &serviceDNS{names: map[string][]netip.Addr{}}
	dns.set("origin.test", "10.0.0.1", "10.0.0.2")
	dns.set("bi.test", "10.0.1.1")
	s := startDNSProxy(t, dns)
	members := func() []string {
		var out []string
		for _, m := range s.ring.Members() {
			out = append(out, m.Addr)
		}
		return out
	}
	require.Equal(t, []string{"10.0.0.1:15000", "10.0.0.2:15000"}, members())
	require.Equal(t, []string{"10.0.1.1:15100"}, s.reg.index.Addrs())

	dns.set("origin.test", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	dns.set("bi.test", "10.0.1.1", "10.0.1.2")
	want := []string{"10.0.0.1:15000", "10.0.0.2:15000", "10.0.0.3:15000"}
	require.Eventually(t, func() bool {
		return slices.Equal(want, members()) && slices.Equal(want, s.origins.Addrs()) &&
			slices.Equal([]string{"10.0.1.1:15100", "10.0.1.2:15100"}, s.reg.index.Addrs())
	}, 30*time.Second, 5*time.Millisecond)
	require.True(t, s.ring.IsMember("10.0.0.3:15000"), "upload sessions on the new origin are accepted")
}

// TestProxyStartsBeforeItsOriginsResolve: a proxy whose origins' and build-index's DNS names
// have no address yet starts (on Kubernetes it exited and was restarted twice per install), is
// not ready, answers that no origin is known (503, never "blob unknown"), and takes the
// addresses once they resolve.
func TestProxyStartsBeforeItsOriginsResolve(t *testing.T) {
	t.Parallel()
	dns := &serviceDNS{names: map[string][]netip.Addr{}}
	s := startDNSProxy(t, dns)
	require.Empty(t, s.ring.Members())
	require.Error(t, s.ready(t.Context()), "not ready without origins")
	_, err := s.reg.origins.stat(t.Context(), "team/app", digest.FromString("x"))
	var ec *errcode.Error
	require.ErrorAs(t, err, &ec)
	require.Equal(t, http.StatusServiceUnavailable, ec.Status, "no origin known is unavailable, not unknown")
	require.NotErrorIs(t, err, registry.ErrBlobUnknown)

	dns.set("origin.test", "10.0.0.1")
	dns.set("bi.test", "10.0.1.1")
	require.Eventually(t, func() bool {
		m := s.ring.Members()
		return len(m) == 1 && m[0].Addr == "10.0.0.1:15000" && slices.Equal([]string{"10.0.1.1:15100"}, s.reg.index.Addrs())
	}, 30*time.Second, 5*time.Millisecond)
}
