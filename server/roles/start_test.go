package roles_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/roles"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestStartBindsEveryListener starts a tracker from a completed config: it serves its API and
// its admin endpoints on the addresses the config names, and stops when its context ends.
func TestStartBindsEveryListener(t *testing.T) {
	t.Parallel()
	r, err := roles.Lookup("tracker")
	require.NoError(t, err)
	api, adm := freeAddr(t), freeAddr(t)
	cfg := r.NewConfig()
	require.NoError(t, config.Unmarshal([]byte("listen: "+api+"\nadmin_listen: "+adm+"\norigins: [127.0.0.1:1]\n"), cfg))
	require.NoError(t, config.Check(cfg))
	srv, err := r.Start(t.Context(), cfg, roles.Env{Metrics: admin.NewRegistry()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	// status runs inside Eventually's goroutine too, so it records a failure rather than
	// stopping the test there.
	status := func(addr, p string) int {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+p, nil)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close() // only the status is asked for
		return resp.StatusCode
	}
	require.Eventually(t, func() bool { return status(api, "/health") == http.StatusOK }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, http.StatusOK, status(adm, "/metrics"))
	require.Equal(t, http.StatusNotFound, status(api, "/metrics"))
	cancel()
	require.NoError(t, <-done)
}

// TestStartNamesTheKeyThatCannotBind: a listener that cannot be bound is named by its key, and
// the listeners bound before it are released.
func TestStartNamesTheKeyThatCannotBind(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, taken.Close()) })
	r, err := roles.Lookup("agent")
	require.NoError(t, err)
	api, peer := freeAddr(t), freeAddr(t)
	cfg := r.NewConfig()
	doc := "listen: " + api + "\npeer_listen: " + peer + "\nadmin_listen: " + taken.Addr().String() +
		"\ntrackers: [127.0.0.1:1]\nstore_dir: " + filepath.Join(t.TempDir(), "store") + "\n"
	require.NoError(t, config.Unmarshal([]byte(doc), cfg))
	require.NoError(t, config.Check(cfg))
	_, err = r.Start(t.Context(), cfg, roles.Env{})
	require.ErrorContains(t, err, "admin_listen: ")
	for _, addr := range []string{api, peer} {
		ln, err := net.Listen("tcp", addr)
		require.NoError(t, err, "%s was released", addr)
		require.NoError(t, ln.Close())
	}
}

// TestStartEveryRole starts every role from a minimal config with each of its listeners on
// 127.0.0.1:0: Start succeeds only when the role took every listener the config bound, so a
// key start.go misspells, or a listen key added without its Deps field, fails here.
func TestStartEveryRole(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	required := map[string]string{
		"agent":       "trackers: [127.0.0.1:1]\nstore_dir: " + filepath.Join(dir, "agent") + "\npeer_advertise: 127.0.0.1:1\n",
		"origin":      "store: {dir: " + filepath.Join(dir, "origin") + "}\nadvertise: 127.0.0.1:1\n",
		"tracker":     "origins: [127.0.0.1:1]\n",
		"proxy":       "origins: [127.0.0.1:1]\nbuild_index: [127.0.0.1:2]\n",
		"build-index": "dir: " + filepath.Join(dir, "build-index") + "\nverify_content: false\nadvertise: 127.0.0.1:1\nraft: {advertise: 127.0.0.1:2}\n",
	}
	for _, r := range roles.All() {
		cfg := r.NewConfig()
		cfg.Defaults()
		var overrides []config.Override
		for _, a := range cfg.ListenAddrs() {
			overrides = append(overrides, config.Override{Key: a.Key, Values: []string{"127.0.0.1:0"}})
		}
		require.Contains(t, required, r.Name)
		cfg = r.NewConfig()
		require.NoError(t, config.Unmarshal([]byte(required[r.Name]), cfg), r.Name)
		require.NoError(t, config.Apply(cfg, overrides), r.Name)
		require.NoError(t, config.Check(cfg), r.Name)
		srv, err := r.Start(t.Context(), cfg, roles.Env{})
		require.NoError(t, err, r.Name)
		c, ok := srv.(io.Closer)
		require.True(t, ok, "%s: %T can be released without running", r.Name, srv)
		require.NoError(t, c.Close(), r.Name)
	}
}
