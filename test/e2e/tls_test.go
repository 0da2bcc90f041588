package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// certDir returns a directory holding c's CA as ca.crt, the layout of docker's certs.d and of
// skopeo's --cert-dir.
func (c *devCluster) certDir(t *testing.T) string {
	t.Helper()
	require.NotNil(t, c.ep.TLS, "dev up wrote no tls section: was it started with --tls?")
	ca, err := os.ReadFile(c.ep.TLS.CAFile)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o644))
	return dir
}

// TestRealClientsOverTLS runs the real clients of TestDockerPushPullThroughProxyAndAgents,
// TestCraneAndSkopeo, TestContainerdMirror and TestConformanceProxy against one `dev up --tls`
// cluster, each trusting its CA the way the client is told to, and krakenctl's own commands
// with what dev up wrote: every role serves TLS only, so each of them proves its client spoke
// it, and the clients that check certificates (all but docker on 127.0.0.1, see below) prove
// the chain to the CA and the names in the certificates.
func TestRealClientsOverTLS(t *testing.T) {
	t.Parallel()
	c := devUp(t, 2, "--tls")
	require.NotNil(t, c.ep.TLS, "dev up --tls names its CA in the endpoints file")
	for _, a := range append([]string{c.proxy()}, c.ep.Agents...) {
		out := runCmd(t, nil, "curl", "-sS", "--cacert", c.ep.TLS.CAFile, "https://"+a+"/v2/")
		require.Equal(t, "{}", strings.TrimSpace(out), "%s serves a client without a certificate over TLS", a)
		_, err := tryCmd(t, nil, "curl", "-sS", "https://"+a+"/v2/")
		require.Error(t, err, "%s: a client that does not trust the CA refuses the certificate", a)
	}

	t.Run("docker", func(t *testing.T) {
		t.Parallel()
		// dockerd treats registries on 127.0.0.0/8 as insecure, whatever its configuration: it
		// speaks TLS to them without checking the certificate and does not read certs.d for
		// them (a wrong CA there changes nothing). So there is no CA to install here; the
		// proxy and the agents serve TLS only, and docker pushing and pulling through them is
		// what this shows.
		dockerPushPull(t, newDockerCLI(t), c)
	})
	t.Run("crane and skopeo", func(t *testing.T) {
		t.Parallel()
		craneAndSkopeo(t, needCommand(t, "skopeo", "run scripts/install-test-deps.sh (apt-get install skopeo)"), c)
		// Without the CA, crane does not trust the proxy (and does not fall back to plain
		// text, which the proxy would refuse).
		_, err := tryCmd(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, goTool(t, cranePkg), "digest", c.proxy()+"/e2e/crane:v1")
		require.ErrorContains(t, err, "certificate signed by unknown authority")
	})
	t.Run("containerd", func(t *testing.T) {
		t.Parallel()
		ctr, address := needContainerd(t)
		containerdMirror(t, ctr, address, c)
	})
	t.Run("conformance", func(t *testing.T) {
		t.Parallel()
		conformanceProxy(t, c)
	})
	t.Run("krakenctl", func(t *testing.T) {
		t.Parallel()
		krakenctlOverTLS(t, c)
	})
}

// krakenctlOverTLS pushes, tags and pulls with krakenctl as dev up --tls says: the endpoints
// file names the CA and the admin's certificate, and --tls-* flags name them for a pull
// through an agent (whose address comes from a flag, not the file).
func krakenctlOverTLS(t *testing.T, c *devCluster) {
	t.Helper()
	// No default endpoints file: what is not named does not come from the machine's dev up.
	env := []string{"XDG_STATE_HOME=" + t.TempDir()}
	file := filepath.Join(c.dir, "endpoints.yaml")
	k := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(runCmd(t, env, bin, args...))
	}
	dir := t.TempDir()
	blob := make([]byte, 1<<20)
	_, err := rand.Read(blob)
	require.NoError(t, err)
	in := filepath.Join(dir, "blob")
	require.NoError(t, os.WriteFile(in, blob, 0o644))
	index := filepath.Join(dir, "index.json")
	require.NoError(t, os.WriteFile(index, fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"nonce":"%x"}}`, blob[:16]), 0o644))

	d := k("push", in, "--endpoints-file", file)
	m := k("push", index, "--namespace", "e2e/tls", "--endpoints-file", file)
	k("tag", "put", "e2e/tls:v1", m, "--endpoints-file", file)
	require.Equal(t, m, k("tag", "get", "e2e/tls:v1", "--endpoints-file", file))
	require.Contains(t, k("cluster", "status", "--endpoints-file", file), c.ep.BuildIndex[0])
	tlsFlags := []string{"--tls-ca-file", c.ep.TLS.CAFile, "--tls-cert-file", c.ep.TLS.CertFile, "--tls-key-file", c.ep.TLS.KeyFile}
	out := filepath.Join(dir, "out")
	k(append([]string{"pull", d, "--agent", c.ep.Agents[1], "-o", out}, tlsFlags...)...)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.True(t, bytes.Equal(blob, got), "the blob pulled through the agent over TLS")
	_, err = tryCmd(t, env, bin, "pull", d, "--agent", c.ep.Agents[1], "-o", filepath.Join(dir, "plain"))
	require.Error(t, err, "an agent with TLS does not answer plain text")
}
