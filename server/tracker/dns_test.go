package tracker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/server/tracker"
)

// headless is a fake DNS: one name, the addresses the test sets, like a headless Service
// whose pods come and go.
type headless struct {
	mu    sync.Mutex
	name  string
	addrs []netip.Addr
}

func (h *headless) set(addrs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addrs = nil
	for _, a := range addrs {
		h.addrs = append(h.addrs, netip.MustParseAddr(a))
	}
}

func (h *headless) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if host != h.name || len(h.addrs) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return slices.Clone(h.addrs), nil
}

// listenSamePort listens on port 0 of the first IP, then on that port of the others: a DNS
// entry names one port for every address.
func listenSamePort(t *testing.T, ips ...string) ([]net.Listener, int) {
	t.Helper()
	for range 20 {
		first, err := net.Listen("tcp", ips[0]+":0")
		require.NoError(t, err)
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(ips) {
			return lns, port
		}
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	t.Fatal("no port free on every address")
	return nil, 0
}

func gauge(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := []string{}
			for _, lp := range m.GetLabel() {
				got = append(got, lp.GetName(), lp.GetValue())
			}
			if slices.Equal(got, labels) {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// TestOriginsByDNSGrowFromTwoToThree: origins, their ring and a tracker all find the origins
// through one dns:/// entry. When the headless Service grows from two origins to three, every
// origin's ring has three members, a blob the third origin now owns is repaired onto it, and
// the tracker reads the third origin's swarm identity.
func TestOriginsByDNSGrowFromTwoToThree(t *testing.T) {
	t.Parallel()
	ips := []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}
	dns := &headless{name: "origin.kraken.test"}
	dns.set(ips[0], ips[1])
	lns, port := listenSamePort(t, ips...)
	entry := fmt.Sprintf("dns:///origin.kraken.test:%d", port)
	const interval = 20 * time.Millisecond // the loops poll the fake; the test waits on outcomes

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	var addrs []string
	for i, ip := range ips {
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		addrs = append(addrs, addr)
		peerLn, err := net.Listen("tcp", ip+":0")
		require.NoError(t, err)
		srv, err := origin.New(origin.Config{
			Listen: addr, Advertise: addr,
			Store:       origin.StoreConfig{Dir: t.TempDir()},
			Ring:        ring.Config{Members: []string{entry}, Replicas: 2, HealthInterval: time.Second, HealthTimeout: time.Second},
			Peer:        origin.PeerConfig{Listen: peerLn.Addr().String()},
			DNSInterval: interval,
		}, origin.Deps{Deps: role.Deps{Listener: lns[i], Resolver: dns}, PeerListener: peerLn})
		require.NoError(t, err)
		wg.Go(func() { require.NoError(t, srv.Run(ctx)) })
	}

	trLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	tr, err := tracker.New(tracker.Config{
		Origins: []string{entry}, Replicas: 2, DNSInterval: interval,
		Announce: tracker.AnnounceConfig{AllowLoopback: true},
	}, tracker.Deps{Deps: role.Deps{Listener: trLn, Resolver: dns, Registerer: reg}})
	require.NoError(t, err)
	wg.Go(func() { require.NoError(t, tr.Run(ctx)) })

	hc := &http.Client{Timeout: time.Minute}
	ringMembers := func(addr string) []string {
		st, err := client.NewOrigin(addr, hc).Ring(t.Context(), "")
		if err != nil {
			return nil
		}
		var out []string
		for _, m := range st.Members {
			out = append(out, m.Addr)
		}
		return out
	}
	// Before: the first two see each other; the third, not listed yet, sees them and itself.
	require.Equal(t, addrs[:2], ringMembers(addrs[0]))
	require.Equal(t, addrs, ringMembers(addrs[2]))
	require.Eventually(t, func() bool {
		return gauge(t, reg, "krakenctl_tracker_origins_reachable") == 2
	}, 30*time.Second, 10*time.Millisecond, "the tracker reads the two listed origins")

	// A blob that the third origin will own once it is listed, pushed while it is not.
	var data []byte
	var d digest.Digest
	for {
		data = make([]byte, 64<<10)
		_, _ = rand.Read(data)
		d = digest.FromBytes(data)
		if slices.Contains(ring.Rank(d.String(), addrs)[:2], addrs[2]) {
			break
		}
	}
	require.NoError(t, client.NewOrigin(addrs[0], hc).Upload(t.Context(), "dns/grow", d, bytes.NewReader(data), int64(len(data))))

	dns.set(ips...)
	for _, a := range addrs {
		require.Eventually(t, func() bool { return slices.Equal(addrs, ringMembers(a)) },
			30*time.Second, 10*time.Millisecond, "%s's ring follows DNS to three members", a)
	}
	require.Eventually(t, func() bool {
		size, err := client.NewOrigin(addrs[2], hc).StatLocal(t.Context(), "dns/grow", d)
		return err == nil && size == int64(len(data))
	}, 30*time.Second, 10*time.Millisecond, "repair copies the blob to its new owner")
	require.Eventually(t, func() bool {
		return gauge(t, reg, "krakenctl_tracker_origins_reachable") == 3
	}, 30*time.Second, 10*time.Millisecond, "the tracker follows DNS to the third origin")
	require.InDelta(t, 3, gauge(t, reg, "krakenctl_members_addresses", "list", "origins"), 0)

	// The Service shrinks back: the departed origin leaves every other ring and the tracker.
	dns.set(ips[0], ips[1])
	for _, a := range addrs[:2] {
		require.Eventually(t, func() bool { return slices.Equal(addrs[:2], ringMembers(a)) },
			30*time.Second, 10*time.Millisecond, "%s's ring drops the departed origin", a)
	}
	require.Eventually(t, func() bool {
		return gauge(t, reg, "krakenctl_tracker_origins_reachable") == 2
	}, 30*time.Second, 10*time.Millisecond, "the tracker forgets the departed origin")
}

// TestNotReadyUntilOriginsResolve: a tracker whose origins' DNS name has no address yet starts
// (a pod before the origins' Service lists anyone), answers /readyz 503 rather than hand out
// swarms without origins, and is ready once the name resolves.
func TestNotReadyUntilOriginsResolve(t *testing.T) {
	t.Parallel()
	dns := &headless{name: "origin.kraken.test"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tr, err := tracker.New(tracker.Config{
		Origins: []string{"dns:///origin.kraken.test:15000"}, Replicas: 2, DNSInterval: 20 * time.Millisecond,
		Announce: tracker.AnnounceConfig{AllowLoopback: true},
	}, tracker.Deps{Deps: role.Deps{Listener: ln, Resolver: dns}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	readyz := func() int {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ln.Addr().String()+"/readyz", nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	// The first round (over no origin) is done at once; readiness must still say no.
	time.Sleep(200 * time.Millisecond)
	require.Equal(t, http.StatusServiceUnavailable, readyz())
	dns.set("127.0.0.21")
	require.Eventually(t, func() bool { return readyz() == http.StatusOK }, 30*time.Second, 20*time.Millisecond)
}
