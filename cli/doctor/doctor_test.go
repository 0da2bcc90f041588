package doctor

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/doctor"
	"github.com/krakenctl/krakenctl/server/nodeconfig"
)

// role answers /health and /readyz like a krakenctl role.
func role(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func fakeDeps(c *http.Client) doctor.Deps {
	d := doctor.DefaultDeps(c)
	d.Statfs = func(string) (doctor.Disk, error) { return doctor.Disk{Total: 100 << 30, Free: 50 << 30}, nil }
	d.DialTLS = func(context.Context, string, *tls.Config) (tls.ConnectionState, error) {
		return tls.ConnectionState{}, errors.New("not used")
	}
	return d
}

// runDoctor runs `krakenctl doctor ARGS` with env and returns stdout and the error.
func runDoctor(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	ios, _, out, _ := iostreams.Test()
	f := &cmdutil.Factory{IOStreams: ios, HTTPClient: func() *http.Client { return &http.Client{} }}
	cmd := NewCmdDoctor(f, func(ctx context.Context, o *Options) error {
		o.Env = func(k string) string { return env[k] }
		o.Deps = fakeDeps
		o.DefaultAgentConfig = filepath.Join(t.TempDir(), "absent.yaml")
		return run(ctx, o)
	})
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	err := cmd.Execute()
	return out.String(), err
}

func TestDoctorFromEndpointsFile(t *testing.T) {
	agent, admin := role(t), role(t)
	ep := filepath.Join(t.TempDir(), "endpoints.yaml")
	require.NoError(t, api.WriteEndpoints(ep, api.Endpoints{
		Origins: []string{role(t)}, Trackers: []string{role(t)}, BuildIndex: []string{role(t)},
		Agents: []string{agent}, Admin: &api.AdminEndpoints{Agents: []string{admin}},
	}))
	ctrd := t.TempDir()
	_, err := nodeconfig.WriteHosts(ctrd, nil, nodeconfig.Mirror{Agent: "http://" + agent, Fallback: true}, false)
	require.NoError(t, err)
	store := t.TempDir()

	out, err := runDoctor(t, nil, "--endpoints-file", ep, "--containerd-dir", ctrd, "--store-dir", store)
	require.NoError(t, err, out)
	assert.Contains(t, out, "All 10 checks ok.")
	assert.Contains(t, out, admin+" (admin) /readyz: ready", "the admin listener comes from the file, by the agent's position")

	out, err = runDoctor(t, nil, "--endpoints-file", ep, "--containerd-dir", ctrd, "--store-dir", store, "-o", "json")
	require.NoError(t, err)
	var rep Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.True(t, rep.OK)
	assert.Len(t, rep.Checks, 10)
}

func TestDoctorNothingInstalled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())
	env := map[string]string{"KRAKENCTL_AGENT": dead, "HOME": t.TempDir()}

	out, err := runDoctor(t, env, "--containerd-dir", filepath.Join(t.TempDir(), "certs.d"))
	require.ErrorIs(t, err, cmdutil.ErrSilent)
	assert.Equal(t, cmdutil.ExitError, cmdutil.ExitCode(err))
	assert.Regexp(t, `(?m)^FAIL  agent +nothing answers at `+dead, out)
	assert.Regexp(t, `(?m)^FAIL  containerd .* does not exist — fix: run .krakenctl agent containerd-config`, out)
	assert.Contains(t, out, "pulls through this node will fail")

	out, err = runDoctor(t, env, "-o", "json", "--containerd-dir", t.TempDir())
	require.ErrorIs(t, err, cmdutil.ErrSilent)
	var rep Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.False(t, rep.OK)
}

func TestDoctorAgentConfig(t *testing.T) {
	agent, admin, tracker := role(t), role(t), role(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	require.NoError(t, os.Mkdir(store, 0o755))
	_, agentPort, err := net.SplitHostPort(agent)
	require.NoError(t, err)
	cfgFile := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`listen: 0.0.0.0:`+agentPort+`
admin_listen: `+admin+`
peer_listen: 127.0.0.1:0
trackers: [`+tracker+`]
store_dir: `+store+`
capacity: 1GiB
`), 0o644))
	ctrd := t.TempDir()
	_, err = nodeconfig.WriteHosts(ctrd, nil, nodeconfig.Mirror{Agent: "http://" + agent, Fallback: true}, false)
	require.NoError(t, err)

	out, err := runDoctor(t, nil, "--agent-config", cfgFile, "--containerd-dir", ctrd, "-o", "json")
	require.NoError(t, err, out)
	var rep Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	got := map[string]doctor.Result{}
	for _, r := range rep.Checks {
		got[r.Check] = r
	}
	assert.Equal(t, doctor.OK, got["agent"].Status, "listen on every interface is reached on loopback: %+v", got["agent"])
	assert.Contains(t, got["agent ready"].Found, admin)
	assert.Equal(t, doctor.OK, got["trackers"].Status)
	assert.Equal(t, doctor.Warn, got["origins"].Status, "an agent config names no origins")
	assert.Contains(t, got["disk"].Found, "of 1.0 GiB")

	_, err = runDoctor(t, nil, "--agent-config", filepath.Join(dir, "missing.yaml"))
	require.Error(t, err)
	_, err = runDoctor(t, nil, "--endpoints-file", filepath.Join(dir, "missing.yaml"))
	assert.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
	_, err = runDoctor(t, nil, "-o", "yaml")
	assert.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
}
