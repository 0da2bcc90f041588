// Package devtest starts in-process dev origin clusters (server/dev) for tests of the commands
// and clients that talk to origins.
package devtest

import (
	"context"
	"testing"

	"github.com/krakenctl/krakenctl/server/dev"
)

// Start runs an n-origin dev cluster on ephemeral 127.0.0.1 ports in a temporary directory and
// returns it once every origin answers /readyz. The cluster is stopped at the test's cleanup,
// which fails the test if it does not stop cleanly. Start fails the test if the cluster cannot
// start.
func Start(t testing.TB, n int) *dev.Cluster {
	t.Helper()
	return StartConfig(t, dev.Config{Origins: n, Dir: t.TempDir()})
}

// StartConfig is Start of the cluster cfg describes (agents, a tracker, an endpoints file...).
func StartConfig(t testing.TB, cfg dev.Config) *dev.Cluster {
	t.Helper()
	c, err := dev.New(cfg, dev.Deps{})
	if err != nil {
		t.Fatalf("start dev cluster: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("stop dev cluster: %v", err)
		}
	})
	select {
	case <-c.Ready():
	case err := <-errc:
		errc <- err // for the cleanup
		t.Fatalf("run dev cluster: %v", err)
	}
	return c
}
