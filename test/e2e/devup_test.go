package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
)

// devCluster is one `krakenctl dev up` process: origins, a build-index, a tracker, the registry
// proxy and agents, on ephemeral loopback ports, as a newcomer runs it.
type devCluster struct {
	t      *testing.T
	dir    string
	out    string // the process's stderr
	stdout string // the process's stdout: the summary
	cmd    *exec.Cmd
	exited chan struct{}
	ep     api.Endpoints
	// user and password are the proxy's login (dev up --tls), read from the summary by login;
	// empty while the proxy asks for none.
	user, password string
}

// proxy is the registry proxy's address, where images are pushed.
func (c *devCluster) proxy() string {
	c.t.Helper()
	require.NotEmpty(c.t, c.ep.Proxy, "dev up wrote no proxy to its endpoints file")
	return c.ep.Proxy[0]
}

// devUp starts `krakenctl dev up --port 0 --agents N` and returns once it wrote its endpoints
// file, which it does when every role is ready. The cluster is stopped with SIGTERM when the
// test ends, and must then exit cleanly; when the test failed, its output and log are logged.
// extra are more flags of dev up (--tls).
func devUp(t *testing.T, agents int, extra ...string) *devCluster {
	t.Helper()
	dir := t.TempDir()
	c := &devCluster{t: t, dir: dir, out: filepath.Join(dir, "out.log"), stdout: filepath.Join(dir, "stdout.log"), exited: make(chan struct{})}
	out, err := os.Create(c.out)
	require.NoError(t, err)
	stdout, err := os.Create(c.stdout)
	require.NoError(t, err)
	file := filepath.Join(dir, "endpoints.yaml")
	args := []string{"dev", "up", "--port", "0", "--agents", fmt.Sprint(agents),
		"--dir", filepath.Join(dir, "state"), "--endpoints-file", file, "--log-level", "info"}
	c.cmd = exec.Command(bin, append(args, extra...)...)
	c.cmd.Stdout, c.cmd.Stderr = stdout, out
	require.NoError(t, c.cmd.Start())
	go func() { _ = c.cmd.Wait(); _ = out.Close(); _ = stdout.Close(); close(c.exited) }()
	t.Cleanup(c.stop)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})

	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-c.exited:
			b, _ := os.ReadFile(c.out)
			t.Fatalf("dev up exited before it was ready (%v):\n%s", c.cmd.ProcessState, b)
		default:
		}
		if e, err := api.ReadEndpoints(file); err == nil {
			c.ep = e
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev up did not write %s within 2 minutes", file)
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.Len(t, c.ep.Agents, agents, "agents in the endpoints file")
	return c
}

// devSummary is what `dev up -o json` prints about the proxy's login.
type devSummary struct {
	Username     string `json:"username"`
	Password     string `json:"password"`
	PasswordFile string `json:"password_file"`
}

// login reads the proxy's login from the summary of a dev up started with -o json (printed
// just after the endpoints file is written), as a script does with jq, and checks that it is
// the password file's, which only its owner may read.
func (c *devCluster) login() {
	t := c.t
	t.Helper()
	var sum devSummary
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(c.stdout)
		return err == nil && json.Unmarshal(b, &sum) == nil
	}, time.Minute, 20*time.Millisecond, "dev up -o json printed no summary")
	require.Equal(t, "dev", sum.Username)
	require.GreaterOrEqual(t, len(sum.Password), 20, "a password of 20 characters or more")
	pw, err := os.ReadFile(sum.PasswordFile)
	require.NoError(t, err)
	require.Equal(t, sum.Password, string(pw))
	st, err := os.Stat(sum.PasswordFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the password file is its owner's alone")
	c.user, c.password = sum.Username, sum.Password
}

// stop sends SIGTERM (what Ctrl-C does) and expects a clean exit.
func (c *devCluster) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Errorf("signal dev up: %v", err)
		return
	}
	select {
	case <-c.exited:
	case <-time.After(time.Minute):
		_ = c.cmd.Process.Kill()
		<-c.exited
		c.t.Errorf("dev up did not stop within a minute of SIGTERM")
		return
	}
	if !c.cmd.ProcessState.Success() {
		c.t.Errorf("dev up exited with %v after SIGTERM", c.cmd.ProcessState)
	}
}

func (c *devCluster) dumpLogs() {
	for _, p := range []string{c.stdout, c.out, filepath.Join(c.dir, "state", "dev.log")} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		c.t.Logf("%s (last 8 KiB):\n%s", p, tail(b, 8<<10))
	}
}

// requireReal skips the test with msg, or fails it when KRAKENCTL_REQUIRE_REAL_SERVERS=1 (as
// scripts/test.sh sets), so that CI cannot pass by skipping.
func requireReal(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("KRAKENCTL_REQUIRE_REAL_SERVERS") == "1" {
		t.Fatal(msg + " (KRAKENCTL_REQUIRE_REAL_SERVERS=1 forbids skipping)")
	}
	t.Skip(msg)
}

// needDocker skips (or fails, see requireReal) unless DOCKER_HOST names a daemon, as
// scripts/docker-up.sh start exports it.
func needDocker(t *testing.T) {
	t.Helper()
	if os.Getenv("DOCKER_HOST") == "" {
		requireReal(t, `DOCKER_HOST is not set: start a daemon with eval "$(scripts/docker-up.sh start)"`)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		requireReal(t, "no docker client on PATH: run scripts/install-test-deps.sh")
	}
}

// needCommand skips (or fails, see requireReal) unless name is on PATH.
func needCommand(t *testing.T, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		requireReal(t, fmt.Sprintf("%s is not on PATH: %s", name, hint))
	}
	return p
}

var tools sync.Map // package path -> *toolBuild

type toolBuild struct {
	once sync.Once
	path string
	err  error
}

// goTool builds a Go tool pinned in go.mod (`go tool NAME`) once for the package, next to the
// krakenctl binary, and returns its path.
func goTool(t *testing.T, pkg string) string {
	t.Helper()
	v, _ := tools.LoadOrStore(pkg, &toolBuild{})
	b := v.(*toolBuild)
	b.once.Do(func() {
		b.path = filepath.Join(filepath.Dir(bin), filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	})
	require.NoError(t, b.err)
	return b.path
}

// runCmd runs a command and returns its stdout; it fails the test, with stderr, if it fails.
func runCmd(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := tryCmd(t, env, name, args...)
	require.NoError(t, err)
	return out
}

// tryCmd runs a command with a timeout and returns its stdout, or an error holding its stderr.
func tryCmd(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	return tryCmdIn(t, env, nil, name, args...)
}

// runCmdIn is runCmd with stdin (a password for --password-stdin).
func runCmdIn(t *testing.T, env []string, stdin string, name string, args ...string) string {
	t.Helper()
	out, err := tryCmdIn(t, env, strings.NewReader(stdin), name, args...)
	require.NoError(t, err)
	return out
}

// tryCmdIn is tryCmd with stdin; nil is no input.
func tryCmdIn(t *testing.T, env []string, stdin io.Reader, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s %s (%s)", filepath.Base(name), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || ctx.Err() != nil {
			return stdout.String(), fmt.Errorf("%s %s: %w\nstderr:\n%s\nstdout:\n%s", name, strings.Join(args, " "), err, stderr.String(), tail(stdout.Bytes(), 4<<10))
		}
		return stdout.String(), fmt.Errorf("%s: %w", name, err)
	}
	return stdout.String(), nil
}
