package cluster

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/role"
)

// biNode is one build-index node running on 127.0.0.1:0 until the test's cleanup.
type biNode struct {
	id, apiAddr, raftAddr string
	cli                   *client.BuildIndex
}

func testClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// startNode runs a build-index node without content checks. bootstrap forms a new cluster;
// join names a node to ask to add it; with neither it waits to be added. be, when set, gets the
// tag write-back (and is where restore reads from).
func startNode(t *testing.T, id string, bootstrap bool, join string, be backend.Backend) *biNode {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	off := false
	cfg := buildindex.Config{Listen: hl.Addr().String(), RaftListen: rl.Addr().String(), Dir: filepath.Join(t.TempDir(), id), VerifyContent: &off}
	cfg.Raft.NodeID = id
	cfg.Raft.Bootstrap = bootstrap
	cfg.Raft.HeartbeatTimeout = 300 * time.Millisecond
	cfg.Raft.ElectionTimeout = 300 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 150 * time.Millisecond
	cfg.Raft.CommitTimeout = 5 * time.Millisecond
	cfg.Writeback.RetryInitial = 20 * time.Millisecond
	cfg.Writeback.RetryMax = 200 * time.Millisecond
	cfg.Writeback.FollowerDelay = 100 * time.Millisecond
	if join != "" {
		cfg.Join = []string{join}
	}
	hc := testClient(t)
	srv, err := buildindex.New(cfg, buildindex.Deps{Deps: role.Deps{Listener: hl, HTTPClient: hc}, RaftListener: rl, Backend: be})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-errc)
	})
	return &biNode{id: id, apiAddr: cfg.Listen, raftAddr: cfg.RaftListen, cli: client.NewBuildIndex(cfg.Listen, hc)}
}

// startCluster runs n nodes (the first bootstraps, the others join it) and waits until every
// node knows the leader and all n members.
func startCluster(t *testing.T, n int, be backend.Backend) []*biNode {
	t.Helper()
	nodes := []*biNode{startNode(t, "n0", true, "", be)}
	for i := 1; i < n; i++ {
		nodes = append(nodes, startNode(t, "n"+string(rune('0'+i)), false, nodes[0].apiAddr, be))
	}
	waitMembers(t, nodes, n)
	return nodes
}

// waitMembers waits until every node in nodes knows the same leader and want members, with
// every member's API address.
func waitMembers(t *testing.T, nodes []*biNode, want int) api.ClusterStatus {
	t.Helper()
	var last api.ClusterStatus
	require.Eventually(t, func() bool {
		leader := ""
		for _, n := range nodes {
			st, err := n.cli.ClusterStatus(t.Context())
			if err != nil || st.LeaderID == "" || st.LeaderAPIAddr == "" || len(st.Members) != want || (leader != "" && st.LeaderID != leader) {
				return false
			}
			for _, m := range st.Members {
				if m.APIAddr == "" {
					return false // recorded by a Raft entry of its own, after the join
				}
			}
			leader, last = st.LeaderID, st
		}
		return true
	}, 60*time.Second, 20*time.Millisecond, "%d members with one leader", want)
	return last
}
