package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/nodeconfig"
	"github.com/krakenctl/krakenctl/server/pki"
)

// runAgent runs `krakenctl agent ARGS` and returns its stdout and error.
func runAgent(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ios, _, out, _ := iostreams.Test()
	f := &cmdutil.Factory{IOStreams: ios, HTTPClient: func() *http.Client { return &http.Client{} }}
	cmd := NewCmdAgent(f)
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	err := cmd.Execute()
	return out.String(), err
}

func TestContainerdConfig(t *testing.T) {
	dir := t.TempDir()
	out, err := runAgent(t, "containerd-config", "--dir", dir, "--registry", "docker.io,ghcr.io", "--agent", "127.0.0.1:16010")
	require.NoError(t, err)
	assert.Contains(t, out, "created "+filepath.Join(dir, "docker.io", "hosts.toml"))
	assert.Contains(t, out, "created "+filepath.Join(dir, "ghcr.io", "hosts.toml"))
	hosts, err := nodeconfig.ReadHosts(dir)
	require.NoError(t, err)
	require.Len(t, hosts, 2)
	assert.Equal(t, "https://registry-1.docker.io", hosts[0].Server)
	assert.Equal(t, "https://ghcr.io", hosts[1].Server)
	assert.True(t, hosts[1].PullsThrough("127.0.0.1:16010"))

	out, err = runAgent(t, "containerd-config", "--dir", dir, "--registry", "docker.io", "--agent", "127.0.0.1:16010", "-o", "json")
	require.NoError(t, err)
	var files []nodeconfig.File
	require.NoError(t, json.Unmarshal([]byte(out), &files))
	require.Len(t, files, 1)
	assert.Equal(t, nodeconfig.Unchanged, files[0].Action, "a second run changes nothing")

	out, err = runAgent(t, "containerd-config", "--dir", dir, "--registry", "docker.io", "--agent", "127.0.0.1:16010", "--no-fallback", "--dry-run")
	require.NoError(t, err)
	assert.Contains(t, out, "would be updated")
	assert.Contains(t, out, `server = "http://127.0.0.1:16010"`)
	hosts, err = nodeconfig.ReadHosts(dir)
	require.NoError(t, err)
	assert.Equal(t, "https://registry-1.docker.io", hosts[0].Server, "a dry run writes nothing")

	_, err = runAgent(t, "containerd-config", "--dir", dir, "--registry", "docker.io", "--agent", "127.0.0.1:16010", "--fallback=false")
	require.NoError(t, err)
	hosts, err = nodeconfig.ReadHosts(dir)
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:16010", hosts[0].Server, "--fallback=false is --no-fallback")

	out, err = runAgent(t, "containerd-config", "--dir", dir, "--registry", "docker.io", "--ca-file", "/etc/krakenctl/ca.pem", "--dry-run")
	require.NoError(t, err)
	assert.Contains(t, out, `[host."https://127.0.0.1:16000"]`)
	assert.Contains(t, out, `ca = "/etc/krakenctl/ca.pem"`)
}

func TestContainerdConfigUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--registry", "docker.io,../../etc"}, `invalid --registry: invalid registry name "../../etc"`},
		{[]string{"--registry", "docker.io/library"}, `"docker.io/library"`},
		{[]string{"--agent", "127.0.0.1"}, "invalid --agent"},
		{[]string{"--fallback", "--no-fallback"}, "contradict"},
		{[]string{"-o", "yaml"}, "invalid --output"},
		{[]string{"--ca-from", "/etc/krakenctl/tls/ca.crt"}, "--ca-from needs --ca-file"},
	} {
		_, err := runAgent(t, append([]string{"containerd-config", "--dir", dir}, c.args...)...)
		require.Error(t, err, "%v", c.args)
		assert.Contains(t, err.Error(), c.want)
		assert.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err), "%v", c.args)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "a usage error writes nothing")
}

func TestContainerdConfigInstallsCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("cluster CA")
	require.NoError(t, err)
	src := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, os.WriteFile(src, ca.CertPEM(), 0o600))
	dst := filepath.Join(dir, "krakenctl-ca.crt")

	out, err := runAgent(t, "containerd-config", "--dir", dir, "--registry", "docker.io", "--no-fallback",
		"--ca-file", dst, "--ca-from", src, "-o", "json")
	require.NoError(t, err)
	var files []nodeconfig.File
	require.NoError(t, json.Unmarshal([]byte(out), &files))
	require.Len(t, files, 2)
	assert.True(t, files[0].CA)
	assert.Equal(t, dst, files[0].Path)
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	assert.Equal(t, ca.CertPEM(), got)
	hosts, err := nodeconfig.ReadHosts(dir)
	require.NoError(t, err)
	require.Len(t, hosts, 1)
	assert.Equal(t, "https://127.0.0.1:16000", hosts[0].Server)
	assert.Contains(t, files[1].Content, fmt.Sprintf("ca = %q", dst))

	// A file that is not a CA: nothing is written, the hosts.toml of before stays.
	bad := filepath.Join(t.TempDir(), "key.pem")
	require.NoError(t, os.WriteFile(bad, []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), 0o600))
	_, err = runAgent(t, "containerd-config", "--dir", dir, "--registry", "ghcr.io", "--ca-file", dst, "--ca-from", bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "PRIVATE KEY")
	_, err = os.Stat(filepath.Join(dir, "ghcr.io"))
	require.ErrorIs(t, err, os.ErrNotExist, "no hosts.toml for a run whose CA was refused")
	got, err = os.ReadFile(dst)
	require.NoError(t, err)
	assert.Equal(t, ca.CertPEM(), got, "the CA in place is kept")
}

func TestDockerConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"data-root": "/mnt/docker"}`), 0o644))
	out, err := runAgent(t, "docker-config", "--file", path)
	require.NoError(t, err)
	assert.Contains(t, out, "updated "+path)
	assert.Contains(t, out, "systemctl reload docker")
	var doc map[string]any
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &doc))
	assert.Equal(t, "/mnt/docker", doc["data-root"])
	assert.Equal(t, []any{"http://127.0.0.1:16000"}, doc["registry-mirrors"])

	out, err = runAgent(t, "docker-config", "--file", path, "-o", "json")
	require.NoError(t, err)
	var res nodeconfig.DockerResult
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	assert.Equal(t, nodeconfig.Unchanged, res.Action)

	require.NoError(t, os.WriteFile(path, []byte(`{broken`), 0o644))
	_, err = runAgent(t, "docker-config", "--file", path)
	require.ErrorContains(t, err, "is not a JSON object")
	assert.Equal(t, cmdutil.ExitError, cmdutil.ExitCode(err))
}
