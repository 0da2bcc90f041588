package tag

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
)

// startBuildIndex runs an n-node build-index cluster on 127.0.0.1:0 (the first node
// bootstraps, the others join it) and returns the nodes' API addresses once every node knows
// the leader and all n members. With origins the nodes check content there; without, they
// accept any digest. Nodes stop at the test's cleanup.
func startBuildIndex(t *testing.T, n int, origins []string) []string {
	t.Helper()
	dir := t.TempDir()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	var addrs []string
	for i := range n {
		hl, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		rl, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		verify := len(origins) > 0
		cfg := buildindex.Config{
			Listen: hl.Addr().String(), RaftListen: rl.Addr().String(), Dir: filepath.Join(dir, fmt.Sprint(i)),
			Origins: origins, VerifyContent: &verify,
		}
		cfg.Raft.NodeID = fmt.Sprintf("n%d", i)
		cfg.Raft.Bootstrap = i == 0
		cfg.Raft.HeartbeatTimeout = 300 * time.Millisecond
		cfg.Raft.ElectionTimeout = 300 * time.Millisecond
		cfg.Raft.LeaderLeaseTimeout = 150 * time.Millisecond
		cfg.Raft.CommitTimeout = 5 * time.Millisecond
		if i > 0 {
			cfg.Join = []string{addrs[0]}
		}
		srv, err := buildindex.New(cfg, buildindex.Deps{Listener: hl, RaftListener: rl, HTTPClient: hc})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- srv.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			require.NoError(t, <-errc)
		})
		addrs = append(addrs, hl.Addr().String())
	}
	require.Eventually(t, func() bool {
		leader := ""
		for _, a := range addrs {
			st, err := client.NewBuildIndex(a, hc).ClusterStatus(t.Context())
			if err != nil || st.LeaderID == "" || st.LeaderAPIAddr == "" || len(st.Members) != n || (leader != "" && st.LeaderID != leader) {
				return false
			}
			leader = st.LeaderID
		}
		return true
	}, 60*time.Second, 20*time.Millisecond, "a %d-node cluster with one leader", n)
	return addrs
}
