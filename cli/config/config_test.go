package config_test

import (
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/cmdutil/cmdutiltest"
	"github.com/krakenctl/krakenctl/cli/config"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/cli/root"
	"github.com/krakenctl/krakenctl/server/agent"
	roleconfig "github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/origin"
)

// unsetVar is an environment variable the tests expect to be unset.
const unsetVar = "KRAKENCTL_CONFIG_TEST_UNSET"

func Test_NewCmdValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantRole string
		wantFile string
		wantErr  string
	}{
		{name: "role and file", args: []string{"build-index", "bi.yaml"}, wantRole: "build-index", wantFile: "bi.yaml"},
		{name: "no file", args: []string{"agent"}, wantErr: "validate takes ROLE and FILE, got 1 arguments"},
		{name: "unknown role", args: []string{"buildindex", "bi.yaml"}, wantErr: `unknown role "buildindex": want one of agent, origin, tracker, proxy, build-index`},
		{name: "too many", args: []string{"agent", "a.yaml", "b.yaml"}, wantErr: "got 3 arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *config.ValidateOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return config.NewCmdValidate(f, func(o *config.ValidateOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				cmdutiltest.RequireUsageError(t, err, tt.wantErr, got != nil)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantRole, got.Role.Name)
			require.Equal(t, tt.wantFile, got.File)
		})
	}
}

func Test_NewCmdExample(t *testing.T) {
	t.Parallel()
	var got *config.ExampleOptions
	err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
		return config.NewCmdExample(f, func(o *config.ExampleOptions) error { got = o; return nil })
	}, "tracker")
	require.NoError(t, err)
	require.Equal(t, "tracker", got.Role.Name)

	got = nil
	err = cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
		return config.NewCmdExample(f, func(o *config.ExampleOptions) error { got = o; return nil })
	}, "tracker", "extra")
	cmdutiltest.RequireUsageError(t, err, "example takes ROLE, got 2 arguments", got != nil)
}

// run runs krakenctl's command tree in-process with args, as root.Main does, and returns what
// it printed, the exit code and the error.
func run(t *testing.T, args ...string) (stdout string, code int, err error) {
	t.Helper()
	ios, _, out, _ := iostreams.Test()
	f := &cmdutil.Factory{
		IOStreams:  ios,
		HTTPClient: func() *http.Client { return &http.Client{} },
		Logger:     func() *slog.Logger { return slog.New(slog.DiscardHandler) },
		Version:    "test",
	}
	cmd := root.NewCmdRoot(f)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(t.Context())
	return out.String(), cmdutil.ExitCode(err), err
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestExampleValidates(t *testing.T) {
	t.Parallel()
	for _, role := range []string{"agent", "origin", "tracker", "proxy", "build-index"} {
		out, code, err := run(t, "config", "example", role)
		require.NoError(t, err, role)
		require.Equal(t, 0, code)
		require.Contains(t, out, "admin_listen: 127.0.0.1:", role)

		file := writeFile(t, t.TempDir(), role+".yaml", out)
		out, code, err = run(t, "config", "validate", role, file)
		require.NoError(t, err, role)
		require.Equal(t, 0, code)
		require.Equal(t, file+": valid "+role+" config\n", out)
	}
	require.Equal(t, agent.Example(), func() string { out, _, _ := run(t, "config", "example", "agent"); return out }())
}

// TestValidateBadInput runs `config validate` on each kind of bad file: every problem is named
// by its key path and the exit code is 2.
func TestValidateBadInput(t *testing.T) {
	t.Parallel()
	if _, ok := os.LookupEnv(unsetVar); ok {
		t.Fatalf("%s is set in the environment", unsetVar)
	}
	dir := t.TempDir()
	const agentOK = "trackers: [10.0.0.2:16100]\nstore_dir: /var/lib/krakenctl/agent\n"
	const originOK = "store: {dir: /var/lib/krakenctl/origin}\n"
	const secret = "do-not-print-this-password"
	for _, tc := range []struct {
		name, role, doc string
		want            []string
	}{
		{"malformed YAML", "agent", "store_dir: /x\ntrackers: [10.0.0.2:16100\n",
			[]string{"trackers: line 2: did not find expected ',' or ']'"}},
		{"unknown key", "agent", agentOK + "seed_tme: 1m\n",
			[]string{"seed_tme: line 3: field seed_tme not found (did you mean seed_time?)"}},
		{"wrong type", "tracker", "origins: [10.0.0.1:15000]\nmax_peers: many\npeer_ttl: [1m]\n",
			[]string{"max_peers: line 2: cannot unmarshal !!str `many` into int", "peer_ttl: line 3: cannot unmarshal !!seq into time.Duration"}},
		{"bad address", "proxy", "origins: [10.0.0.1:15000]\nbuild_index: [10.0.0.4:15100]\nlisten: nope\nadmin_listen: '127.0.0.1:x'\n",
			[]string{`listen: "nope" is not host:port`, `admin_listen: "127.0.0.1:x": port "x" is not a number in 0..65535`}},
		{"ports out of range", "agent", agentOK + "listen: 127.0.0.1:99999\npeer_listen: ':65536'\npeer_advertise: 10.0.0.7:16001\n",
			[]string{`listen: "127.0.0.1:99999": port "99999" is not a number in 0..65535`, `peer_listen: ":65536": port "65536" is not a number in 0..65535`}},
		{"overlapping ports", "build-index", "dir: /d\norigins: [10.0.0.1:15000]\nraft_listen: 127.0.0.1:15100\nadmin_listen: 0.0.0.0:15100\n",
			[]string{`raft_listen: "127.0.0.1:15100" overlaps listen "127.0.0.1:15100"`, `admin_listen: "0.0.0.0:15100" overlaps listen "127.0.0.1:15100"`, `admin_listen: "0.0.0.0:15100" overlaps raft_listen "127.0.0.1:15100"`}},
		{"overlapping peer port", "origin", originOK + "listen: 0.0.0.0:15000\npeer: {listen: '127.0.0.1:15000'}\n",
			[]string{`peer.listen: "127.0.0.1:15000" overlaps listen "0.0.0.0:15000"`}},
		{"bad regex", "origin", originOK + "backends:\n  - namespace: .*\n    fs: {root: /r}\n  - namespace: '(library'\n    fs: {root: /r}\n",
			[]string{"backends[1]: namespace: error parsing regexp: missing closing ): `(library`"}},
		{"missing secret file", "origin", originOK + "backends:\n  - namespace: .*\n    s3:\n      bucket: b\n      access_key_id: AKIAEXAMPLE\n      secret_access_key_file: " + dir + "/missing\n",
			[]string{"backends[0].s3.secret_access_key_file: open " + dir + "/missing: no such file or directory"}},
		{"secret and its file", "origin", originOK + "backends:\n  - namespace: .*\n    registry:\n      address: r.example\n      username: u\n      password: " + secret + "\n      password_file: /p\n",
			[]string{"backends[0].registry.password_file: line 8: set password or password_file, not both (the other is at line 7)"}},
		{"unset environment variable", "agent", "trackers: [10.0.0.2:16100]\nstore_dir: ${" + unsetVar + "}/agent\n",
			[]string{"store_dir: line 2: environment variable " + unsetVar + " is not set"}},
		{"every problem at once", "agent", "listen: nope\nseed_time: soon\nmax_conns: -1\n",
			[]string{`listen: "nope" is not host:port`, "seed_time: line 2: cannot unmarshal !!str `soon` into time.Duration", "max_conns: must be at least 1", "trackers: required", "store_dir: required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := writeFile(t, t.TempDir(), "c.yaml", tc.doc)
			out, code, err := run(t, "config", "validate", tc.role, file)
			require.Error(t, err)
			require.Equal(t, cmdutil.ExitUsage, code, "%v", err)
			require.Empty(t, out, "nothing on stdout for an invalid file")
			msg := err.Error()
			require.True(t, strings.HasPrefix(msg, file+": invalid config"), msg)
			for _, want := range tc.want {
				require.Contains(t, msg, want)
			}
			if len(tc.want) > 1 {
				lines := strings.Split(msg, "\n")
				require.Len(t, lines, len(tc.want)+1, "one problem per line:\n%s", msg)
			}
			require.NotContains(t, msg, secret)
		})
	}
}

func TestValidateMissingFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "nope.yaml")
	_, code, err := run(t, "config", "validate", "agent", file)
	require.Equal(t, cmdutil.ExitUsage, code)
	require.EqualError(t, err, file+": invalid config: open "+file+": no such file or directory")
}

// TestValidateGoodInput changes the environment, so it does not run in parallel.
func TestValidateGoodInput(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KRAKENCTL_CONFIG_TEST_DIR", dir)
	t.Setenv("KRAKENCTL_CONFIG_TEST_TRACKER", "10.0.0.2:16100")
	keyFile := writeFile(t, dir, "s3-key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")

	file := writeFile(t, dir, "agent.yaml", "trackers: ['${KRAKENCTL_CONFIG_TEST_TRACKER}']\nstore_dir: ${KRAKENCTL_CONFIG_TEST_DIR}/agent\n")
	out, code, err := run(t, "config", "validate", "agent", file)
	require.NoError(t, err)
	require.Equal(t, 0, code)
	require.Equal(t, file+": valid agent config\n", out)

	doc := "store:\n  dir: ${KRAKENCTL_CONFIG_TEST_DIR}/origin\nbackends:\n  - namespace: .*\n    s3:\n" +
		"      bucket: b\n      access_key_id: AKIAEXAMPLE\n      secret_access_key_file: " + keyFile + "\n"
	file = writeFile(t, dir, "origin.yaml", doc)
	_, code, err = run(t, "config", "validate", "origin", file)
	require.NoError(t, err)
	require.Equal(t, 0, code)

	// What serve reads: the secret from the file, less its newline.
	var cfg origin.Config
	require.NoError(t, roleconfig.Load(file, &cfg))
	require.Equal(t, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", cfg.Backends[0].S3.SecretAccessKey)
	require.Equal(t, dir+"/origin", cfg.Store.Dir)
}
