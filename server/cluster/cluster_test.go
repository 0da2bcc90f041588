package cluster_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, tagstoretest.IgnoreLeftovers()) }

func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp.StatusCode, string(body)
}

func randomBlob(t *testing.T, n int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b, digest.FromBytes(b)
}

var roles = []cluster.Role{cluster.Origin, cluster.BuildIndex, cluster.Tracker, cluster.Proxy, cluster.Agent}

// metricPrefix is the prefix of each role's own metrics.
var metricPrefix = map[cluster.Role]string{
	cluster.Origin: "krakenctl_origin_", cluster.BuildIndex: "krakenctl_buildindex_", cluster.Tracker: "krakenctl_tracker_",
	cluster.Proxy: "krakenctl_proxy_", cluster.Agent: "krakenctl_agent_",
}

// Every role of a whole cluster runs on its own loopback ports with an admin listener and a
// registry of its own, and the roles are wired to each other: a blob pushed to the origins is
// pulled through every agent from the swarm, and a tag on it resolves on the build-index.
func TestWholeCluster(t *testing.T) {
	t.Parallel()
	c := clustertest.Start(t, cluster.Spec{
		Origins: 2, BuildIndexes: 1, Proxies: 1, Agents: 2,
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{})
	hc := httpClient(t)

	want := map[cluster.Role]int{cluster.Origin: 2, cluster.BuildIndex: 1, cluster.Tracker: 1, cluster.Proxy: 1, cluster.Agent: 2}
	seen := map[string]bool{}
	for _, r := range roles {
		require.Equal(t, want[r], c.Len(r), r)
		require.Len(t, c.Addrs(r), want[r])
		require.Len(t, c.AdminAddrs(r), want[r])
		for i := range c.Len(r) {
			require.True(t, c.Running(r, i))
			addrs := []string{c.Addr(r, i), c.AdminAddr(r, i)}
			if p := c.PeerAddr(r, i); p != "" {
				addrs = append(addrs, p)
			}
			for _, a := range addrs {
				host, _, err := net.SplitHostPort(a)
				require.NoError(t, err)
				require.Equal(t, cluster.Host, host)
				require.False(t, seen[a], "%s is used twice", a)
				seen[a] = true
			}
			// The admin listener serves readiness and the role's own metrics, from its own
			// registry; the data API serves no metrics.
			code, _ := get(t, hc, "http://"+c.AdminAddr(r, i)+"/readyz")
			require.Equal(t, http.StatusOK, code, "%s %d", r, i)
			code, body := get(t, hc, "http://"+c.AdminAddr(r, i)+"/metrics")
			require.Equal(t, http.StatusOK, code)
			require.Contains(t, body, metricPrefix[r], "%s %d", r, i)
			for _, other := range roles {
				if other != r {
					require.NotContains(t, body, metricPrefix[other], "%s %d shows only its own metrics", r, i)
				}
			}
			code, _ = get(t, hc, "http://"+c.Addr(r, i)+"/metrics")
			require.Equal(t, http.StatusNotFound, code)
			mfs, err := c.Registry(r, i).Gather()
			require.NoError(t, err)
			require.NotEmpty(t, mfs)
		}
	}
	require.Equal(t, 2, c.Replicas())
	require.Equal(t, c.Addr(cluster.Agent, 1), c.Agent(1).Addr())
	require.Equal(t, c.Addr(cluster.Origin, 0), c.Origin(0).Addr())
	require.Equal(t, c.Addr(cluster.Proxy, 0), c.Proxy(0).Addr())
	require.Equal(t, c.Addr(cluster.Tracker, 0), c.Tracker(0).Addr())

	data, d := randomBlob(t, 1<<20+7)
	res, err := client.NewCluster(c.Addrs(cluster.Origin), hc).Push(t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	require.Len(t, res.Owners, 2)
	for _, a := range c.Addrs(cluster.Agent) {
		var got bytes.Buffer
		_, err := client.NewAgent(a, hc).Pull(t.Context(), "team/app", d, &got, nil)
		require.NoError(t, err, a)
		require.True(t, bytes.Equal(data, got.Bytes()), "agent %s", a)
	}
	bi := client.NewBuildIndex(c.Addr(cluster.BuildIndex, 0), hc)
	_, err = bi.PutTag(t.Context(), "team/app", "v1", digest.FromString("not on the origins"))
	require.Error(t, err, "the build-index checks content on the cluster's origins")
	_, err = bi.PutTag(t.Context(), "team/app", "v1", d)
	require.ErrorContains(t, err, "MANIFEST_INVALID", "a tag names a manifest, not a layer")
	idx := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	m := digest.FromBytes(idx)
	_, err = client.NewCluster(c.Addrs(cluster.Origin), hc).Push(t.Context(), "team/app", m, bytes.NewReader(idx), int64(len(idx)), client.UploadOptions{})
	require.NoError(t, err)
	_, err = bi.PutTag(t.Context(), "team/app", "v1", m)
	require.NoError(t, err)
	code, _ := get(t, hc, "http://"+c.Addr(cluster.Proxy, 0)+"/v2/")
	require.Equal(t, http.StatusOK, code)
}

// A stopped origin comes back on the same address and state, with a new registry.
func TestStopRestart(t *testing.T) {
	t.Parallel()
	c := clustertest.Start(t, cluster.Spec{Origins: 1}, cluster.Deps{})
	hc := httpClient(t)
	addr, admin, reg := c.Addr(cluster.Origin, 0), c.AdminAddr(cluster.Origin, 0), c.Registry(cluster.Origin, 0)
	data, d := randomBlob(t, 1000)
	o := client.NewOrigin(addr, hc)
	require.NoError(t, o.Upload(t.Context(), "ns", d, bytes.NewReader(data), int64(len(data))))

	require.NoError(t, c.Stop(cluster.Origin, 0))
	require.False(t, c.Running(cluster.Origin, 0))
	require.Error(t, o.Ready(t.Context()), "a stopped origin does not answer")
	require.NoError(t, c.Stop(cluster.Origin, 0), "stopping a stopped server does nothing")

	require.NoError(t, c.Restart(clustertest.Context(t), cluster.Origin, 0))
	require.ErrorIs(t, c.Restart(clustertest.Context(t), cluster.Origin, 0), cluster.ErrRunning)
	require.NoError(t, c.WaitReady(clustertest.Context(t)))
	require.True(t, c.Running(cluster.Origin, 0))
	require.Equal(t, addr, c.Addr(cluster.Origin, 0))
	require.Equal(t, admin, c.AdminAddr(cluster.Origin, 0))
	require.NotSame(t, reg, c.Registry(cluster.Origin, 0))
	size, err := o.StatLocal(t.Context(), "ns", d)
	require.NoError(t, err, "the restarted origin has its store back")
	require.EqualValues(t, len(data), size)
	code, _ := get(t, hc, "http://"+admin+"/readyz")
	require.Equal(t, http.StatusOK, code)
}

// Three build-index nodes form one Raft group: the first bootstraps, the others join. When the
// leader stops another node leads; restarted, the old one rejoins.
func TestBuildIndexGroup(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs Raft elections")
	}
	c := clustertest.Start(t, cluster.Spec{
		BuildIndexes:     3,
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{})
	ctx := clustertest.Context(t)
	leader, err := c.WaitLeader(ctx)
	require.NoError(t, err)
	now, err := c.Leader()
	require.NoError(t, err)
	require.Equal(t, leader, now)
	st := c.BuildIndex(leader).Status()
	require.Equal(t, st.ID, st.LeaderID)
	require.Len(t, st.Members, 3)
	raft := map[string]bool{}
	for _, m := range st.Members {
		raft[m.RaftAddr] = true
	}
	for i := range 3 {
		require.True(t, raft[c.PeerAddr(cluster.BuildIndex, i)], "node %d's Raft address is a member", i)
	}

	require.NoError(t, c.Stop(cluster.BuildIndex, leader))
	next, err := c.WaitLeader(ctx)
	require.NoError(t, err)
	require.NotEqual(t, leader, next)
	require.NoError(t, c.Restart(ctx, cluster.BuildIndex, leader))
	require.NoError(t, c.WaitReady(ctx))
	_, err = c.WaitLeader(ctx)
	require.NoError(t, err)
	require.Len(t, c.BuildIndex(leader).Status().Members, 3)
}

// Agents and proxies join a running cluster, wired like the others and with the changes asked
// for; nothing is added to a closed cluster.
func TestAddAgentAndProxy(t *testing.T) {
	t.Parallel()
	c := clustertest.Start(t, cluster.Spec{
		Origins: 1, BuildIndexes: 1, Trackers: 1,
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{})
	i, err := c.AddAgent(func(cfg *agent.Config) { cfg.MaxConns = 7 })
	require.NoError(t, err)
	require.Equal(t, 0, i)
	p, err := c.AddProxy(nil)
	require.NoError(t, err)
	require.Equal(t, 0, p)
	require.NoError(t, c.WaitReady(clustertest.Context(t)))
	require.True(t, c.Running(cluster.Agent, 0))
	require.True(t, c.Running(cluster.Proxy, 0))

	hc := httpClient(t)
	data, d := randomBlob(t, 3000)
	_, err = client.NewCluster(c.Addrs(cluster.Origin), hc).Push(t.Context(), "ns", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	var got bytes.Buffer
	_, err = client.NewAgent(c.Addr(cluster.Agent, 0), hc).Pull(t.Context(), "ns", d, &got, nil)
	require.NoError(t, err)
	require.Equal(t, data, got.Bytes())

	require.NoError(t, c.Close())
	_, err = c.AddAgent(nil)
	require.ErrorIs(t, err, cluster.ErrClosed)
	require.ErrorIs(t, c.Restart(clustertest.Context(t), cluster.Agent, 0), cluster.ErrClosed)
	require.ErrorIs(t, c.Start(), cluster.ErrStarted)
}

// A fixed port plan puts every listener where the package doc says.
func TestFixedPorts(t *testing.T) {
	t.Parallel()
	// Find free ports; other processes may take ports meanwhile, so retry.
	for attempt := 0; ; attempt++ {
		base, agentBase := freePort(t), freePort(t)
		spec := cluster.Spec{
			Dir: t.TempDir(), Origins: 2, BuildIndexes: 1, Proxies: 1, Agents: 2,
			Ports: cluster.Ports{Base: base, Agent: agentBase},
		}
		if spec.Ports.Check(spec) != nil { // no room above base, or the agents' ports inside
			continue
		}
		c, err := cluster.New(spec, cluster.Deps{})
		if errors.Is(err, syscall.EADDRINUSE) && attempt < 20 {
			continue
		}
		require.NoError(t, err)
		at := func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }
		for _, tc := range []struct {
			r                 cluster.Role
			i                 int
			addr, peer, admin string
		}{
			{cluster.Origin, 0, at(base), at(base + 200), at(base + 310)},
			{cluster.Origin, 1, at(base + 1), at(base + 201), at(base + 311)},
			{cluster.BuildIndex, 0, at(base + 100), at(base + 101), at(base + 303)},
			{cluster.Tracker, 0, at(base + 300), "", at(base + 301)},
			{cluster.Proxy, 0, at(base + 400), "", at(base + 302)},
			{cluster.Agent, 0, at(agentBase), at(agentBase + 1), at(agentBase + 2)},
			{cluster.Agent, 1, at(agentBase + 10), at(agentBase + 11), at(agentBase + 12)},
		} {
			require.Equal(t, tc.addr, c.Addr(tc.r, tc.i), "%s %d", tc.r, tc.i)
			require.Equal(t, tc.peer, c.PeerAddr(tc.r, tc.i), "%s %d", tc.r, tc.i)
			require.Equal(t, tc.admin, c.AdminAddr(tc.r, tc.i), "%s %d", tc.r, tc.i)
		}
		_, err = c.AddProxy(nil)
		require.ErrorIs(t, err, cluster.ErrInvalidSpec, "the plan has room for one proxy")
		require.NoError(t, c.Close())
		return
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// When a listener cannot be bound, or a role cannot be built, New closes everything it built
// before: the stores can be opened again, the ports bound again, and no goroutine is left
// (TestMain checks).
func TestNewFailsCleanly(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ln.Close()) })
	taken := ln.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()

	// The agent's port is taken: the origins, the tracker and the build-index were built. The
	// other roles' ports are fixed too, and another test or process may hold one of them: then
	// New fails on that one instead, and the test tries another base.
	for attempt := 0; ; attempt++ {
		spec := cluster.Spec{
			Dir: dir, Origins: 1, BuildIndexes: 1, Agents: 1,
			Ports: cluster.Ports{Base: freePort(t), Agent: taken},
		}
		if spec.Ports.Check(spec) != nil { // the plan does not fit above that base
			continue
		}
		_, err = cluster.New(spec, cluster.Deps{})
		require.ErrorIs(t, err, syscall.EADDRINUSE)
		if !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d ", taken)) && attempt < 20 {
			continue
		}
		require.ErrorContains(t, err, fmt.Sprintf("listen on 127.0.0.1:%d for the API of agent 0", taken))
		break
	}

	// The second origin's config is invalid: the first was built.
	_, err = cluster.New(cluster.Spec{
		Dir: dir, Origins: 2, Agents: 1,
		OriginConfig: func(i int, c *origin.Config) {
			if i == 1 {
				c.Store.MaxBlobSize = -1
			}
		},
	}, cluster.Deps{})
	require.ErrorContains(t, err, "start origin 1")

	// Everything was released: the same state builds again.
	c, err := cluster.New(cluster.Spec{Dir: dir, Origins: 2, BuildIndexes: 1, Agents: 1}, cluster.Deps{})
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "a second Close does nothing")
}

// Check is the plan's part of New's validation: what fits passes, what does not is named.
func TestPortsCheck(t *testing.T) {
	t.Parallel()
	spec := cluster.Spec{Origins: 3, BuildIndexes: 1, Trackers: 1, Proxies: 1, Agents: 2}
	require.NoError(t, cluster.Ports{}.Check(spec), "ephemeral ports always fit")
	require.NoError(t, cluster.Ports{Base: 15000, Agent: 16000}.Check(spec))
	require.NoError(t, cluster.Ports{Base: 15000, Agent: 15401}.Check(spec), "the agents may start right above the plan")
	require.NoError(t, cluster.Ports{Base: 15013, Agent: 15000}.Check(spec), "or end right below it")
	err := cluster.Ports{Base: 15012, Agent: 15000}.Check(spec)
	require.ErrorContains(t, err, "agent ports 15000-15012 overlap ports 15012-15412")
	require.NotErrorIs(t, err, cluster.ErrInvalidSpec, "New adds that")
}

func TestSpecValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		spec cluster.Spec
		want string
	}{
		{"no dir", cluster.Spec{Origins: 1}, "dir is required"},
		{"negative agents", cluster.Spec{Dir: dir, Origins: 1, Agents: -1}, "agents must not be negative"},
		{"negative replicas", cluster.Spec{Dir: dir, Origins: 2, Replicas: -1}, "replicas must not be negative"},
		{"tracker without origins", cluster.Spec{Dir: dir, Trackers: 1}, "trackers and proxies need origins"},
		{"proxy without build-index", cluster.Spec{Dir: dir, Origins: 1, Proxies: 1}, "proxies need a build-index node"},
		{"agents without origins", cluster.Spec{Dir: dir, Agents: 1}, "trackers and proxies need origins"},
		{"no P2P with one tracker", cluster.Spec{Dir: dir, Origins: 1, Agents: 2, Trackers: 1, NoP2P: true}, "want 2 trackers, got 1"},
		{"backend twice", cluster.Spec{Dir: dir, Origins: 1, NoBackend: true, Backend: memory.New()}, "a backend and no backend"},
		{"two trackers on the plan", cluster.Spec{Dir: dir, Origins: 1, Trackers: 2, Ports: cluster.Ports{Base: 20000}}, "room for one tracker"},
		{"too many origins on the plan", cluster.Spec{Dir: dir, Origins: 65, Ports: cluster.Ports{Base: 20000}}, "room for 64 origins"},
		{"plan past the last port", cluster.Spec{Dir: dir, Origins: 1, Ports: cluster.Ports{Base: 65200}}, "no room for the ports up to 65600"},
		{"agents without an agent port", cluster.Spec{Dir: dir, Origins: 1, Agents: 1, Ports: cluster.Ports{Base: 20000}}, "agent port 0"},
		{"agents inside the plan", cluster.Spec{Dir: dir, Origins: 1, Agents: 2, Ports: cluster.Ports{Base: 20000, Agent: 20395}}, "agent ports 20395-20407 overlap ports 20000-20400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cluster.New(tc.spec, cluster.Deps{})
			require.ErrorIs(t, err, cluster.ErrInvalidSpec)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// Run runs the cluster until its context ends, then stops every role cleanly.
func TestRun(t *testing.T) {
	t.Parallel()
	c, err := cluster.New(cluster.Spec{Dir: t.TempDir(), Origins: 1}, cluster.Deps{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	require.NoError(t, c.WaitReady(clustertest.Context(t)))
	require.NoError(t, client.NewOrigin(c.Addr(cluster.Origin, 0), httpClient(t)).Ready(t.Context()))
	cancel()
	require.NoError(t, <-errc)
	require.NoError(t, c.Err())
	require.False(t, c.Running(cluster.Origin, 0))
	require.ErrorIs(t, c.Run(t.Context()), cluster.ErrStarted)
}

// An agent of a cluster may take its tracker from the test.
func TestInjectedTracker(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	c := clustertest.Start(t, cluster.Spec{Agents: 1}, cluster.Deps{AgentTracker: tr})
	require.Zero(t, c.Len(cluster.Tracker), "no tracker runs")
	a := client.NewAgent(c.Addr(cluster.Agent, 0), httpClient(t))
	_, err := a.Stat(t.Context(), "ns", digest.FromString("x"))
	require.True(t, client.IsNotFound(err), "the tracker knows no such blob: %v", err)
	tr.SetDown(true)
	_, err = a.Stat(t.Context(), "ns", digest.FromString("x"))
	require.Error(t, err)
	require.False(t, client.IsNotFound(err), "the agent asked the injected tracker, which is down: %v", err)
}

// The proxy's config function and AddProxy's tweak both apply, the tweak last.
func TestConfigFunctions(t *testing.T) {
	t.Parallel()
	var saw []string
	c := clustertest.Start(t, cluster.Spec{
		Origins: 1, BuildIndexes: 1,
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
		ProxyConfig: func(i int, c *proxy.Config) {
			saw = append(saw, fmt.Sprintf("spec %d %s", i, strings.Join(c.Origins, ",")))
			c.MaxBlobSize = 1000
		},
	}, cluster.Deps{})
	_, err := c.AddProxy(func(c *proxy.Config) {
		saw = append(saw, fmt.Sprintf("tweak %d", c.MaxBlobSize))
	})
	require.NoError(t, err)
	require.Equal(t, []string{"spec 0 " + c.Addr(cluster.Origin, 0), "tweak 1000"}, saw)
}
