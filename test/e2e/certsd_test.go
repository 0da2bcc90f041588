package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/pki"
)

// labAddr is the address scripts/lab-net.sh puts on a veth pair of the tests' own: not
// loopback, so that dockerd treats a registry there as secure.
func labAddr(t *testing.T) string {
	t.Helper()
	a := os.Getenv("KRAKENCTL_LAB_ADDR")
	if a == "" {
		requireReal(t, "KRAKENCTL_LAB_ADDR is not set: run scripts/lab-net.sh up (make test does)")
		t.Skip("KRAKENCTL_LAB_ADDR is not set: run scripts/lab-net.sh up")
	}
	return a
}

// freeAddrOn returns an address on host whose port was free a moment ago and that no other
// call in this process returned (handedOut).
func freeAddrOn(t *testing.T, host string) string {
	t.Helper()
	for {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		handedOut.Lock()
		seen := handedOut.addrs[addr]
		handedOut.addrs[addr] = true
		handedOut.Unlock()
		if !seen {
			return addr
		}
	}
}

// serve writes config as dir/name.yaml and starts `krakenctl serve role` on it, logging to
// dir/name.log (shown when the test fails); it is killed at cleanup.
func serve(t *testing.T, dir, role, name, addr, config string, ready func(ctx context.Context) error) *proc {
	t.Helper()
	path := filepath.Join(dir, name+".yaml")
	require.NoError(t, os.WriteFile(path, []byte(config), 0o644))
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = logf.Close() })
	p := &proc{t: t, role: role, name: name, addr: addr, config: path, log: logf, ready: ready}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("log of %s %s (last 4 KiB):\n%s", role, name, tail(b, 4096))
		}
	})
	p.start()
	t.Cleanup(p.kill)
	return p
}

// TestDockerTrustsTheClusterCAThroughCertsD runs a cluster of `krakenctl serve` processes with
// TLS on an address that is not loopback (dockerd ignores certs.d for 127.0.0.0/8 and skips
// verification there), with proxy authentication on, and a real dockerd that trusts the
// cluster CA only through /etc/docker/certs.d: docker login and push through the proxy, pull
// through the agent. Before the CA is there, docker refuses the proxy's certificate: so what
// docker verified is the chain to the cluster CA.
func TestDockerTrustsTheClusterCAThroughCertsD(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Parallel()
	host := labAddr(t)
	d := newDockerCLI(t)
	dir := t.TempDir()
	tp := newTestPKI(t, filepath.Join(dir, "tls"), host)
	admin := tp.client(tp.issue("admin", "ops", pki.GroupAdmin))

	origin, originPeer := freeAddrOn(t, host), freeAddrOn(t, host)
	bi, raftAddr := freeAddrOn(t, host), freeAddrOn(t, host)
	tracker, proxy := freeAddrOn(t, host), freeAddrOn(t, host)
	agent, agentPeer := freeAddrOn(t, host), freeAddrOn(t, host)

	serve(t, dir, "origin", "origin", origin, fmt.Sprintf("listen: %s\nadmin_listen: 127.0.0.1:0\nstore:\n  dir: %s\npeer:\n  listen: %s\n%s",
		origin, filepath.Join(dir, "origin"), originPeer, tp.yaml(tp.issue("origin", "origin-1", pki.GroupOrigin), "require")),
		func(ctx context.Context) error { return client.NewOrigin(origin, admin).Ready(ctx) })
	serve(t, dir, "build-index", "bi-0", bi, fmt.Sprintf("listen: %s\nadmin_listen: 127.0.0.1:0\nraft_listen: %s\ndir: %s\norigins: [%s]\nraft:\n  node_id: bi-0\n  bootstrap: true\n%s",
		bi, raftAddr, filepath.Join(dir, "bi-0"), origin, tp.yaml(tp.issue("bi-0", "bi-0", pki.GroupBuildIndex), "require")),
		func(ctx context.Context) error {
			st, err := client.NewBuildIndex(bi, admin).ClusterStatus(ctx)
			if err == nil && st.LeaderID == "" {
				err = fmt.Errorf("no leader yet")
			}
			return err
		})
	serve(t, dir, "tracker", "tracker", tracker, fmt.Sprintf("listen: %s\nadmin_listen: 127.0.0.1:0\norigins: [%s]\nannounce: {allow_loopback: true}\n%s",
		tracker, origin, tp.yaml(tp.issue("tracker", "tracker-1", pki.GroupTracker), "require")), nil)

	hash, err := bcrypt.GenerateFromPassword([]byte("alice-pw"), bcrypt.MinCost)
	require.NoError(t, err)
	htpasswd := filepath.Join(dir, "htpasswd")
	require.NoError(t, os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600))
	serve(t, dir, "proxy", "proxy", proxy, fmt.Sprintf(`listen: %s
admin_listen: 127.0.0.1:0
origins: [%s]
build_index: [%s]
%sauth:
  mode: token
  htpasswd_file: %s
  rules:
    - repositories: ["e2e/**"]
      users: [alice]
      actions: [pull, push, delete]
`, proxy, origin, bi, tp.yaml(tp.issue("proxy", "proxy-1", pki.GroupProxy), "verify_if_given"), htpasswd), nil)
	serve(t, dir, "agent", "agent", agent, fmt.Sprintf("listen: %s\nadmin_listen: 127.0.0.1:0\npeer_listen: %s\ntrackers: [%s]\nbuild_index: [%s]\nstore_dir: %s\n%s",
		agent, agentPeer, tracker, bi, filepath.Join(dir, "agent"), tp.yaml(tp.issue("agent", "agent-1", pki.GroupAgent), "verify_if_given")), nil)
	// The proxy and the agent answer over TLS (their readiness, seen as a client that trusts
	// the CA and presents nothing).
	people := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tp.roots, MinVersion: tls.VersionTLS12}}}
	for _, a := range []string{proxy, agent} {
		require.Eventually(t, func() bool {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+a+"/v2/", nil)
			require.NoError(t, err)
			resp, err := people.Do(req)
			if err != nil {
				return false
			}
			_ = resp.Body.Close()
			return resp.StatusCode < 500
		}, 60*time.Second, 50*time.Millisecond, "%s answers over TLS", a)
	}

	// Without the CA in certs.d, docker refuses the proxy's certificate.
	login := func() (string, error) {
		cmd := exec.CommandContext(t.Context(), "docker", "login", proxy, "--username", "alice", "--password-stdin")
		cmd.Env, cmd.Stdin = append(os.Environ(), d.env...), strings.NewReader("alice-pw\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := login()
	require.Error(t, err, "docker login without the CA: %s", out)
	require.Contains(t, out, "certificate signed by unknown authority")

	for _, a := range []string{proxy, agent} {
		certsD := filepath.Join("/etc/docker/certs.d", a)
		require.NoError(t, os.MkdirAll(certsD, 0o755))
		t.Cleanup(func() { _ = os.RemoveAll(certsD) })
		require.NoError(t, os.WriteFile(filepath.Join(certsD, "ca.crt"), tp.ca.CertPEM(), 0o644))
	}
	out, err = login()
	require.NoError(t, err, "docker login with the CA in certs.d: %s", out)
	require.Contains(t, out, "Login Succeeded")

	push, pull := proxy+"/e2e/certsd:v1", agent+"/e2e/certsd:v1"
	var ids []string
	t.Cleanup(func() {
		_, _ = tryCmd(t, d.env, "docker", append([]string{"image", "rm", "--force", push, pull}, ids...)...)
	})
	d.buildHello(push, "hello through certs.d")
	id := d.imageID(push)
	ids = append(ids, id)
	d.run("push", "--quiet", push)
	d.rmi(push)
	d.run("pull", "--quiet", pull)
	require.Equal(t, id, d.imageID(pull), "the image pulled through the agent over TLS")
	require.Equal(t, "2", d.layers(pull))

	// Logged out, the proxy refuses the push.
	d.run("logout", proxy)
	d.run("tag", pull, push)
	_, err = tryCmd(t, d.env, "docker", "push", "--quiet", push)
	require.Error(t, err, "docker push after logout")
	require.Regexp(t, "no basic auth credentials|unauthorized|authentication required", err.Error())
}
