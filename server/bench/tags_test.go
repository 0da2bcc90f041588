package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

func TestTagsSmall(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []Progress
	dir := t.TempDir()
	res, err := Tags(t.Context(), TagsConfig{Clients: 4, Puts: 40, Gets: 60, List: 250, Dir: dir}, TagsDeps{
		Progress: func(p Progress) { mu.Lock(); seen = append(seen, p); mu.Unlock() },
	})
	require.NoError(t, err)

	require.Equal(t, 3, res.Nodes, "three nodes by default")
	require.Equal(t, 4, res.Clients)
	require.Equal(t, 40, res.Puts)
	require.Equal(t, 60, res.Gets)
	require.Equal(t, 250, res.ListTags)
	require.Positive(t, res.PutsPerS)
	require.Positive(t, res.GetsPerS)
	if processCPU() > 0 { // the platform says how much CPU the process used
		require.Positive(t, res.PutCPUUs)
		require.Positive(t, res.GetCPUUs)
	}
	require.Positive(t, res.FillPerS)
	require.Positive(t, res.ListMs)
	require.Positive(t, res.ListStoreMs)
	require.LessOrEqual(t, res.PutP50Ms, res.PutP99Ms)
	require.LessOrEqual(t, res.GetP50Ms, res.GetP99Ms)
	require.Equal(t, 1, res.ListPages, "the server serves 250 tags in one page")
	require.Len(t, res.ListRunsMs, listRuns)
	require.Nil(t, res.List100kMs, "list_100k_ms is only set for a listing of 100,000 tags")

	// Every phase ends with a report of all its work, in order.
	var ends []string
	for _, p := range seen {
		require.LessOrEqual(t, p.Done, p.Total)
		if p.Done == p.Total {
			if len(ends) == 0 || ends[len(ends)-1] != p.Phase {
				ends = append(ends, p.Phase)
			}
		}
	}
	require.Equal(t, []string{PhaseStart, PhasePut, PhaseGet, PhaseFill, PhaseList}, ends)

	// The JSON carries the fields the issue names.
	raw, err := json.Marshal(res)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	for _, k := range []string{"puts_per_s", "gets_per_s", "list_100k_ms", "list_ms", "list_store_ms", "nodes", "clients", "puts", "gets", "list_tags"} {
		require.Contains(t, m, k)
	}

	// The nodes' state was in dir, and the benchmark leaves it to its owner.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 3)
}

// An election between two phases does not fail the run: the benchmark waits until the nodes
// agree on the new leader, where Cluster.Leader alone fails while they still name the old one.
func TestCurrentLeaderWaitsOutAnElection(t *testing.T) {
	t.Parallel()
	c, err := startTagCluster(t.Context(), 3, t.TempDir(), nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()
	old, err := currentLeader(t.Context(), c)
	require.NoError(t, err)

	require.NoError(t, c.Stop(cluster.BuildIndex, old))
	now, err := currentLeader(t.Context(), c)
	require.NoError(t, err)
	require.NotEqual(t, old, now, "another node leads")
	require.True(t, c.Running(cluster.BuildIndex, now))
}

func TestTagsSkipsPhases(t *testing.T) {
	t.Parallel()
	res, err := Tags(t.Context(), TagsConfig{Nodes: 2, Clients: 2, Puts: 5, Gets: -1, List: -1, LeaderOnly: true, Dir: t.TempDir()}, TagsDeps{})
	require.NoError(t, err)
	require.Equal(t, 2, res.Nodes)
	require.True(t, res.LeaderOnly)
	require.False(t, res.TLS)
	require.Len(t, res.Endpoints, 2)
	for _, e := range res.Endpoints {
		require.Regexp(t, `^http://127\.0\.0\.1:\d+$`, e)
	}
	require.Positive(t, res.PutsPerS)
	require.Zero(t, res.Gets)
	require.Zero(t, res.GetsPerS)
	require.Zero(t, res.ListTags)
	require.Empty(t, res.ListRunsMs)
}

func TestTagsRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []TagsConfig{{Nodes: -1}, {Nodes: 10}, {Clients: -2}, {Puts: -1}} {
		_, err := Tags(t.Context(), cfg, TagsDeps{})
		require.ErrorIs(t, err, ErrInvalidConfig, "%+v", cfg)
	}
}

func TestTagsStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	var once sync.Once
	_, err := Tags(ctx, TagsConfig{Nodes: 1, Clients: 2, Puts: 1_000_000, Gets: -1, List: -1, Dir: t.TempDir()}, TagsDeps{
		Progress: func(p Progress) {
			if p.Phase == PhasePut && p.Done > 0 {
				once.Do(cancel)
			}
		},
	})
	require.ErrorIs(t, err, context.Canceled)
}

func TestMedian(t *testing.T) {
	t.Parallel()
	require.Zero(t, median(nil))
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
}

// With a CA the benchmark's cluster runs every link over mutual TLS, and the benchmark's own
// client is authorized as a proxy: plain text is refused on the API and the admin listener, a
// client without a certificate on the API and Raft, and a certificate of another group may
// read tags but not write them.
func TestTagClusterTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA")
	require.NoError(t, err)
	c, err := startTagCluster(t.Context(), 2, dir, ca, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()

	hc, scheme, err := benchClient(ca, tlsDir(dir), 2)
	require.NoError(t, err)
	defer hc.CloseIdleConnections()
	require.Equal(t, "https", scheme)
	bench := client.NewBuildIndex("https://"+c.Addr(cluster.BuildIndex, 1), hc)
	d := digestOf(putRepo, 1)
	_, err = bench.PutTag(t.Context(), putRepo, "t1", d)
	require.NoError(t, err, "the benchmark's certificate (group proxy) may write tags")
	_, err = bench.PutTag(t.Context(), putRepo, "t2", d)
	require.NoError(t, err, "a write sent straight to the leader the nodes name goes out over TLS too")
	got, err := bench.GetTag(t.Context(), putRepo, "t1", false)
	require.NoError(t, err)
	require.Equal(t, d, got.Digest)

	// Plain HTTP to the API and to the admin listener: the TLS listener answers 400.
	plain := &http.Client{Transport: &http.Transport{}}
	defer plain.CloseIdleConnections()
	for _, addr := range []string{c.Addr(cluster.BuildIndex, 0), c.AdminAddr(cluster.BuildIndex, 0)} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/readyz", nil)
		require.NoError(t, err)
		resp, err := plain.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", addr, body)
		require.Contains(t, string(body), "HTTP request to an HTTPS server")
	}

	// TLS without a client certificate: the API and Raft require one. TLS 1.3 delivers the
	// server's verdict after the client's side of the handshake, at the first read.
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca.CertPEM()))
	dial := func(addr string) *tls.Conn {
		d := &tls.Dialer{Config: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}
		conn, err := d.DialContext(t.Context(), "tcp", addr)
		require.NoError(t, err, addr)
		return conn.(*tls.Conn)
	}
	for _, addr := range []string{c.Addr(cluster.BuildIndex, 0), c.PeerAddr(cluster.BuildIndex, 0)} {
		conn := dial(addr)
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(time.Minute)))
		_, err = conn.Read(make([]byte, 1))
		require.ErrorContains(t, err, "certificate required", addr)
		require.NoError(t, conn.Close())
	}
	// Raft's listener presents the node's own certificate, from the CA, naming its server id.
	conn := dial(c.PeerAddr(cluster.BuildIndex, 0))
	require.Equal(t, "bi-1", conn.ConnectionState().PeerCertificates[0].Subject.CommonName)
	require.NoError(t, conn.Close())

	// An agent's certificate reads tags but may not write them.
	agentCfg, err := ca.IssueFiles(tlsDir(dir), "agent", pki.Leaf{Name: "agent-x", Groups: []string{pki.GroupAgent}})
	require.NoError(t, err)
	ap, err := pki.Load(agentCfg)
	require.NoError(t, err)
	agentTr := &http.Transport{DialTLSContext: ap.Dialer(&net.Dialer{}).DialContext}
	defer agentTr.CloseIdleConnections()
	agent := client.NewBuildIndex("https://"+c.Addr(cluster.BuildIndex, 0), &http.Client{Transport: agentTr})
	// Before it knows a leader, the client sends its write to the node it was given.
	_, err = agent.PutTag(t.Context(), putRepo, "t3", d)
	var ce *errcode.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, http.StatusForbidden, ce.Status, "%v", err)
	require.Equal(t, errcode.CodeDenied, ce.Code)
	_, err = agent.GetTag(t.Context(), putRepo, "t1", false)
	require.NoError(t, err, "an agent reads tags")
}
