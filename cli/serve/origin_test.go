package serve

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/roles"
)

// TestNewRoleCmds parses the flags every `serve ROLE` command shares, and refuses the flags of
// another role.
func TestNewRoleCmds(t *testing.T) {
	t.Parallel()
	ios, _, _, _ := iostreams.Test()
	f := &cmdutil.Factory{IOStreams: ios}
	for _, r := range roles.All() {
		for _, tc := range []struct {
			args    []string
			want    []config.Override
			level   string
			wantErr string
		}{
			{args: []string{"--config", "o.yaml"}, level: "info"},
			{args: []string{"-c", "o.yaml", "--listen", "127.0.0.1:1", "--admin-listen", "127.0.0.1:2", "--log-level", "debug"}, level: "debug",
				want: []config.Override{set("listen", "listen", "127.0.0.1:1"), set("admin-listen", "admin_listen", "127.0.0.1:2")}},
			{args: nil, wantErr: "--config is required"},
			{args: []string{"-c", "o.yaml", "extra"}, wantErr: "unknown command"},
			{args: []string{"-c", "o.yaml", "--raft"}, wantErr: "unknown flag"},
		} {
			var got *Options
			cmd := NewCmdRole(f, r, func(_ context.Context, o *Options) error { got = o; return nil })
			cmd.SetArgs(tc.args)
			cmd.SetOut(ios.Out)
			cmd.SetErr(ios.ErrOut)
			err := cmd.Execute()
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr, r.Name)
				continue
			}
			require.NoError(t, err, r.Name)
			require.Equal(t, r.Name, got.Role.Name)
			require.Equal(t, "o.yaml", got.ConfigPath, r.Name)
			require.Equal(t, tc.level, got.LogLevel, r.Name)
			require.Equal(t, tc.want, got.Overrides, r.Name)
		}
	}
}

// TestServeTable: `serve` has one command per role of server/roles, each with help.
func TestServeTable(t *testing.T) {
	t.Parallel()
	ios, _, _, _ := iostreams.Test()
	cmd := NewCmdServe(&cmdutil.Factory{IOStreams: ios})
	var names []string
	for _, c := range cmd.Commands() {
		names = append(names, c.Name())
		require.NotEmpty(t, c.Short, c.Name())
		require.Regexp(t, `--listen +listen\n`, c.Long, c.Name())
	}
	require.ElementsMatch(t, roles.Names(), names)
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
		err := run(t.Context(), t, "origin", path)
		require.Error(t, err, tc.doc)
		require.ErrorContains(t, err, tc.want)
		require.ErrorContains(t, err, path)
		require.ErrorIs(t, err, config.ErrInvalid)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing was created in the store dir")

	err = run(t.Context(), t, "origin", filepath.Join(dir, "missing.yaml"))
	require.ErrorContains(t, err, "missing.yaml")
	r, err := roles.Lookup("origin")
	require.NoError(t, err)
	err = Run(t.Context(), factory(), &Options{Role: r, ConfigPath: "x", LogLevel: "loud"})
	require.ErrorContains(t, err, "--log-level")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
}

// TestExamplesNameRealFlags: every flag a role's example config mentions is a flag of `serve
// ROLE`, and one that "overrides it" overrides the key the comment is on.
func TestExamplesNameRealFlags(t *testing.T) {
	t.Parallel()
	mention := regexp.MustCompile(`--([a-z][a-z-]*)`)
	overrides := regexp.MustCompile(`The --([a-z-]+) flag overrides it`)
	keyLine := regexp.MustCompile(`^\s*([a-z0-9_]+):`)
	for _, r := range roles.All() {
		keys := map[string]string{"config": "", "log-level": ""} // flag -> the key it overrides
		for _, fl := range append(slices.Clone(commonFlags), help[r.Name].flags...) {
			keys[fl.name] = fl.key
		}
		lines := strings.Split(r.Example, "\n")
		for i, line := range lines {
			for _, m := range mention.FindAllStringSubmatch(line, -1) {
				_, ok := keys[m[1]]
				require.True(t, ok, "%s example, line %d: serve %s has no --%s", r.Name, i+1, r.Name, m[1])
			}
			m := overrides.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			var key string
			for _, next := range lines[i+1:] {
				if k := keyLine.FindStringSubmatch(next); k != nil {
					key = k[1]
					break
				}
			}
			flagKey := keys[m[1]]
			require.Equal(t, flagKey[strings.LastIndex(flagKey, ".")+1:], key, "%s example, line %d: --%s overrides %s", r.Name, i+1, m[1], flagKey)
		}
	}
}
