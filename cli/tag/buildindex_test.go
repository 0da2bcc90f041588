package tag

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
)

// startCluster runs n build-index nodes on 127.0.0.1:0 (the first bootstraps, the others join
// it) and returns once every node knows the leader and all n members. With origins > 0 that
// many origins run too, and the nodes check content there; without, they accept any digest.
// Everything stops at the test's cleanup.
func startCluster(t *testing.T, origins, n int) *cluster.Cluster {
	t.Helper()
	c := clustertest.Start(t, cluster.Spec{
		Origins: origins, BuildIndexes: n,
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{})
	_, err := c.WaitLeader(clustertest.Context(t))
	require.NoError(t, err, "a %d-node cluster with one leader", n)
	return c
}
