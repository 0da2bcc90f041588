package root_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
)

// The commands that talk to components reach a cluster that runs with TLS as the endpoints
// file says (the admin's certificate that dev up --tls names), or as the --tls-* flags and
// their variables say; without either they get no answer, and an incomplete set of flags is a
// usage error.
func TestCommandsOverTLS(t *testing.T) {
	t.Parallel()
	c := clustertest.Start(t, cluster.Spec{
		Origins: 1, BuildIndexes: 1, Agents: 1, TLS: clustertest.TLS(t),
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{})
	admin := c.AdminTLS()
	state := t.TempDir()
	require.NoError(t, api.WriteEndpoints(filepath.Join(state, "krakenctl", "dev", "endpoints.yaml"), api.Endpoints{
		Origins: c.Addrs(cluster.Origin), BuildIndex: c.Addrs(cluster.BuildIndex), Agents: c.Addrs(cluster.Agent),
		TLS: &api.EndpointsTLS{CAFile: admin.CAFile, CertFile: admin.CertFile, KeyFile: admin.KeyFile},
	}))
	withFile := []string{"XDG_STATE_HOME=" + state}
	none := []string{"XDG_STATE_HOME=" + t.TempDir()}
	krakenctl := func(env []string, args ...string) string {
		t.Helper()
		out, errOut, code := runMainEnv(t, env, args...)
		require.Zero(t, code, "krakenctl %s: %s", strings.Join(args, " "), errOut)
		return strings.TrimSpace(out)
	}

	dir := t.TempDir()
	blob := make([]byte, 300<<10)
	_, err := rand.Read(blob)
	require.NoError(t, err)
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	require.NoError(t, os.WriteFile(in, blob, 0o644))

	// A tag names a manifest its repository holds: an empty index, unique to the run.
	manifest := filepath.Join(dir, "index.json")
	require.NoError(t, os.WriteFile(manifest, fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"nonce":"%x"}}`, blob[:16]), 0o644))

	// Everything from the endpoints file: addresses and TLS.
	d := krakenctl(withFile, "push", in)
	m := krakenctl(withFile, "push", manifest, "--namespace", "team/app")
	require.Contains(t, krakenctl(withFile, "tag", "put", "team/app:v1", m), m)
	require.Equal(t, m, krakenctl(withFile, "tag", "get", "team/app:v1"))
	require.Contains(t, krakenctl(withFile, "cluster", "status"), c.Addr(cluster.BuildIndex, 0))
	require.Contains(t, krakenctl(withFile, "ring", "status"), c.Addr(cluster.Origin, 0))
	krakenctl(withFile, "pull", d, "--agent", c.Addr(cluster.Agent, 0), "--file", out)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, blob, got, "pulled through the agent")

	// Addresses and TLS from flags, or from variables, with no endpoints file.
	flags := []string{"--tls-ca-file", admin.CAFile, "--tls-cert-file", admin.CertFile, "--tls-key-file", admin.KeyFile}
	require.Equal(t, m, krakenctl(none, append([]string{"tag", "get", "team/app:v1", "--build-index", c.Addr(cluster.BuildIndex, 0)}, flags...)...))
	vars := append([]string{"KRAKENCTL_TLS_CA_FILE=" + admin.CAFile, "KRAKENCTL_TLS_CERT_FILE=" + admin.CertFile, "KRAKENCTL_TLS_KEY_FILE=" + admin.KeyFile}, none...)
	require.NoError(t, os.Remove(out))
	krakenctl(vars, "pull", d, "--origins", c.Addr(cluster.Origin, 0), "--file", out)
	got, err = os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, blob, got, "pulled from the origins")

	// Plain text gets nowhere; half the flags is a usage error.
	_, _, code := runMainEnv(t, none, "tag", "get", "team/app:v1", "--build-index", c.Addr(cluster.BuildIndex, 0))
	require.Equal(t, 1, code)
	_, errOut, code := runMainEnv(t, none, "tag", "get", "team/app:v1", "--build-index", c.Addr(cluster.BuildIndex, 0), "--tls-ca-file", admin.CAFile)
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "--tls-cert-file (or $KRAKENCTL_TLS_CERT_FILE) is missing")
}
