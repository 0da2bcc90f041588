package buildindex

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/role"
)

// startOrigins runs n in-process origins on 127.0.0.1 sharing one filesystem backend, and
// returns their addresses once each answers /readyz. They stop at the test's cleanup. (Not
// server/cluster: it builds build-index nodes itself, so the tests inside this package, which
// run a build-index over a fake store, cannot import it; the Raft cluster tests, outside the
// package, do.)
func startOrigins(t *testing.T, n int) []string {
	t.Helper()
	dir := t.TempDir()
	lns := make([]net.Listener, n)
	addrs := make([]string, n)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns[i], addrs[i] = ln, ln.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	errcs := make([]chan error, 0, n)
	t.Cleanup(func() {
		cancel()
		for _, errc := range errcs {
			require.NoError(t, <-errc)
		}
	})
	for i, ln := range lns {
		srv, err := origin.New(origin.Config{
			Listen:    addrs[i],
			Advertise: addrs[i],
			Store:     origin.StoreConfig{Dir: filepath.Join(dir, fmt.Sprintf("origin-%d", i))},
			Ring:      ring.Config{Members: addrs, Replicas: min(3, n), HealthInterval: time.Second, HealthTimeout: time.Second},
			Backends:  []backends.Config{{Namespace: ".*", Name: "fs", FS: &fs.Config{Root: filepath.Join(dir, "backend")}}},
		}, origin.Deps{Deps: role.Deps{Listener: ln}})
		if err != nil {
			for _, l := range lns[i:] {
				_ = l.Close() // the New error is the one to report
			}
			require.NoError(t, err)
		}
		errc := make(chan error, 1)
		errcs = append(errcs, errc)
		go func() { errc <- srv.Run(ctx) }()
	}
	hc := testHTTPClient(t)
	for _, a := range addrs {
		require.Eventually(t, func() bool { return client.NewOrigin(a, hc).Ready(t.Context()) == nil },
			30*time.Second, 20*time.Millisecond, "origin %s never became ready", a)
	}
	return addrs
}
