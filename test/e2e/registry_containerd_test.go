package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestContainerdMirror pulls an image with containerd (ctr) configured, as docs/registry.md
// shows, to use the agent as a mirror of docker.io: containerd asks the agent for
// /v2/library/<name>/manifests/<tag>?ns=docker.io and the blobs likewise, and the image it
// stores has the digest pushed through the proxy. The configured upstream is an address where
// nothing listens, so only the agent can have served it.
func TestContainerdMirror(t *testing.T) {
	t.Parallel()
	ctr, address := needContainerd(t)
	containerdMirror(t, ctr, address, devUp(t, 1))
}

// needContainerd skips (or fails, see requireReal) unless ctr and a containerd to run it
// against are there, and returns both.
func needContainerd(t *testing.T) (ctr, address string) {
	t.Helper()
	needDocker(t)
	ctr = needCommand(t, "ctr", "run scripts/install-test-deps.sh (docker.io brings containerd and ctr)")
	address = os.Getenv("CONTAINERD_ADDRESS")
	if address == "" {
		requireReal(t, `CONTAINERD_ADDRESS is not set: eval "$(scripts/docker-up.sh start)" exports it`)
	}
	return ctr, address
}

// containerdMirror is TestContainerdMirror on c: with TLS, hosts.toml names the agent by https
// and c's CA as the one to check its certificate against.
func containerdMirror(t *testing.T, ctr, address string, c *devCluster) {
	t.Helper()
	containerdMirrorWith(t, ctr, address, c, "", func(hosts, scheme, agent, caFile string) {
		ca := ""
		if caFile != "" {
			ca = fmt.Sprintf("  ca = %q\n", caFile)
		}
		require.NoError(t, os.MkdirAll(filepath.Join(hosts, "docker.io"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(hosts, "docker.io", "hosts.toml"), []byte(fmt.Sprintf(`server = "%[1]s://127.0.0.1:9"

[host."%[1]s://%[2]s"]
  capabilities = ["pull", "resolve"]
%[3]s`, scheme, agent, ca)), 0o644))
	})
}

// containerdMirrorWith is containerdMirror with docker.io's hosts.toml under the hosts
// directory written by writeHosts (for the agent at agent, over scheme, trusting caFile when
// set); tag keeps the image's name apart from other callers'.
func containerdMirrorWith(t *testing.T, ctr, address string, c *devCluster, tag string, writeHosts func(hosts, scheme, agent, caFile string)) {
	t.Helper()
	crane := newCraneFor(t, c)
	agent := c.ep.Agents[0]

	scheme, caFile := "http", ""
	if c.ep.TLS != nil {
		scheme, caFile = "https", c.ep.TLS.CAFile
	}
	// A name of its own per cluster: the image is kept in the namespace of this process.
	name := fmt.Sprintf("library/mirror%s-%s-%d", tag, scheme, os.Getpid())
	want := crane.twoLayerImage(c.proxy()+"/"+name+":v1", "hello.txt", []byte("through the mirror\n"))

	hosts := t.TempDir()
	writeHosts(hosts, scheme, agent, caFile)

	ns := fmt.Sprintf("krakenctl-e2e%s-%s-%d", tag, scheme, os.Getpid())
	ref := "docker.io/" + name + ":v1"
	run := func(args ...string) string {
		return runCmd(t, nil, ctr, append([]string{"--address", address, "--namespace", ns}, args...)...)
	}
	t.Cleanup(func() {
		// t.Context() has ended by now: clean up with a context of its own.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, args := range [][]string{
			{"--namespace", ns, "images", "rm", "--sync", ref},
			{"--namespace", ns, "content", "prune", "references"},
			{"namespaces", "rm", ns},
		} {
			if out, err := exec.CommandContext(ctx, ctr, append([]string{"--address", address}, args...)...).CombinedOutput(); err != nil {
				t.Logf("cleanup: ctr %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	})
	run("images", "pull", "--hosts-dir", hosts, ref)
	// ls -q prints names; the table has REF TYPE DIGEST ...
	var got string
	for _, line := range strings.Split(run("images", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			got = f[2]
		}
	}
	require.Equal(t, want, got, "containerd stored the image pushed through the proxy")
	// Every blob of the image is in containerd's content store, as the agent served it.
	check := run("images", "check")
	require.Regexp(t, `(?m)^`+regexp.QuoteMeta(ref)+`\s.*\scomplete \(\d+/\d+\)`, check)
}
