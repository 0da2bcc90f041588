package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
// cluster, each trusting its CA the way the client is told to and logging in to the proxy with
// the user and password of dev up's summary, and krakenctl's own commands with what dev up
// wrote: every role serves TLS only, so each of them proves its client spoke it; the clients
// that check certificates (all but docker on 127.0.0.1, see below) prove the chain to the CA
// and the names in the certificates; and the proxy refuses each of them without the login, or
// with a wrong password, so each proves it answered the challenge.
func TestRealClientsOverTLS(t *testing.T) {
	t.Parallel()
	c := devUp(t, 2, "--tls", "-o", "json")
	require.NotNil(t, c.ep.TLS, "dev up --tls names its CA in the endpoints file")
	c.login()
	curl := func(args ...string) (string, error) {
		t.Helper()
		return tryCmd(t, nil, "curl", append([]string{"-sS", "--cacert", c.ep.TLS.CAFile}, args...)...)
	}
	for _, a := range append([]string{c.proxy()}, c.ep.Agents...) {
		_, err := tryCmd(t, nil, "curl", "-sS", "https://"+a+"/v2/")
		require.ErrorContains(t, err, "certificate", "%s: a client that does not trust the CA refuses the certificate", a)
	}
	for _, a := range c.ep.Agents {
		out, err := curl("https://" + a + "/v2/")
		require.NoError(t, err)
		require.Equal(t, "{}", strings.TrimSpace(out), "%s serves a client without a certificate over TLS", a)
	}
	// The proxy: a Bearer challenge to anyone without the login (pulls included), and the
	// registry to the user.
	proxy := "https://" + c.proxy()
	out, err := curl("-i", proxy+"/v2/e2e/anything/tags/list")
	require.NoError(t, err)
	require.Regexp(t, `^HTTP/\S+ 401 `, out)
	require.Regexp(t, `(?i)\nwww-authenticate: Bearer realm="`+regexp.QuoteMeta(proxy)+`/v2/token",service="krakenctl"`, out)
	require.Contains(t, out, `"code":"UNAUTHORIZED"`)
	out, err = curl("-o", "/dev/null", "-w", "%{http_code}", "-u", c.user+":wrong-"+c.password, proxy+"/v2/")
	require.NoError(t, err)
	require.Equal(t, "401", out, "a wrong password")
	out, err = curl("-u", c.user+":"+c.password, proxy+"/v2/")
	require.NoError(t, err)
	require.Equal(t, "{}", strings.TrimSpace(out))

	t.Run("docker", func(t *testing.T) {
		t.Parallel()
		// dockerd treats registries on 127.0.0.0/8 as insecure, whatever its configuration: it
		// speaks TLS to them without checking the certificate and does not read certs.d for
		// them (a wrong CA there changes nothing, and the right one is not needed). So there
		// is no CA to install here; the proxy and the agents serve TLS only, and docker
		// logging in, pushing and pulling through them is what this shows.
		d := newDockerCLI(t)
		_, err := tryCmdIn(t, d.env, strings.NewReader("wrong-"+c.password), "docker", "login", c.proxy(), "-u", c.user, "--password-stdin")
		requireUnauthorized(t, err, "docker login with a wrong password")
		dockerPushPull(t, d, c)

		// The same push from a client that never logged in (a configuration of its own, the
		// same daemon and image) is refused.
		anon := &dockerCLI{t: t, env: []string{"DOCKER_CONFIG=" + t.TempDir(), "DOCKER_BUILDKIT=0"}}
		ref := c.proxy() + "/e2e/hello:v3"
		anon.run("tag", c.ep.Agents[0]+"/e2e/hello:v1", ref)
		t.Cleanup(func() { _, _ = tryCmd(t, anon.env, "docker", "image", "rm", ref) })
		_, err = tryCmd(t, anon.env, "docker", "push", ref)
		requireUnauthorized(t, err, "docker push without docker login")
	})
	t.Run("crane and skopeo", func(t *testing.T) {
		t.Parallel()
		skopeo := needCommand(t, "skopeo", "run scripts/install-test-deps.sh (apt-get install skopeo)")
		craneAndSkopeo(t, skopeo, c)
		// Without the CA, crane does not trust the proxy (and does not fall back to plain
		// text, which the proxy would refuse).
		_, err := tryCmd(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, goTool(t, cranePkg), "digest", c.proxy()+"/e2e/crane:v1")
		require.ErrorContains(t, err, "certificate signed by unknown authority")
		// Without the login, or with a wrong password, crane may neither pull nor push, and
		// skopeo may not push.
		anon := newCraneAnonymous(t, c)
		_, err = tryCmd(t, anon.env, anon.bin, "digest", c.proxy()+"/e2e/crane:v1")
		requireUnauthorized(t, err, "no anonymous pulls")
		layer := layerTar(t, t.TempDir(), "denied.txt", []byte("denied\n"))
		_, err = tryCmd(t, anon.env, anon.bin, "append", "--oci-empty-base", "-f", layer, "-t", c.proxy()+"/e2e/denied:v1")
		requireUnauthorized(t, err, "crane push without a login")
		wrong := newCraneAnonymous(t, c)
		runCmdIn(t, wrong.env, "wrong-"+c.password, wrong.bin, "auth", "login", c.proxy(), "-u", c.user, "--password-stdin")
		_, err = tryCmd(t, wrong.env, wrong.bin, "append", "--oci-empty-base", "-f", layer, "-t", c.proxy()+"/e2e/denied:v1")
		requireUnauthorized(t, err, "crane push with a wrong password")
		_, err = tryCmd(t, []string{"HOME=" + t.TempDir()}, skopeo, "copy", "--src-cert-dir", c.certDir(t), "--dest-cert-dir", c.certDir(t),
			"--dest-creds", c.user+":wrong-"+c.password, "docker://"+c.ep.Agents[0]+"/e2e/crane:v1", "docker://"+c.proxy()+"/e2e/denied:v1")
		requireUnauthorized(t, err, "skopeo push with a wrong password")
		require.NotContains(t, strings.Fields(newCraneFor(t, c).run("catalog", c.proxy())), "e2e/denied", "nothing refused was stored")
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
		krakenctlThroughProxy(t, c)
	})
}

// requireUnauthorized checks that a client failed because the proxy refused its credentials
// (or their absence) with a 401: clients word it as the status line ("401 Unauthorized") or
// as the spec's code (UNAUTHORIZED).
func requireUnauthorized(t *testing.T, err error, what string) {
	t.Helper()
	require.Error(t, err, what)
	require.Regexp(t, `(?i)\bunauthorized\b`, err.Error(), what)
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
	k(append([]string{"pull", d, "--agent", c.ep.Agents[1], "--file", out}, tlsFlags...)...)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.True(t, bytes.Equal(blob, got), "the blob pulled through the agent over TLS")
	_, err = tryCmd(t, env, bin, "pull", d, "--agent", c.ep.Agents[1], "--file", filepath.Join(dir, "plain"))
	require.Error(t, err, "an agent with TLS does not answer plain text")
}

// krakenctlThroughProxy pushes, pulls and tags with krakenctl through the proxy (--registry):
// with the admin's certificate that dev up names, which the proxy lets do everything, no
// password is needed; with the CA alone (SSL_CERT_FILE, no client certificate) the login is,
// its password on stdin, and without it, or with a wrong password, krakenctl says what to do.
func krakenctlThroughProxy(t *testing.T, c *devCluster) {
	t.Helper()
	env := []string{"XDG_STATE_HOME=" + t.TempDir()}
	caOnly := append(slices.Clone(env), "SSL_CERT_FILE="+c.ep.TLS.CAFile)
	admin := []string{"--tls-ca-file", c.ep.TLS.CAFile, "--tls-cert-file", c.ep.TLS.CertFile, "--tls-key-file", c.ep.TLS.KeyFile}
	reg := []string{"--registry", c.proxy(), "--namespace", "e2e/krakenctl"}
	login := []string{"--username", c.user, "--password-stdin"}
	args := func(parts ...[]string) []string { return slices.Concat(parts...) }
	dir := t.TempDir()
	file := func(name string) (string, []byte) {
		b := randomBytes(t, 256<<10)
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		return p, b
	}

	asAdmin, _ := file("admin")
	d := strings.TrimSpace(runCmd(t, env, bin, args([]string{"push", asAdmin}, reg, admin)...))
	require.Equal(t, "sha256:", d[:7], "pushed as the admin, without a password")

	asDev, data := file("dev")
	d = strings.TrimSpace(runCmdIn(t, caOnly, c.password, bin, args([]string{"push", asDev}, reg, login)...))
	out := filepath.Join(dir, "out")
	runCmdIn(t, caOnly, c.password, bin, args([]string{"pull", d, "--file", out}, reg, login)...)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "the blob pulled back through the proxy")

	denied, _ := file("denied")
	_, err = tryCmd(t, caOnly, bin, args([]string{"push", denied}, reg)...)
	requireUnauthorized(t, err, "krakenctl push without the login")
	require.ErrorContains(t, err, "wants credentials", "krakenctl says to log in")
	_, err = tryCmdIn(t, caOnly, strings.NewReader("wrong-"+c.password), bin, args([]string{"push", denied}, reg, login)...)
	require.ErrorContains(t, err, "refused user dev: check the password")

	// A tag names a manifest the repository holds: an image pushed through the proxy.
	crane := newCraneFor(t, c)
	img := crane.twoLayerImage(c.proxy()+"/e2e/krakenctl:v1", "krakenctl.txt", []byte("tagged by krakenctl\n"))
	onProxy := []string{"--registry", c.proxy()}
	runCmdIn(t, caOnly, c.password, bin, args([]string{"tag", "put", "e2e/krakenctl:v2", img}, onProxy, login)...)
	require.Equal(t, img, strings.TrimSpace(runCmdIn(t, caOnly, c.password, bin, args([]string{"tag", "get", "e2e/krakenctl:v2"}, onProxy, login)...)))
	require.Equal(t, img, crane.run("digest", c.ep.Agents[0]+"/e2e/krakenctl:v2"), "the tag through an agent")
	_, err = tryCmd(t, caOnly, bin, args([]string{"tag", "put", "e2e/krakenctl:v3", img}, onProxy)...)
	require.ErrorContains(t, err, "wants credentials", "a tag without the login")
}
