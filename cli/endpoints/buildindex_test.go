package endpoints_test

import (
	"context"
	"errors"
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

func TestResolveBuildIndex(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	defaultFile := filepath.Join(state, "krakenctl", "dev", "endpoints.yaml")
	require.NoError(t, api.WriteEndpoints(defaultFile, api.Endpoints{Origins: []string{"127.0.0.1:15000"}, BuildIndex: []string{"127.0.0.1:15100", "127.0.0.1:15101"}}))
	custom := filepath.Join(t.TempDir(), "custom.yaml")
	require.NoError(t, api.WriteEndpoints(custom, api.Endpoints{BuildIndex: []string{"10.0.0.1:80"}}))
	originsOnly := t.TempDir()
	originsOnlyFile := filepath.Join(originsOnly, "krakenctl", "dev", "endpoints.yaml")
	require.NoError(t, api.WriteEndpoints(originsOnlyFile, api.Endpoints{Origins: []string{"127.0.0.1:15000"}}))
	withState := map[string]string{"XDG_STATE_HOME": state}
	withEnv := map[string]string{"XDG_STATE_HOME": state, endpoints.EnvBuildIndex: "h1:1, h2:2,,h1:1", endpoints.EnvOrigins: "o:1"}

	tests := []struct {
		name      string
		flags     endpoints.BuildIndexFlags
		env       map[string]string
		want      []string
		wantFile  string
		wantErr   string
		wantUsage bool
	}{
		{name: "flag beats everything", flags: endpoints.BuildIndexFlags{Addrs: []string{"a:1,b:2", "c:3"}, File: custom}, env: withEnv, want: []string{"a:1", "b:2", "c:3"}},
		{name: "explicit file beats env", flags: endpoints.BuildIndexFlags{File: custom}, env: withEnv, want: []string{"10.0.0.1:80"}, wantFile: custom},
		{name: "env beats default file", env: withEnv, want: []string{"h1:1", "h2:2"}},
		{name: "default file", env: withState, want: []string{"127.0.0.1:15100", "127.0.0.1:15101"}, wantFile: defaultFile},
		{name: "default file without build_index", env: map[string]string{"XDG_STATE_HOME": originsOnly}, wantErr: "the endpoints file " + originsOnlyFile + " lists none): pass --build-index host:port,... or set $KRAKENCTL_BUILD_INDEX", wantUsage: true},
		{name: "explicit file without build_index", flags: endpoints.BuildIndexFlags{File: originsOnlyFile}, wantErr: "lists no build-index nodes"},
		{name: "no default file", env: map[string]string{"HOME": filepath.Join(state, "home")}, wantErr: "no endpoints file at " + filepath.Join(state, "home", ".local", "state", "krakenctl", "dev", "endpoints.yaml"), wantUsage: true},
		{name: "nothing anywhere", env: map[string]string{}, wantErr: "no build-index nodes to talk to: pass --build-index", wantUsage: true},
		{name: "bad flag address", flags: endpoints.BuildIndexFlags{Addrs: []string{"http://a:1"}}, wantErr: "invalid --build-index", wantUsage: true},
		{name: "empty flag list", flags: endpoints.BuildIndexFlags{Addrs: []string{","}}, wantErr: "invalid --build-index: no addresses given", wantUsage: true},
		{name: "bad env address", env: map[string]string{endpoints.EnvBuildIndex: "a"}, wantErr: "invalid $KRAKENCTL_BUILD_INDEX"},
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

func TestOriginsIgnoreBuildIndexOnlyFile(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "bi.yaml")
	require.NoError(t, api.WriteEndpoints(p, api.Endpoints{BuildIndex: []string{"127.0.0.1:1"}}))
	_, err := endpoints.Flags{File: p}.Resolve(envOf(nil))
	require.ErrorContains(t, err, "lists no origins")
}

func TestNoBuildIndexIsSentinel(t *testing.T) {
	t.Parallel()
	_, err := endpoints.BuildIndexFlags{}.Resolve(envOf(map[string]string{"HOME": t.TempDir()}))
	require.ErrorIs(t, err, endpoints.ErrNoBuildIndex)
}

func refusedErr(addr string) error {
	return &net.OpError{Op: "dial", Net: "tcp", Addr: nil, Err: os.NewSyscallError("connect "+addr, syscall.ECONNREFUSED)}
}

func TestTry(t *testing.T) {
	t.Parallel()
	b := endpoints.BuildIndex{Addrs: []string{"a:1", "b:2", "c:3"}, Source: "--build-index"}

	// Unreachable nodes are skipped; the first that answers wins, even with an error.
	var tried []string
	answered := errors.New("400 tag invalid")
	addr, err := b.Try(t.Context(), func(_ context.Context, a string) error {
		tried = append(tried, a)
		if a == "a:1" {
			return refusedErr(a)
		}
		return answered
	})
	require.Equal(t, "b:2", addr)
	require.ErrorIs(t, err, answered)
	require.Equal(t, []string{"a:1", "b:2"}, tried, "a node that answered is never followed by another")

	// All unreachable: every error is kept, with the dev up hint when the addresses came from a file.
	fromFile := b
	fromFile.DevFile = "/s/endpoints.yaml"
	tried = nil
	_, err = fromFile.Try(t.Context(), func(_ context.Context, a string) error {
		tried = append(tried, a)
		return refusedErr(a)
	})
	require.Equal(t, b.Addrs, tried)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.ErrorContains(t, err, "no build-index node answered")
	require.ErrorContains(t, err, "connect c:3")
	require.ErrorContains(t, err, "came from /s/endpoints.yaml: is `krakenctl dev up` still running?")

	// Success on the first node calls no other.
	tried = nil
	addr, err = b.Try(t.Context(), func(_ context.Context, a string) error { tried = append(tried, a); return nil })
	require.NoError(t, err)
	require.Equal(t, "a:1", addr)
	require.Len(t, tried, 1)

	// A cancelled context stops at once.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	tried = nil
	_, err = b.Try(ctx, func(ctx context.Context, a string) error { tried = append(tried, a); return refusedErr(a) })
	require.Error(t, err)
	require.Len(t, tried, 1)

	_, err = endpoints.BuildIndex{}.Try(t.Context(), func(context.Context, string) error { return nil })
	require.ErrorIs(t, err, endpoints.ErrNoBuildIndex)
}
