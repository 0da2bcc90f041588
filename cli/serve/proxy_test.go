package serve

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/config"
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
		ios, _, _, _ := iostreams.Test()
		err := runProxy(t.Context(), &cmdutil.Factory{IOStreams: ios}, &ProxyOptions{ConfigPath: path, Listen: tc.listen, LogLevel: "info"})
		require.Error(t, err, tc.doc)
		require.ErrorContains(t, err, tc.want)
		if tc.listen == "" {
			require.ErrorContains(t, err, path)
		}
		require.True(t, errors.Is(err, config.ErrInvalid), "%v", err)
	}
	ios, _, _, _ := iostreams.Test()
	err := runProxy(t.Context(), &cmdutil.Factory{IOStreams: ios}, &ProxyOptions{ConfigPath: "x", LogLevel: "loud"})
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
}

// TestRunProxy serves a proxy from a config file: it answers /health and the registry ping, is
// not ready while neither origins nor build-index answer, and stops cleanly.
func TestRunProxy(t *testing.T) {
	t.Parallel()
	listen := freePort(t)
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	doc := "listen: " + listen + "\norigins: [" + freePort(t) + "]\nbuild_index: [" + freePort(t) + "]\n"
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	ios, _, _, _ := iostreams.Test()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- runProxy(ctx, &cmdutil.Factory{IOStreams: ios}, &ProxyOptions{ConfigPath: path, LogLevel: "info"})
	}()
	hc := &http.Client{Timeout: 10 * time.Second}
	status := func(p string) int {
		resp, err := hc.Get("http://" + listen + p)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Eventually(t, func() bool { return status("/health") == http.StatusOK }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, http.StatusOK, status("/v2/"))
	require.Equal(t, http.StatusServiceUnavailable, status("/readyz"))
	cancel()
	require.NoError(t, <-errc)
}

// TestBadListenFlag: a --listen that the config rejects is a config error naming --listen, for
// every role that takes the flag on top of its file.
func TestBadListenFlag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(doc), 0o600))
		return p
	}
	factory := func() *cmdutil.Factory { ios, _, _, _ := iostreams.Test(); return &cmdutil.Factory{IOStreams: ios} }
	ro := func(path string) RoleOptions { return RoleOptions{ConfigPath: path, Listen: "nope", LogLevel: "info"} }
	for name, run := range map[string]func() error{
		"proxy": func() error {
			o := ro(write("proxy.yaml", "origins: [127.0.0.1:1]\nbuild_index: [127.0.0.1:2]\n"))
			return runProxy(t.Context(), factory(), &o)
		},
		"tracker": func() error {
			o := TrackerOptions(ro(write("tracker.yaml", "origins: [127.0.0.1:1]\n")))
			return runTracker(t.Context(), factory(), &o)
		},
	} {
		err := run()
		require.ErrorIs(t, err, config.ErrInvalid, name)
		require.ErrorContains(t, err, "--listen", name)
	}
}
