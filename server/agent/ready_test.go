package agent_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
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
