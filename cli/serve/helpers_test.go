package serve

import (
	"context"
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/roles"
)

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// httpStatus GETs url with hc and returns the answer's status, 0 when none came. It runs inside
// Eventually's goroutine too, so a request it cannot build is recorded with t.Error rather
// than stopping a goroutine that is not the test's.
func httpStatus(ctx context.Context, t *testing.T, hc *http.Client, url string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
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

// factory returns a Factory with test streams: one per role, the test streams are plain
// buffers, not safe for two writers.
func factory() *cmdutil.Factory {
	ios, _, _, _ := iostreams.Test()
	return &cmdutil.Factory{IOStreams: ios}
}

// run runs `serve ROLE` through Run with the config at path, at log level info, and the given
// overrides.
func run(ctx context.Context, t *testing.T, role, path string, overrides ...config.Override) error {
	t.Helper()
	r, err := roles.Lookup(role)
	if err != nil {
		return err
	}
	return Run(ctx, factory(), &Options{Role: r, ConfigPath: path, LogLevel: "info", Overrides: overrides})
}

// set is an Override of a scalar key; list one of a list key.
func set(flag, key, value string) config.Override {
	return config.Override{Flag: flag, Key: key, Values: []string{value}}
}

func list(flag, key string, values ...string) config.Override {
	return config.Override{Flag: flag, Key: key, Values: values, List: true}
}

// adminAny is the config line that puts a role's admin listener on a free port, so tests that
// run in parallel do not fight over the default one.
const adminAny = "admin_listen: 127.0.0.1:0\n"
