package serve

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/roles"
)

// TestRunProxyBadConfig: a malformed config is refused with the file and the key named, and a
// bad --listen with the flag named, before anything listens.
func TestRunProxyBadConfig(t *testing.T) {
	t.Parallel()
	const ok = "origins: [127.0.0.1:1]\nbuild_index: [127.0.0.1:2]\n"
	for _, tc := range []struct{ doc, listen, want string }{
		{ok + "max_blob_siz: 1GiB\n", "", "field max_blob_siz not found"},
		{"build_index: [127.0.0.1:2]\n", "", "origins: required"},
		{"origins: [127.0.0.1:1]\n", "", "build_index: required"},
		{ok + "max_blob_size: lots\n", "", `size "lots"`},
		{ok + "timeouts:\n  dial: -1s\n", "", "timeouts.dial"},
		{ok, "nope", "--listen: listen"},
	} {
		path := filepath.Join(t.TempDir(), "proxy.yaml")
		require.NoError(t, os.WriteFile(path, []byte(tc.doc), 0o600))
		var overrides []config.Override
		if tc.listen != "" {
			overrides = append(overrides, set("listen", "listen", tc.listen))
		}
		err := run(t.Context(), t, "proxy", path, overrides...)
		require.Error(t, err, tc.doc)
		require.ErrorContains(t, err, tc.want)
		if tc.listen == "" {
			require.ErrorContains(t, err, path)
		}
		require.ErrorIs(t, err, config.ErrInvalid)
	}
	r, err := roles.Lookup("proxy")
	require.NoError(t, err)
	err = Run(t.Context(), factory(), &Options{Role: r, ConfigPath: "x", LogLevel: "loud"})
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
}

// TestRunProxy serves a proxy from a config file: it answers /health and the registry ping, is
// not ready while neither origins nor build-index answer, and stops cleanly.
func TestRunProxy(t *testing.T) {
	t.Parallel()
	listen := freePort(t)
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	admin := freePort(t)
	doc := "listen: " + listen + "\norigins: [" + freePort(t) + "]\nbuild_index: [" + freePort(t) + "]\nadmin_listen: " + admin + "\n"
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, t, "proxy", path) }()
	hc := &http.Client{Timeout: 10 * time.Second}
	statusAt := func(hc *http.Client, addr, p string) int { return httpStatus(t.Context(), t, hc, "http://"+addr+p) }
	status := func(p string) int { return statusAt(hc, listen, p) }
	require.Eventually(t, func() bool { return status("/health") == http.StatusOK }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, http.StatusOK, status("/v2/"))
	require.Equal(t, http.StatusServiceUnavailable, status("/readyz"))
	// Metrics and profiles are served on the admin listener only.
	require.Equal(t, http.StatusNotFound, status("/metrics"))
	require.Equal(t, http.StatusOK, statusAt(hc, admin, "/metrics"))
	require.Equal(t, http.StatusOK, statusAt(hc, admin, "/debug/pprof/"))
	require.Equal(t, http.StatusServiceUnavailable, statusAt(hc, admin, "/readyz"))
	cancel()
	require.NoError(t, <-errc)
}

// TestBadListenFlag: a --listen that the config rejects is a config error naming --listen, for
// every role, on top of a file that is otherwise valid.
func TestBadListenFlag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for role, doc := range map[string]string{
		"proxy":       "origins: [127.0.0.1:1]\nbuild_index: [127.0.0.1:2]\n",
		"tracker":     "origins: [127.0.0.1:1]\n",
		"agent":       "trackers: [127.0.0.1:1]\nstore_dir: " + filepath.Join(dir, "a") + "\n",
		"origin":      "store: {dir: " + filepath.Join(dir, "o") + "}\n",
		"build-index": "dir: " + filepath.Join(dir, "b") + "\nverify_content: false\n",
	} {
		path := filepath.Join(dir, role+".yaml")
		require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
		for flag, key := range map[string]string{"listen": "listen", "admin-listen": "admin_listen"} {
			err := run(t.Context(), t, role, path, set(flag, key, "nope"))
			require.ErrorIs(t, err, config.ErrInvalid, role)
			require.ErrorContains(t, err, "--"+flag+": "+key, role)
			require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err), role)
		}
	}
}
