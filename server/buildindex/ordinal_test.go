package buildindex_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/tagstore"
)

// serviceDNS answers one name with fixed addresses: the build-index StatefulSet's headless
// Service.
type serviceDNS struct {
	name  string
	addrs []netip.Addr
}

func (s serviceDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if host != s.name {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return s.addrs, nil
}

// TestStatefulSetBootstrapsByOrdinal runs three build-index nodes with one config, as the pods
// of a StatefulSet: raft.bootstrap_ordinal, join through a dns:/// entry that lists every pod
// (itself included). Pod 0 bootstraps; pods 1 and 2 join it; all three end in one group.
func TestStatefulSetBootstrapsByOrdinal(t *testing.T) {
	t.Parallel()
	ips := []string{"127.0.0.21", "127.0.0.22", "127.0.0.23"}
	var lns []net.Listener
	var port int
	for attempt := 0; len(lns) < len(ips); attempt++ {
		require.Less(t, attempt, 20, "no port free on every address")
		for _, ln := range lns {
			_ = ln.Close()
		}
		first, err := net.Listen("tcp", ips[0]+":0")
		require.NoError(t, err)
		port = first.Addr().(*net.TCPAddr).Port
		lns = []net.Listener{first}
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
	}
	dns := serviceDNS{name: "bi.kraken.test"}
	for _, ip := range ips {
		dns.addrs = append(dns.addrs, netip.MustParseAddr(ip))
	}
	var wg sync.WaitGroup
	stops := map[int]func(){}
	t.Cleanup(func() {
		for _, stop := range stops {
			stop()
		}
		wg.Wait()
	})
	addrOf := func(i int) string { return net.JoinHostPort(ips[i], strconv.Itoa(port)) }
	// start runs pod i on its listener with state in dir.
	start := func(i int, ln net.Listener, dir string) {
		raftLn, err := net.Listen("tcp", ips[i]+":0")
		require.NoError(t, err)
		off := false
		cfg := buildindex.Config{
			Listen: addrOf(i), Advertise: addrOf(i), RaftListen: raftLn.Addr().String(), Dir: dir,
			VerifyContent: &off, DNSInterval: 20 * time.Millisecond,
			Join: []string{fmt.Sprintf("dns:///bi.kraken.test:%d", port)},
		}
		cfg.Raft.NodeID = fmt.Sprintf("bi-%d", i)
		cfg.Raft.BootstrapOrdinal = true
		clustertest.FastRaft(&cfg)
		host := fmt.Sprintf("krakenctl-build-index-%d", i)
		srv, err := buildindex.New(cfg, buildindex.Deps{
			Deps:         role.Deps{Listener: ln, Resolver: dns},
			RaftListener: raftLn,
			Hostname:     func() (string, error) { return host, nil },
		})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		wg.Go(func() { defer close(done); require.NoError(t, srv.Run(ctx)) })
		stops[i] = func() { cancel(); <-done }
	}
	// Start the joiners first: they must wait for pod 0, not race it.
	for _, i := range []int{2, 1, 0} {
		start(i, lns[i], t.TempDir())
	}

	hc := &http.Client{Timeout: 10 * time.Second}
	inGroupOfThree := func(what string) {
		for i := range ips {
			require.Eventually(t, func() bool {
				st, err := client.NewBuildIndex(addrOf(i), hc).ClusterStatus(t.Context())
				if err != nil || len(st.Members) != 3 || st.LeaderID == "" {
					return false
				}
				var ids []string
				for _, m := range st.Members {
					ids = append(ids, m.ID)
				}
				slices.Sort(ids)
				return slices.Equal(ids, []string{"bi-0", "bi-1", "bi-2"})
			}, 60*time.Second, 20*time.Millisecond, "%s: pod %d is in the one group of bi-0, bi-1, bi-2", what, i)
		}
	}
	inGroupOfThree("at the first start")

	// Pod 0 loses its volume. Its old member is removed, as docs/kubernetes.md says, and the
	// new pod 0, with no state, must join the living group, not bootstrap a second one.
	stops[0]()
	delete(stops, 0)
	require.Eventually(t, func() bool {
		// Pod 0 may have led: the others elect a new leader first.
		_, err := client.NewBuildIndex(addrOf(1), hc).Remove(t.Context(), "bi-0", true)
		return err == nil
	}, 60*time.Second, 50*time.Millisecond, "remove bi-0 through pod 1")
	ln, err := net.Listen("tcp", addrOf(0))
	require.NoError(t, err)
	start(0, ln, t.TempDir())
	inGroupOfThree("after pod 0 came back empty")
}

func TestBootstrapOrdinalBadInput(t *testing.T) {
	t.Parallel()
	newNode := func(host string, edit func(*buildindex.Config)) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		raftLn, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		off := false
		cfg := buildindex.Config{Listen: ln.Addr().String(), RaftListen: raftLn.Addr().String(), Dir: t.TempDir(), VerifyContent: &off}
		cfg.Raft.BootstrapOrdinal = true
		if edit != nil {
			edit(&cfg)
		}
		srv, err := buildindex.New(cfg, buildindex.Deps{
			Deps: role.Deps{Listener: ln}, RaftListener: raftLn,
			Hostname: func() (string, error) { return host, nil },
		})
		if err == nil {
			require.NoError(t, srv.Close())
		}
		return err
	}
	err := newNode("buildindex", nil)
	require.ErrorIs(t, err, tagstore.ErrNoOrdinal)
	require.ErrorContains(t, err, "raft.bootstrap_ordinal")
	require.ErrorContains(t, err, `"buildindex"`)

	require.ErrorContains(t, newNode("bi-2", nil), "join: required with raft.bootstrap_ordinal")
	require.NoError(t, newNode("bi-0", nil), "ordinal 0 needs no join")
	require.NoError(t, newNode("bi-1", func(c *buildindex.Config) { c.Join = []string{"127.0.0.1:1"} }))

	err = newNode("bi-0", func(c *buildindex.Config) { c.Raft.Bootstrap = true })
	require.ErrorContains(t, err, "bootstrap_ordinal: excludes bootstrap")
	err = newNode("bi-1", func(c *buildindex.Config) { c.Join = []string{"dns://bi:1"} })
	require.ErrorContains(t, err, "join[0]")
}

func TestOrdinal(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]int{"bi-0": 0, "krakenctl-build-index-12": 12, "a-b-3": 3} {
		n, err := tagstore.Ordinal(host)
		require.NoError(t, err, host)
		require.Equal(t, want, n, host)
	}
	for _, host := range []string{"", "bi", "bi-", "-1", "bi-01", "bi-x", "bi-+1", "bi-0.svc.local", "bi--1"} {
		_, err := tagstore.Ordinal(host)
		require.ErrorIs(t, err, tagstore.ErrNoOrdinal, host)
	}
}

// An empty pod 0 whose join list names a node that does not answer cannot tell whether a group
// exists: it must not bootstrap (two groups cannot be merged; a late join can happen).
func TestEmptyOrdinalZeroWithSilentPeerDoesNotBootstrap(t *testing.T) {
	restore := buildindex.SetGroupProbeWindow(300 * time.Millisecond)
	defer restore()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := dead.Addr().String()
	require.NoError(t, dead.Close())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	raftLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	off := false
	cfg := buildindex.Config{Listen: ln.Addr().String(), RaftListen: raftLn.Addr().String(), Dir: t.TempDir(), VerifyContent: &off,
		Join: []string{deadAddr}}
	cfg.Raft.NodeID = "bi-0"
	cfg.Raft.BootstrapOrdinal = true
	clustertest.FastRaft(&cfg)
	srv, err := buildindex.New(cfg, buildindex.Deps{
		Deps: role.Deps{Listener: ln}, RaftListener: raftLn,
		Hostname: func() (string, error) { return "krakenctl-build-index-0", nil },
	})
	require.NoError(t, err)
	require.Empty(t, srv.Status().Members, "pod 0 did not found a group while a join address was silent")
	require.NoError(t, srv.Close())
}
