package serve

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/config"
)

// TestNewRoleCmds parses the flags of every `serve ROLE` command (they share newRoleCmd).
func TestNewRoleCmds(t *testing.T) {
	t.Parallel()
	ios, _, _, _ := iostreams.Test()
	f := &cmdutil.Factory{IOStreams: ios}
	for name, mk := range map[string]func(*cmdutil.Factory, func(context.Context, *RoleOptions) error) *cobra.Command{
		"origin": NewCmdOrigin, "build-index": NewCmdBuildIndex, "tracker": NewCmdTracker, "proxy": NewCmdProxy,
	} {
		for _, tc := range []struct {
			args    []string
			want    RoleOptions
			wantErr string
		}{
			{args: []string{"--config", "o.yaml"}, want: RoleOptions{ConfigPath: "o.yaml", LogLevel: "info"}},
			{args: []string{"-c", "o.yaml", "--listen", "127.0.0.1:1", "--log-level", "debug"}, want: RoleOptions{ConfigPath: "o.yaml", Listen: "127.0.0.1:1", LogLevel: "debug"}},
			{args: nil, wantErr: "--config is required"},
			{args: []string{"-c", "o.yaml", "extra"}, wantErr: "unknown command"},
			{args: []string{"-c", "o.yaml", "--raft"}, wantErr: "unknown flag"},
		} {
			var got *RoleOptions
			cmd := mk(f, func(_ context.Context, o *RoleOptions) error { got = o; return nil })
			cmd.SetArgs(tc.args)
			cmd.SetOut(ios.Out)
			cmd.SetErr(ios.ErrOut)
			err := cmd.Execute()
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr, name)
				continue
			}
			require.NoError(t, err, name)
			require.Equal(t, tc.want, *got, name)
		}
	}
}

// TestRunOriginBadConfig: a malformed config file is refused with a message naming the file and
// the key, before anything listens or touches the store.
func TestRunOriginBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct{ doc, want string }{
		{"listen: 127.0.0.1:1\nstore:\n  dir: " + dir + "\n  capacty: 1GiB\n", "field capacty not found"},
		{"store:\n  dir: " + dir + "\n  capacity: lots\n", `size "lots"`},
		{"store:\n  dir: " + dir + "\nring:\n  replicas: -2\n", "ring.replicas"},
		{"listen: 127.0.0.1:1\n", "store.dir"},
		{"store: {dir: " + dir + "}\nbackends:\n  - namespace: '.*'\n", "backends[0]: no backend configured"},
		{"store: {dir: " + dir + "}\nbackends:\n  - namespace: '('\n    fs: {root: /tmp/x}\n", "backends[0]: namespace"},
		{"store: {dir: " + dir + "}\nbackends:\n  - namespace: '.*'\n    fs: {root: /tmp/x}\n    s3: {bucket: b}\n", "more than one backend"},
		{"[not, a, map]\n", "cannot unmarshal"},
	} {
		path := filepath.Join(t.TempDir(), "origin.yaml")
		require.NoError(t, os.WriteFile(path, []byte(tc.doc), 0o600))
		ios, _, _, _ := iostreams.Test()
		err := runOrigin(t.Context(), &cmdutil.Factory{IOStreams: ios}, &OriginOptions{ConfigPath: path, LogLevel: "info"})
		require.Error(t, err, tc.doc)
		require.ErrorContains(t, err, tc.want)
		require.ErrorContains(t, err, path)
		require.True(t, errors.Is(err, config.ErrInvalid), "%v", err)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing was created in the store dir")

	ios, _, _, _ := iostreams.Test()
	err = runOrigin(t.Context(), &cmdutil.Factory{IOStreams: ios}, &OriginOptions{ConfigPath: filepath.Join(dir, "missing.yaml"), LogLevel: "info"})
	require.ErrorContains(t, err, "missing.yaml")
	err = runOrigin(t.Context(), &cmdutil.Factory{IOStreams: ios}, &OriginOptions{ConfigPath: "x", LogLevel: "loud"})
	require.ErrorContains(t, err, "--log-level")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
}
