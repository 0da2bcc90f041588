package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
)

// TestImage builds the container image with scripts/image.sh (this machine's platform, a tag
// and a version of its own), loads it into the Docker daemon and runs it there the ways a
// cluster does: `version`; `dev up` with the host's network, a blob pushed and pulled through
// it by the host's krakenctl; `serve origin` with a mounted config, answering /health and
// storing a blob in the image's state directory; as uid 65532 and without a shell. The
// containers and the image are removed at the end.
func TestImage(t *testing.T) {
	t.Parallel()
	d := newDockerCLI(t)
	suffix := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	tag, version := "krakenctl:e2e-"+suffix, "v0.0.0-e2e-"+suffix
	out := t.TempDir()
	build := exec.Command("scripts/image.sh", "build", "--platform", "linux/"+runtime.GOARCH, "--tag", tag, "--out", out)
	build.Dir = filepath.Join("..", "..")
	build.Env = append(append(os.Environ(), d.env...), "VERSION="+version)
	b, err := build.CombinedOutput()
	// Registered before the check: a failed load may still have tagged the image.
	t.Cleanup(func() { d.cleanup("image", "rm", "--force", tag) })
	require.NoError(t, err, "scripts/image.sh build:\n%s", b)
	require.True(t, d.present(tag), "scripts/image.sh did not load %s:\n%s", tag, b)

	t.Run("version", func(t *testing.T) {
		var v struct{ Version, Platform string }
		require.NoError(t, json.Unmarshal([]byte(d.run("run", "--rm", tag, "version", "-o", "json")), &v))
		require.Equal(t, version, v.Version, "the version linked in by image.sh")
		require.Equal(t, "linux/"+runtime.GOARCH, v.Platform)
	})

	t.Run("non-root without a shell", func(t *testing.T) {
		var cfg struct {
			User       string
			Entrypoint []string
			Labels     map[string]string
		}
		require.NoError(t, json.Unmarshal([]byte(d.run("image", "inspect", "--format", "{{json .Config}}", tag)), &cfg))
		require.Equal(t, "65532:65532", cfg.User)
		require.Equal(t, []string{"/krakenctl"}, cfg.Entrypoint)
		require.Equal(t, version, cfg.Labels["org.opencontainers.image.version"])
		require.Equal(t, "krakenctl", cfg.Labels["org.opencontainers.image.title"])
		for _, k := range []string{"description", "source", "revision", "created", "licenses"} {
			require.NotEmpty(t, cfg.Labels["org.opencontainers.image."+k], k)
		}
		_, err := tryCmd(t, d.env, "docker", "run", "--rm", "--entrypoint", "/bin/sh", tag, "-c", "true")
		require.ErrorContains(t, err, "/bin/sh: no such file or directory", "the image has no shell")
	})

	t.Run("dev up", func(t *testing.T) {
		// The container writes its endpoints file here as uid 65532; its state stays in the
		// image's /var/lib/krakenctl, which must be writable by that user.
		dir := t.TempDir()
		require.NoError(t, os.Chmod(dir, 0o777))
		id := d.start(t, "-v", dir+":/out", tag, "dev", "up", "--port", "0", "--agents", "1",
			"--endpoints-file", "/out/endpoints.yaml")
		file := filepath.Join(dir, "endpoints.yaml")
		var ep api.Endpoints
		d.waitFor(t, id, "dev up's endpoints file", func() bool {
			var rerr error
			ep, rerr = api.ReadEndpoints(file)
			return rerr == nil
		})
		require.Len(t, ep.Agents, 1)

		blob := filepath.Join(t.TempDir(), "blob")
		data := randomBytes(t, 3<<20+5)
		require.NoError(t, os.WriteFile(blob, data, 0o600))
		dg := strings.TrimSpace(runCmd(t, nil, bin, "push", blob, "--endpoints-file", file))
		got := filepath.Join(t.TempDir(), "got")
		runCmd(t, nil, bin, "pull", dg, "--agent", ep.Agents[0], "--file", got)
		gotData, err := os.ReadFile(got)
		require.NoError(t, err)
		require.Equal(t, data, gotData, "the blob pulled through the container's agent")
		d.stop(t, id)
	})

	t.Run("serve origin", func(t *testing.T) {
		listen, admin := freeAddr(t), freeAddr(t)
		cfgDir := t.TempDir()
		require.NoError(t, os.Chmod(cfgDir, 0o755))
		cfg := fmt.Sprintf(`listen: %s
admin_listen: %s
store:
  dir: /var/lib/krakenctl/store
ring:
  members: [%s]
backends:
  - namespace: ".*"
    fs:
      root: /var/lib/krakenctl/backend
`, listen, admin, listen)
		require.NoError(t, os.WriteFile(filepath.Join(cfgDir, "origin.yaml"), []byte(cfg), 0o644))
		id := d.start(t, "-v", cfgDir+":/etc/krakenctl:ro", tag, "serve", "origin", "--config", "/etc/krakenctl/origin.yaml")
		d.waitFor(t, id, "the origin's /health", func() bool {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+admin+"/health", nil)
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			_ = resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})

		blob := filepath.Join(t.TempDir(), "blob")
		data := randomBytes(t, 1<<20+7)
		require.NoError(t, os.WriteFile(blob, data, 0o600))
		dg := strings.TrimSpace(runCmd(t, nil, bin, "push", blob, "--origins", listen))
		got := filepath.Join(t.TempDir(), "got")
		runCmd(t, nil, bin, "pull", dg, "--origins", listen, "--file", got)
		gotData, err := os.ReadFile(got)
		require.NoError(t, err)
		require.Equal(t, data, gotData, "the blob stored by the containerised origin")
		d.stop(t, id)
	})
}

// start runs a detached container of args on the host's network (roles listen on loopback)
// and returns its ID. It is removed when t ends, its log shown first if t failed.
func (d *dockerCLI) start(t *testing.T, args ...string) string {
	t.Helper()
	id := strings.TrimSpace(runCmd(t, d.env, "docker", append([]string{"run", "-d", "--network", "host"}, args...)...))
	t.Cleanup(func() {
		if t.Failed() {
			logs := exec.Command("docker", "logs", "--tail", "60", id)
			logs.Env = append(os.Environ(), d.env...)
			b, _ := logs.CombinedOutput() // only shown: the test already failed
			t.Logf("container %s (last 60 lines):\n%s", id[:12], b)
		}
		d.cleanup("rm", "--force", "--volumes", id)
	})
	return id
}

// waitFor polls ok until it holds, failing when the container id exits first or after two
// minutes.
func (d *dockerCLI) waitFor(t *testing.T, id, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !ok() {
		running, err := tryCmd(t, d.env, "docker", "inspect", "--format", "{{.State.Running}}", id)
		require.NoError(t, err)
		require.Equal(t, "true", strings.TrimSpace(running), "the container exited before %s", what)
		require.True(t, time.Now().Before(deadline), "no %s within 2 minutes", what)
		time.Sleep(100 * time.Millisecond)
	}
}

// stop stops container id with SIGTERM, as the kubelet does, and expects a clean exit.
func (d *dockerCLI) stop(t *testing.T, id string) {
	t.Helper()
	runCmd(t, d.env, "docker", "stop", "--time", "60", id)
	require.Equal(t, "0", strings.TrimSpace(runCmd(t, d.env, "docker", "inspect", "--format", "{{.State.ExitCode}}", id)),
		"exit status after SIGTERM")
}

// cleanup runs a docker command from a t.Cleanup, where the test's context is already
// cancelled; a failure is only reported, so every other cleanup still runs.
func (d *dockerCLI) cleanup(args ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), d.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		d.t.Errorf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
