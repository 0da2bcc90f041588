package agent

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/auth"
)

// TestGuardAPIRemoteCallers: with auth.loopback open, what a caller may do depends on where it
// calls from. Tests reach the agent on loopback only, so the callers from elsewhere are made
// here with their remote address.
func TestGuardAPIRemoteCallers(t *testing.T) {
	t.Parallel()
	cfg := auth.Config{AnonymousPull: []string{"public/**"}}
	cfg.Defaults()
	require.NoError(t, cfg.Validate())
	g, err := auth.New(&cfg, auth.Options{})
	require.NoError(t, err)
	served := 0
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		served++
		w.WriteHeader(http.StatusOK)
	})
	do := func(h http.Handler, remote, path string) int {
		r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, path, nil)
		r.RemoteAddr = remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	open, required := guardAPI(next, g, true), guardAPI(next, g, false)
	paths := []string{"/v2/", "/v2/team/app/manifests/v1", "/namespace/x/blobs/sha256:" + sha256Hex, "/swarm/torrents", "/cache", "/cache/evict", "/unknown"}
	for _, remote := range []string{"127.0.0.1:4000", "127.9.9.9:4000", "[::1]:4000", "[::ffff:127.0.0.1]:4000"} {
		for _, p := range paths {
			require.Equal(t, http.StatusOK, do(open, remote, p), "%s %s", remote, p)
			require.Equal(t, http.StatusUnauthorized, do(required, remote, p), "%s %s", remote, p)
		}
	}
	for _, remote := range []string{"10.0.0.7:4000", "[2001:db8::1]:4000", "[::ffff:10.0.0.7]:4000", "@", ""} {
		for _, p := range paths {
			require.Equal(t, http.StatusUnauthorized, do(open, remote, p), "%s %s", remote, p)
		}
		require.Equal(t, http.StatusOK, do(open, remote, "/v2/public/base/manifests/v1"), remote)
		require.Equal(t, http.StatusOK, do(open, remote, "/health"), remote)
		require.Equal(t, http.StatusOK, do(open, remote, "/readyz"), remote)
	}
	require.Positive(t, served)
}

const sha256Hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// TestOnLoopback: the warning at start about a listener beyond loopback.
func TestOnLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:16000": true, "127.1.2.3:1": true, "[::1]:16000": true,
		"0.0.0.0:16000": false, "[::]:16000": false, "10.0.0.7:16000": false,
	} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		require.NoError(t, err)
		require.Equal(t, want, onLoopback(a), addr)
	}
	require.False(t, onLoopback(&net.UnixAddr{Name: "/run/agent.sock", Net: "unix"}))
}
