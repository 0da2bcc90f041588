package endpoints_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
)

func envOf(m map[string]string) endpoints.Env { return func(k string) string { return m[k] } }

func TestResolve(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	defaultFile := filepath.Join(state, "krakenctl", "dev", "endpoints.yaml")
	require.NoError(t, api.WriteEndpoints(defaultFile, api.Endpoints{Origins: []string{"127.0.0.1:15000", "127.0.0.1:15001"}}))
	custom := filepath.Join(t.TempDir(), "custom.yaml")
	require.NoError(t, api.WriteEndpoints(custom, api.Endpoints{Origins: []string{"10.0.0.1:80"}}))
	withState := map[string]string{"XDG_STATE_HOME": state, "HOME": "/nonexistent"}
	withEnv := map[string]string{"XDG_STATE_HOME": state, endpoints.EnvOrigins: "h1:1, h2:2,,h1:1"}

	tests := []struct {
		name      string
		flags     endpoints.Flags
		env       map[string]string
		want      []string
		wantFile  string
		wantErr   string
		wantUsage bool
	}{
		{name: "flag beats everything", flags: endpoints.Flags{Origins: []string{"a:1,b:2", "c:3"}, File: custom}, env: withEnv, want: []string{"a:1", "b:2", "c:3"}},
		{name: "explicit file beats env", flags: endpoints.Flags{File: custom}, env: withEnv, want: []string{"10.0.0.1:80"}, wantFile: custom},
		{name: "env beats default file", env: withEnv, want: []string{"h1:1", "h2:2"}},
		{name: "default file under XDG_STATE_HOME", env: withState, want: []string{"127.0.0.1:15000", "127.0.0.1:15001"}, wantFile: defaultFile},
		{name: "default file under HOME", env: map[string]string{"HOME": filepath.Join(state, "home")}, wantErr: filepath.Join(state, "home", ".local", "state", "krakenctl", "dev", "endpoints.yaml"), wantUsage: true},
		{name: "relative XDG_STATE_HOME is ignored", env: map[string]string{"XDG_STATE_HOME": "rel", "HOME": state}, wantErr: "no origins", wantUsage: true},
		{name: "nothing anywhere", env: map[string]string{}, wantErr: "pass --origins host:port,... or set $KRAKENCTL_ORIGINS, or start a local cluster with `krakenctl dev up`", wantUsage: true},
		{name: "bad flag address", flags: endpoints.Flags{Origins: []string{"http://a:1"}}, wantErr: "invalid --origins", wantUsage: true},
		{name: "flag without port", flags: endpoints.Flags{Origins: []string{"a"}}, wantErr: "invalid --origins", wantUsage: true},
		{name: "empty flag list", flags: endpoints.Flags{Origins: []string{" , "}}, wantErr: "invalid --origins: no addresses given", wantUsage: true},
		{name: "bad env address", env: map[string]string{endpoints.EnvOrigins: "a:0"}, wantErr: "invalid $KRAKENCTL_ORIGINS"},
		{name: "missing explicit file", flags: endpoints.Flags{File: filepath.Join(state, "nope.yaml")}, wantErr: "--endpoints-file: read endpoints file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.flags.Resolve(envOf(tt.env))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				if tt.wantUsage {
					require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err), "%v", err)
				} else {
					require.Equal(t, cmdutil.ExitError, cmdutil.ExitCode(err), "%v", err)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got.Addrs)
			require.Equal(t, tt.wantFile, got.DevFile)
			require.NotEmpty(t, got.Source)
		})
	}
}

func TestNoOriginsIsSentinel(t *testing.T) {
	t.Parallel()
	_, err := endpoints.Flags{}.Resolve(envOf(map[string]string{"HOME": t.TempDir()}))
	require.ErrorIs(t, err, endpoints.ErrNoOrigins)
}

func TestBadDefaultFileIsReported(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	p := filepath.Join(state, "krakenctl", "dev", "endpoints.yaml")
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte("origins: [\"not an address\"]\n"), 0o644))
	_, err := endpoints.Flags{}.Resolve(envOf(map[string]string{"XDG_STATE_HOME": state}))
	require.ErrorContains(t, err, p)
	require.ErrorContains(t, err, "not an address")
}

func TestDefaultDevDir(t *testing.T) {
	t.Parallel()
	d, err := endpoints.DefaultDevDir(envOf(map[string]string{"XDG_STATE_HOME": "/x/state", "HOME": "/home/u"}))
	require.NoError(t, err)
	require.Equal(t, "/x/state/krakenctl/dev", d)
	d, err = endpoints.DefaultDevDir(envOf(map[string]string{"HOME": "/home/u"}))
	require.NoError(t, err)
	require.Equal(t, "/home/u/.local/state/krakenctl/dev", d)
	_, err = endpoints.DefaultDevDir(envOf(nil))
	require.ErrorContains(t, err, "HOME")
}

func TestExplain(t *testing.T) {
	t.Parallel()
	refused := fmt.Errorf("push: %w", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	fromFile := endpoints.Origins{Addrs: []string{"127.0.0.1:1"}, DevFile: "/s/endpoints.yaml"}

	err := fromFile.Explain(refused)
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "the cause stays inspectable")
	require.ErrorContains(t, err, "came from /s/endpoints.yaml: is `krakenctl dev up` still running?")

	require.Equal(t, refused, endpoints.Origins{Addrs: []string{"a:1"}, Source: "--origins"}.Explain(refused), "flags need no hint")
	other := errors.New("500 internal error")
	require.Equal(t, other, fromFile.Explain(other), "only unreachable origins get the hint")
	require.NoError(t, fromFile.Explain(nil))
}
