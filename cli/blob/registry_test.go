package blob

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/proxy"
)

// authProxy starts an origin, a build-index node and a proxy with auth on (users pusher and
// reader, as in the proxy's tests), and returns the proxy's address once it is ready.
func authProxy(t *testing.T, mode string) string {
	t.Helper()
	c := clustertest.Start(t, cluster.Spec{
		Origins: 1, Replicas: 1, BuildIndexes: 1,
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{})
	line := func(user, pw string) string {
		l, err := auth.HtpasswdLine(user, pw, bcrypt.MinCost)
		require.NoError(t, err)
		return l
	}
	i, err := c.AddProxy(func(pc *proxy.Config) {
		pc.OriginHealth = proxy.HealthConfig{Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond}
		pc.Auth = &auth.Config{
			Mode:     mode,
			Htpasswd: line("pusher", "pusher-pw") + line("reader", "reader-pw"),
			Rules: []auth.Rule{
				{Repositories: []string{"**"}, Users: []string{"pusher"}, Actions: []string{"pull", "push", "delete"}},
				{Repositories: []string{"team/**"}, Users: []string{"reader"}, Actions: []string{"pull"}},
			},
		}
	})
	require.NoError(t, err)
	addr := c.Addr(cluster.Proxy, i)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	require.Eventually(t, func() bool {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/readyz", nil)
		if err != nil {
			return false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 10*time.Millisecond, "proxy ready")
	return addr
}

// run runs push or pull as the root command would, with stdin, and returns stdout.
func run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	d, in, out, _ := testDeps(t)
	in.WriteString(stdin)
	f := &cmdutil.Factory{IOStreams: d.IO, HTTPClient: d.HTTPClient, Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) }}
	cmd := NewCmdPush(f, nil)
	if args[0] == "pull" {
		cmd = NewCmdPull(f, nil)
	}
	cmd.SetArgs(args[1:])
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

// TestPushPullThroughRegistry: push and pull talk the distribution API to the proxy with
// credentials from --username/--password-stdin, in both auth modes; without credentials, with
// a wrong password, or as a user the rules refuse, they fail saying what to do.
func TestPushPullThroughRegistry(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{auth.ModeToken, auth.ModeBasic} {
		addr := authProxy(t, mode)
		path, data := writeRandomFile(t, 3<<20)
		reg := []string{"--registry", "http://" + addr, "--namespace", "team/app"}

		out, err := run(t, "pusher-pw\n", append([]string{"push", path, "--username", "pusher", "--password-stdin", "-o", "json"}, reg...)...)
		require.NoError(t, err, mode)
		var res RegistryPushResult
		require.NoError(t, json.Unmarshal([]byte(out), &res))
		require.Equal(t, RegistryPushResult{Digest: digest.Digest(sha(data)), Size: int64(len(data)), Registry: addr, Repository: "team/app"}, res)

		dst := filepath.Join(t.TempDir(), "out.bin")
		_, err = run(t, "reader-pw", append([]string{"pull", sha(data), "--file", dst, "--username", "reader", "--password-stdin"}, reg...)...)
		require.NoError(t, err, mode)
		got, err := os.ReadFile(dst)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got), mode)

		_, err = run(t, "", append([]string{"pull", sha(data), "--file", dst}, reg...)...)
		require.ErrorContains(t, err, "wants credentials: `docker login "+addr+"`", mode)
		_, err = run(t, "nope", append([]string{"push", path, "--username", "pusher", "--password-stdin"}, reg...)...)
		require.ErrorContains(t, err, "refused user pusher: check the password", mode)
		other, _ := writeRandomFile(t, 1000)
		_, err = run(t, "reader-pw", append([]string{"push", other, "--username", "reader", "--password-stdin"}, reg...)...)
		require.ErrorContains(t, err, "does not allow this user to do that", mode)
		_, err = run(t, "reader-pw", "pull", digest.FromString("missing").String(), "--file", dst,
			"--registry", "http://"+addr, "--namespace", "team/app", "--username", "reader", "--password-stdin")
		require.ErrorContains(t, err, "not found in repository team/app of registry "+addr, mode)
		got, err = os.ReadFile(dst)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got), "a failed pull leaves the file as it was")
	}
}

// TestRegistryFromDockerConfig: without --username, the credentials `docker login` stored in
// Docker's config.json for the registry's host are used. Not parallel: it sets DOCKER_CONFIG.
func TestRegistryFromDockerConfig(t *testing.T) {
	addr := authProxy(t, auth.ModeToken)
	dir := t.TempDir()
	cfg := `{"auths":{"` + addr + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("pusher:pusher-pw")) + `"}}}`
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600))
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv(cmdutil.EnvRegistry, "http://"+addr)

	path, data := writeRandomFile(t, 100<<10)
	out, err := run(t, "", "push", path, "--namespace", "team/app")
	require.NoError(t, err)
	require.Equal(t, sha(data)+"\n", out)
	out, err = run(t, "", "pull", sha(data), "-O", "-", "--namespace", "team/app")
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, []byte(out)))

	// Another host's credentials are not sent.
	cfg = strings.Replace(cfg, addr, "other.example:5000", 1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600))
	_, err = run(t, "", "pull", sha(data), "-O", "-", "--namespace", "team/app")
	require.ErrorContains(t, err, "wants credentials")
}

func TestRegistryFlagsConflict(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"push", "f", "--registry", "h:1", "--origins", "o:1"},
		{"push", "-", "--registry", "h:1", "--username", "u", "--password-stdin"},
		{"push", "f", "--username", "u", "--password-stdin"},
		{"pull", hex64, "--registry", "h:1", "--agent", "a:1"},
		{"pull", hex64, "--registry", "h:1", "--from-origins"},
	} {
		_, err := run(t, "pw", args...)
		require.Error(t, err, "%v", args)
		require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err), "%v: %v", args, err)
	}
}
