package agent_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/role"
)

// runAgent runs an agent whose trackers are the given ones (not an injected tracker), until
// the test ends, and returns its admin address.
func runAgent(t *testing.T, trackers []string) string {
	t.Helper()
	var lns [3]net.Listener
	for i := range lns {
		ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns[i] = ln
	}
	srv, err := agent.New(agent.Config{Trackers: trackers, StoreDir: t.TempDir()},
		agent.Deps{Deps: role.Deps{Listener: lns[0], AdminListener: lns[2]}, PeerListener: lns[1]})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	return lns[2].Addr().String()
}

func readyz(t *testing.T, admin string) int {
	t.Helper()
	hc := httpserve.NewClient(httpserve.ClientOptions{})
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+admin+"/readyz", nil)
	require.NoError(t, err)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp.StatusCode
}

// TestReadiness: an agent is ready when some tracker answers, whichever form its address takes
// and even when another tracker accepts connections but never answers; it is not ready when
// no tracker answers.
func TestReadiness(t *testing.T) {
	t.Parallel()
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(healthy.Close)
	release := make(chan struct{})
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(stuck.Close)
	t.Cleanup(func() { close(release) })
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	host := func(s *httptest.Server) string { return s.Listener.Addr().String() }

	require.Equal(t, http.StatusOK, readyz(t, runAgent(t, []string{host(healthy)})))
	require.Equal(t, http.StatusOK, readyz(t, runAgent(t, []string{healthy.URL})), "a tracker given as a URL")
	require.Equal(t, http.StatusOK, readyz(t, runAgent(t, []string{host(stuck), host(healthy)})), "a stuck tracker first")
	require.Equal(t, http.StatusServiceUnavailable, readyz(t, runAgent(t, []string{host(down), host(stuck)})))
}

// TestReadinessFloodIsShared: many /readyz at once, and again at once, cost the trackers one
// probe round, not one per request: a flood on the agent is not passed on to its dependencies.
func TestReadinessFloodIsShared(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	tracker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			hits.Add(1)
		}
	}))
	t.Cleanup(tracker.Close)
	admin := runAgent(t, []string{tracker.Listener.Addr().String()})
	const n = 40
	var wg sync.WaitGroup
	codes := make(chan int, n)
	hc := httpserve.NewClient(httpserve.ClientOptions{})
	defer hc.CloseIdleConnections()
	for range n {
		wg.Go(func() { // no require here: not the test's goroutine
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+admin+"/readyz", nil)
			if err != nil {
				codes <- 0
				return
			}
			resp, err := hc.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			_ = resp.Body.Close() // only the status is asked for
			codes <- resp.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		require.Equal(t, http.StatusOK, c)
	}
	// Without sharing every request probes (n hits); with it one round, a few on a machine so
	// slow that the requests spread over more than one reuse period.
	require.Less(t, int(hits.Load()), n/4, "hits: %d", hits.Load())
}
