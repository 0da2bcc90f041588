// Package clustertest starts in-process clusters (server/cluster) for the tests of the roles
// and of the commands: Start builds one, runs it and waits until every role is ready, and the
// test's cleanup stops it; any error on the way fails the test.
package clustertest

import (
	"context"
	"testing"
	"time"

	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/pki"
)

// Timeout bounds Start's wait for every role to be ready (elections under the race detector on
// a busy machine included).
const Timeout = 2 * time.Minute

// Start builds the cluster spec declares (in t.TempDir() when spec.Dir is empty), runs it and
// returns it once every role answers /readyz. The cluster is closed at the test's cleanup,
// which fails the test if a role does not stop cleanly; Start fails the test if the cluster
// cannot start.
func Start(t testing.TB, spec cluster.Spec, deps cluster.Deps) *cluster.Cluster {
	t.Helper()
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	c, err := cluster.New(spec, deps)
	if err != nil {
		t.Fatalf("build cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	if err := c.Start(); err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	return c
}

// Context returns a context for a cluster's waits (Restart, WaitLeader, WaitReady) that ends
// after Timeout or with the test.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// FastRaft sets a build-index node's Raft timeouts short enough that a group elects a leader
// in well under a second on loopback, and commits without waiting.
func FastRaft(c *buildindex.Config) {
	c.Raft.HeartbeatTimeout = 300 * time.Millisecond
	c.Raft.ElectionTimeout = 300 * time.Millisecond
	c.Raft.LeaderLeaseTimeout = 150 * time.Millisecond
	c.Raft.CommitTimeout = 5 * time.Millisecond
}

// TLS returns a cluster CA for Spec.TLS, made for this test; the certificates go to a
// temporary directory.
func TLS(t testing.TB) *cluster.TLS {
	t.Helper()
	ca, err := pki.NewCA("krakenctl test cluster")
	if err != nil {
		t.Fatalf("cluster ca: %v", err)
	}
	return &cluster.TLS{CA: ca, Dir: t.TempDir()}
}
