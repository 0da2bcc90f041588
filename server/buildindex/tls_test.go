package buildindex_test

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// tlsNode is a build-index node run with TLS from the test's CA.
type tlsNode struct {
	id, api, raft string
}

// startTLSNode runs node id with a certificate named certName; join names a node to ask to add
// it. It returns New's error instead of failing.
func startTLSNode(t *testing.T, ca *pki.CA, dir, id, certName string, bootstrap bool, join string) (*tlsNode, error) {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tlsCfg, err := ca.IssueFiles(dir, id, pki.Leaf{Name: certName, Groups: []string{pki.GroupBuildIndex}, Hosts: []string{"127.0.0.1"}})
	require.NoError(t, err)
	off := false
	cfg := buildindex.Config{Listen: hl.Addr().String(), RaftListen: rl.Addr().String(), Dir: filepath.Join(dir, id),
		VerifyContent: &off, TLS: tlsCfg}
	cfg.Raft.NodeID, cfg.Raft.Bootstrap = id, bootstrap
	clustertest.FastRaft(&cfg)
	if join != "" {
		cfg.Join = []string{join}
	}
	p, err := pki.Load(tlsCfg)
	require.NoError(t, err)
	var deps buildindex.Deps
	deps.Listener, deps.TLS, deps.RaftListener = hl, p, rl
	srv, err := buildindex.New(cfg, deps)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-errc)
	})
	return &tlsNode{id: id, api: cfg.Listen, raft: cfg.RaftListen}, nil
}

// Build-index nodes with TLS run Raft over mutual TLS with their role certificate: a node joins
// another on its own (its certificate names it), writes are forwarded and replicated, and a
// node whose certificate names another id does not start.
func TestRaftOverMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Raft elections")
	}
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	ca, err := pki.NewCA("test cluster")
	require.NoError(t, err)
	as := func(name string, groups ...string) *http.Client {
		cfg, err := ca.IssueFiles(dir, name, pki.Leaf{Name: name, Groups: groups, Hosts: []string{"127.0.0.1"}})
		require.NoError(t, err)
		p, err := pki.Load(cfg)
		require.NoError(t, err)
		hc := httpserve.NewClient(httpserve.ClientOptions{DialTLS: p.DialTLS})
		t.Cleanup(hc.CloseIdleConnections)
		return hc
	}
	ops, proxy := as("ops", pki.GroupAdmin), as("proxy-1", pki.GroupProxy)
	at := func(hc *http.Client, n *tlsNode) *client.BuildIndex { return client.NewBuildIndex(n.api, hc) }

	n0, err := startTLSNode(t, ca, dir, "n0", "n0", true, "")
	require.NoError(t, err)
	n1, err := startTLSNode(t, ca, dir, "n1", "n1", false, n0.api)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := at(ops, n1).ClusterStatus(ctx)
		return err == nil && len(st.Members) == 2 && st.LeaderID != "" && st.Members[0].APIAddr != "" && st.Members[1].APIAddr != ""
	}, 60*time.Second, 20*time.Millisecond, "n1 joined n0 over TLS")

	d := dig("manifest")
	require.Eventually(t, func() bool {
		_, err := at(proxy, n1).PutTag(ctx, "team/app", "v1", d)
		return err == nil
	}, 30*time.Second, 20*time.Millisecond)
	for _, n := range []*tlsNode{n0, n1} {
		require.Eventually(t, func() bool {
			got, err := at(ops, n).GetTag(ctx, "team/app", "v1", true)
			return err == nil && got.Digest == d
		}, 30*time.Second, 20*time.Millisecond, "the tag on %s", n.id)
	}

	// A node whose certificate names another id refuses to start, saying why.
	_, err = startTLSNode(t, ca, dir, "n2", "n9", false, n0.api)
	require.ErrorContains(t, err, `does not name its server id "n2"`)

	// A node with a certificate of its own name but not of this cluster's CA cannot join.
	other, err := pki.NewCA("another cluster")
	require.NoError(t, err)
	n3, err := startTLSNode(t, other, t.TempDir(), "n3", "n3", false, "")
	require.NoError(t, err)
	_, err = at(ops, n0).Join(ctx, api.Member{ID: "n3", RaftAddr: n3.raft, APIAddr: n3.api})
	re := requireStatus(t, err, http.StatusServiceUnavailable, errcode.CodeUnavailable)
	require.Contains(t, re.Message, "does not accept connections from this cluster")
	st, err := at(ops, n0).ClusterStatus(ctx)
	require.NoError(t, err)
	require.Len(t, st.Members, 2)
}
