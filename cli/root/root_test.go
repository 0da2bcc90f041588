package root_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/cli/root"
	"github.com/krakenctl/krakenctl/cli/version"
)

// mainArgsEnv makes the test binary act as krakenctl: TestMain runs root.Main with these
// (JSON-encoded) arguments and exits with its code, so tests can check real exit codes and
// what reaches stderr.
const mainArgsEnv = "KRAKENCTL_ROOT_TEST_MAIN_ARGS"

func TestMain(m *testing.M) {
	if raw, ok := os.LookupEnv(mainArgsEnv); ok {
		var args []string
		if err := json.Unmarshal([]byte(raw), &args); err != nil {
			panic(err)
		}
		os.Args = append([]string{"krakenctl"}, args...)
		os.Exit(root.Main())
	}
	os.Exit(m.Run())
}

// runMain runs krakenctl's Main in a child process and returns its outputs and exit code.
func runMain(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runMainEnv(t, nil, args...)
}

// runMainEnv is runMain with env ("KEY=value") added to the process's environment.
func runMainEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	raw, err := json.Marshal(args)
	require.NoError(t, err)
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), env...), mainArgsEnv+"="+string(raw))
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return out.String(), errOut.String(), exitErr.ExitCode()
	}
	require.NoError(t, err, "run krakenctl %q", args)
	return out.String(), errOut.String(), 0
}

func testFactory() (*cmdutil.Factory, *bytes.Buffer, *bytes.Buffer) {
	ios, _, out, errOut := iostreams.Test()
	return &cmdutil.Factory{
		IOStreams:  ios,
		HTTPClient: func() *http.Client { return &http.Client{} },
		Logger:     func() *slog.Logger { return slog.New(slog.DiscardHandler) },
		Version:    "1.2.3-test",
	}, out, errOut
}

// execute runs the command tree in-process with args.
func execute(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	f, out, errOut := testFactory()
	cmd := root.NewCmdRoot(f)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

// walk calls fn for cmd and every command below it, hidden ones included.
func walk(cmd *cobra.Command, fn func(*cobra.Command)) {
	fn(cmd)
	for _, c := range cmd.Commands() {
		walk(c, fn)
	}
}

func TestCommandTreeIsDocumented(t *testing.T) {
	t.Parallel()
	f, _, _ := testFactory()
	cmd := root.NewCmdRoot(f)
	// cobra adds these two on Execute; document-check them like the rest.
	cmd.InitDefaultHelpCmd()
	cmd.InitDefaultCompletionCmd()

	seen := map[string]bool{}
	count := 0
	walk(cmd, func(c *cobra.Command) {
		count++
		path := c.CommandPath()
		require.False(t, seen[path], "command %q is defined twice", path)
		seen[path] = true
		require.NotEmpty(t, c.Use, "%s: empty Use", path)
		require.NotEmpty(t, c.Short, "%s: no Short help", path)
		require.False(t, strings.HasSuffix(c.Short, "."), "%s: Short help %q ends with a period", path, c.Short)
		require.True(t, unicode.IsUpper([]rune(c.Short)[0]), "%s: Short help %q does not start with a capital", path, c.Short)
		c.LocalFlags().VisitAll(func(fl *pflag.Flag) {
			require.NotEmpty(t, fl.Usage, "%s: flag --%s has no usage text", path, fl.Name)
		})
		if c.HasParent() && c.Parent() == cmd && !c.Hidden {
			switch c.Name() {
			case "help", "completion", "version":
			default:
				require.NotEmpty(t, c.GroupID, "%s: top-level command has no help group", path)
			}
		}
	})
	// krakenctl, serve, serve origin, version, man, help, completion and its four shells.
	require.GreaterOrEqual(t, count, 11, "command tree has fewer commands than expected")
	for _, want := range []string{"krakenctl version", "krakenctl man", "krakenctl serve", "krakenctl completion bash"} {
		require.True(t, seen[want], "missing command %q", want)
	}
}

func TestHelpListsGroupsAndHidesMan(t *testing.T) {
	t.Parallel()
	out, _, err := execute(t, "--help")
	require.NoError(t, err)
	require.Contains(t, out, "Server roles:")
	require.Regexp(t, `(?m)^\s+serve\s+Run a server role`, out)
	require.Regexp(t, `(?m)^\s+version\s`, out)
	require.NotRegexp(t, `(?m)^\s+man\s`, out, "the man command is hidden")
}

func TestVersionJSON(t *testing.T) {
	t.Parallel()
	out, _, err := execute(t, "version", "-o", "json")
	require.NoError(t, err)
	var info version.Info
	require.NoError(t, json.Unmarshal([]byte(out), &info), "output: %q", out)
	require.Equal(t, "1.2.3-test", info.Version)
	require.NotEmpty(t, info.GoVersion)
	require.Contains(t, info.Platform, "/")
}

func TestUsageErrorsExitTwo(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"version", "-o", "yaml"},
		{"version", "--no-such-flag"},
		{"man"},
	} {
		_, _, err := execute(t, args...)
		require.Error(t, err, "krakenctl %q", args)
		require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err), "krakenctl %q: %v", args, err)
	}
}

// TestStrayArgumentsAreUsageErrors: every command's check of its positional arguments fails
// as a usage error (exit 2), not as a failed operation.
func TestStrayArgumentsAreUsageErrors(t *testing.T) {
	t.Parallel()
	f, _, _ := testFactory()
	checked := 0
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Args != nil {
			// Seven words fit no command's arguments.
			if err := c.Args(c, strings.Fields("a b c d e f g")); err != nil {
				checked++
				require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err), "%s: %v", c.CommandPath(), err)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root.NewCmdRoot(f))
	require.Greater(t, checked, 20, "most commands check their arguments")

	_, stderr, code := runMain(t, "doctor", "stray")
	require.Equal(t, cmdutil.ExitUsage, code, "stderr: %s", stderr)
	require.Contains(t, stderr, "Run 'krakenctl doctor --help' for usage.")
}

func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	for shell, marker := range map[string]string{
		"bash":       "__start_krakenctl",
		"zsh":        "#compdef krakenctl",
		"fish":       "complete -c krakenctl",
		"powershell": "Register-ArgumentCompleter",
	} {
		out, _, err := execute(t, "completion", shell)
		require.NoError(t, err, shell)
		require.Contains(t, out, marker, "completion %s", shell)
	}
}

func TestCompletesOutputFormats(t *testing.T) {
	t.Parallel()
	out, _, err := execute(t, cobra.ShellCompRequestCmd, "version", "-o", "")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Equal(t, []string{"table", "json", ":4"}, lines) // 4 = ShellCompDirectiveNoFileComp
}

func TestMainExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args       []string
		code       int
		stdout     string
		stderrHave []string
	}{
		{args: []string{"version"}, code: 0, stdout: "krakenctl "},
		{args: []string{"--help"}, code: 0, stdout: "Server roles:"},
		{
			args: []string{"version", "-o", "yaml"}, code: cmdutil.ExitUsage,
			stderrHave: []string{`krakenctl: invalid --output "yaml"`, "Run 'krakenctl version --help' for usage."},
		},
		{
			args: []string{"version", "--no-such-flag"}, code: cmdutil.ExitUsage,
			stderrHave: []string{"unknown flag: --no-such-flag", "Run 'krakenctl version --help' for usage."},
		},
		{args: []string{"man"}, code: cmdutil.ExitUsage, stderrHave: []string{"--dir is required"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runMain(t, tt.args...)
			require.Equal(t, tt.code, code, "stdout: %s\nstderr: %s", stdout, stderr)
			require.Contains(t, stdout, tt.stdout)
			for _, want := range tt.stderrHave {
				require.Contains(t, stderr, want)
			}
			if tt.code == 0 {
				require.Empty(t, stderr)
			}
		})
	}
}

func TestMainUnknownCommandFails(t *testing.T) {
	t.Parallel()
	_, stderr, code := runMain(t, "no-such-command")
	require.Equal(t, cmdutil.ExitUsage, code)
	require.Contains(t, stderr, `unknown command "no-such-command"`)
	_, stderr, code = runMain(t, "agent", "no-such-command")
	require.Equal(t, cmdutil.ExitUsage, code, "stderr: %s", stderr)
}

func TestMainReportsVersion(t *testing.T) {
	t.Parallel()
	stdout, _, code := runMain(t, "version", "-o", "json")
	require.Equal(t, 0, code)
	var info version.Info
	require.NoError(t, json.NewDecoder(strings.NewReader(stdout)).Decode(&info))
	require.NotEmpty(t, info.Version, "a build without -X buildVersion still reports a version")
}

// TestMainConfigValidate runs `krakenctl config validate` as a process: a bad file exits 2
// with every problem on its own line, and no "--help" hint (the file is wrong, not the usage).
func TestMainConfigValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "tracker.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("listen: 127.0.0.1:16102\nmax_peer: 3\n"), 0o600))
	stdout, stderr, code := runMain(t, "config", "validate", "tracker", bad)
	require.Equal(t, cmdutil.ExitUsage, code, "stderr: %s", stderr)
	require.Empty(t, stdout)
	require.Equal(t, "krakenctl: "+bad+": invalid config (3 problems):\n"+
		"  max_peer: line 2: field max_peer not found (did you mean max_peers?)\n"+
		"  origins: required (the blob API addresses of the origins)\n"+
		`  admin_listen: "127.0.0.1:16102" overlaps listen "127.0.0.1:16102": two listeners cannot bind the same port`+"\n", stderr)

	example, _, code := runMain(t, "config", "example", "tracker")
	require.Equal(t, 0, code)
	good := filepath.Join(dir, "good.yaml")
	require.NoError(t, os.WriteFile(good, []byte(example), 0o600))
	stdout, stderr, code = runMain(t, "config", "validate", "tracker", good)
	require.Equal(t, 0, code, "stderr: %s", stderr)
	require.Equal(t, good+": valid tracker config\n", stdout)

	_, stderr, code = runMain(t, "config", "validate", "nope", good)
	require.Equal(t, cmdutil.ExitUsage, code)
	require.Contains(t, stderr, `unknown role "nope"`)
}

// TestReleaseLdflagsNameTheseVariables keeps the release builds (goreleaser.yaml and
// scripts/image.sh) setting version, commit and build date through -X paths that exist: a
// renamed or misspelt variable makes -X a silent no-op.
func TestReleaseLdflagsNameTheseVariables(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("root.go")
	require.NoError(t, err)
	re := regexp.MustCompile(`-X (\S+)\.(\w+)=`)
	for _, file := range []string{"../../goreleaser.yaml", "../../scripts/image.sh"} {
		b, err := os.ReadFile(file)
		require.NoError(t, err)
		set := map[string]bool{}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			require.Equal(t, "github.com/krakenctl/krakenctl/cli/root", m[1], "%s: -X %s.%s", file, m[1], m[2])
			require.Regexp(t, `(?m)^\s+`+m[2]+`\s+= ""$`, string(src), "%s sets %s, which cli/root does not declare", file, m[2])
			set[m[2]] = true
		}
		for _, v := range []string{"buildVersion", "buildCommit", "buildDate"} {
			require.True(t, set[v], "%s does not set %s", file, v)
		}
	}
}

// TestMainReportsBuildInfo checks that the link-time values reach `version -o json`: the test
// binary is relinked with -X for each of them.
func TestMainReportsBuildInfo(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "krakenctl")
	pkg := "github.com/krakenctl/krakenctl/cli/root"
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "-ldflags",
		"-X "+pkg+".buildVersion=v9.9.9 -X "+pkg+".buildCommit=feedc0de -X "+pkg+".buildDate=2026-12-07T23:00:00Z",
		"github.com/krakenctl/krakenctl/cmd/krakenctl")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.CommandContext(t.Context(), bin, "version", "-o", "json").Output()
	require.NoError(t, err)
	var info version.Info
	require.NoError(t, json.Unmarshal(out, &info))
	require.Equal(t, "v9.9.9", info.Version)
	require.Equal(t, "feedc0de", info.Commit)
	require.Equal(t, "2026-12-07T23:00:00Z", info.BuildDate)
}
