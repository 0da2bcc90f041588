package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/nodeconfig"
)

// doctorReport is what `krakenctl doctor -o json` prints.
type doctorReport struct {
	OK     bool `json:"ok"`
	Checks []struct {
		Check  string `json:"check"`
		Status string `json:"status"`
		Found  string `json:"found"`
		Fix    string `json:"fix"`
	} `json:"checks"`
}

// isolatedEnv keeps a command away from this machine's dev up endpoints file and agent.
func isolatedEnv(t *testing.T) []string {
	t.Helper()
	home := t.TempDir()
	return []string{"HOME=" + home, "XDG_STATE_HOME=" + filepath.Join(home, "state"), "KRAKENCTL_AGENT="}
}

// TestDoctorDevUp: on a dev up --tls cluster, with containerd's hosts.toml written by `agent
// containerd-config`, every check of doctor is ok and it exits 0; the TLS check verifies the
// agent's certificate against the cluster CA.
func TestDoctorDevUp(t *testing.T) {
	t.Parallel()
	c := devUp(t, 1, "--tls")
	require.NotNil(t, c.ep.TLS)
	env := isolatedEnv(t)
	hosts := t.TempDir()
	out := runCmd(t, env, bin, "agent", "containerd-config", "--dir", hosts, "--registry", "docker.io,ghcr.io",
		"--agent", c.ep.Agents[0], "--ca-file", c.ep.TLS.CAFile)
	assert.Contains(t, out, "created "+filepath.Join(hosts, "ghcr.io", "hosts.toml"))

	out = runCmd(t, env, bin, "doctor", "--endpoints-file", filepath.Join(c.dir, "endpoints.yaml"),
		"--containerd-dir", hosts, "--store-dir", filepath.Join(c.dir, "state", "agent-0"), "-o", "json")
	var rep doctorReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	assert.True(t, rep.OK)
	seen := map[string]bool{}
	for _, r := range rep.Checks {
		seen[r.Check] = true
		assert.Equal(t, "ok", r.Status, "%s: %s (fix: %s)", r.Check, r.Found, r.Fix)
	}
	for _, check := range []string{"agent", "agent ready", "trackers", "origins", "build-index", "clock", "disk", "containerd", "tls"} {
		assert.True(t, seen[check], "doctor ran the %s check", check)
	}
}

// TestDoctorNothingInstalled: on a node without an agent or containerd configuration, doctor
// says what is missing and how to get it, and exits 1.
func TestDoctorNothingInstalled(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())
	ctrd := filepath.Join(t.TempDir(), "certs.d")

	out, err := tryCmd(t, isolatedEnv(t), bin, "doctor", "--agent", dead, "--containerd-dir", ctrd, "-o", "json")
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 1, ee.ExitCode(), "a FAIL exits 1")
	var rep doctorReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	assert.False(t, rep.OK)
	got := map[string]string{}
	for _, r := range rep.Checks {
		got[r.Check] = r.Status + ": " + r.Found + " / " + r.Fix
	}
	assert.Regexp(t, `^FAIL: nothing answers at `+dead+`.* / start the agent`, got["agent"])
	assert.Regexp(t, `^FAIL: `+ctrd+` does not exist / run .krakenctl agent containerd-config`, got["containerd"])
	assert.Regexp(t, `^FAIL: no trackers known`, got["trackers"])

	// Usage errors exit 2.
	_, err = tryCmd(t, isolatedEnv(t), bin, "doctor", "--endpoints-file", filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 2, ee.ExitCode())
}

// TestContainerdConfigMirror is TestContainerdMirror with the hosts.toml that `krakenctl agent
// containerd-config --no-fallback` writes: containerd pulls the image through the agent.
func TestContainerdConfigMirror(t *testing.T) {
	t.Parallel()
	ctr, address := needContainerd(t)
	c := devUp(t, 1)
	containerdMirrorWith(t, ctr, address, c, "-cfg", func(hosts, _, agent, caFile string) {
		args := []string{"agent", "containerd-config", "--dir", hosts, "--registry", "docker.io", "--agent", agent, "--no-fallback"}
		if caFile != "" {
			args = append(args, "--ca-file", caFile)
		}
		runCmd(t, isolatedEnv(t), bin, args...)
		h, err := nodeconfig.ReadHosts(hosts)
		require.NoError(t, err)
		require.Len(t, h, 1)
		require.True(t, h[0].PullsThrough(agent))
	})
}

// TestContainerdConfigRefuses: a registry name that is not host[:port] is a usage error
// naming it, and nothing is written.
func TestContainerdConfigRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, err := tryCmd(t, isolatedEnv(t), bin, "agent", "containerd-config", "--dir", dir, "--registry", "docker.io,../../etc")
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, out)
	assert.Equal(t, 2, ee.ExitCode())
	assert.Contains(t, err.Error(), `"../../etc"`)
	entries, rerr := os.ReadDir(dir)
	require.NoError(t, rerr)
	assert.Empty(t, entries)
}
