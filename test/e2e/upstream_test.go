package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"
)

// upstreamRegistry is Debian's docker-registry, started and stopped by
// scripts/registry-server.sh as CI does.
type upstreamRegistry struct {
	t    *testing.T
	port string
	env  []string
}

// startUpstreamRegistry starts docker-registry on a free loopback port with its state in a
// temporary directory, and stops it when the test ends.
func startUpstreamRegistry(t *testing.T) *upstreamRegistry {
	t.Helper()
	if _, err := os.Stat("/usr/bin/docker-registry"); err != nil {
		requireReal(t, "docker-registry is not installed: run scripts/install-test-deps.sh")
	}
	_, port, err := net.SplitHostPort(freeAddr(t))
	require.NoError(t, err)
	r := &upstreamRegistry{t: t, port: port, env: []string{"REGISTRY_STATE_DIR=" + t.TempDir()}}
	out := runCmd(t, r.env, r.script(), "start", port)
	require.Contains(t, out, "REGISTRY_ADDR=127.0.0.1:"+port)
	t.Cleanup(r.stop)
	return r
}

func (r *upstreamRegistry) script() string {
	p, err := filepath.Abs(filepath.Join("..", "..", "scripts", "registry-server.sh"))
	require.NoError(r.t, err)
	return p
}

func (r *upstreamRegistry) addr() string { return "127.0.0.1:" + r.port }

// stop stops the registry; stopping one that is stopped already is fine.
func (r *upstreamRegistry) stop() {
	cmd := exec.Command(r.script(), "stop", r.port)
	cmd.Env = append(os.Environ(), r.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Errorf("stop docker-registry: %v: %s", err, out)
	}
}

// pushRandomImage writes a small random image for this platform as ref with
// go-containerregistry, as crane would, and returns it.
func pushRandomImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	img, err := random.Image(2048, 2)
	require.NoError(t, err)
	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	img, err = mutate.ConfigFile(img, cfg)
	require.NoError(t, err)
	tag, err := name.NewTag(ref, name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(tag, img, remote.WithContext(t.Context())), "push %s", ref)
	return img
}

// requireSameImage checks that the image docker holds as ref is img: its ID is the config's
// digest (the classic image store) or the manifest's (the containerd image store).
func requireSameImage(t *testing.T, d *dockerCLI, ref string, img v1.Image) {
	t.Helper()
	cfg, err := img.ConfigName()
	require.NoError(t, err)
	man, err := img.Digest()
	require.NoError(t, err)
	require.Contains(t, []string{cfg.String(), man.String()}, d.imageID(ref), "image ID of %s", ref)
}

// TestUpstreamTags: a dev cluster in front of Debian's docker-registry serves docker a tag
// that only the upstream has (nothing pushed through the proxy), with the pushed image's ID;
// a tag the upstream lacks is "manifest unknown"; with the upstream stopped, an upstream tag is
// a clear error. A push into the upstream's repository is refused with a message naming it
// (issue 17): its blobs could never be written back to the upstream, and used to be accepted
// and kept on the origins only.
func TestUpstreamTags(t *testing.T) {
	t.Parallel()
	d := newDockerCLI(t)
	up := startUpstreamRegistry(t)
	const repo = "e2e/upstream/app"
	img := pushRandomImage(t, up.addr()+"/"+repo+":v1")

	c := devUp(t, 1, "--upstream-registry", "e2e/upstream/.*=http://"+up.addr())
	agent := c.ep.Agents[0]
	pull := agent + "/" + repo + ":v1"
	push := c.proxy() + "/" + repo + ":docker"
	t.Cleanup(func() { _, _ = tryCmd(t, d.env, "docker", "image", "rm", "--force", pull, push) })

	d.run("pull", "--quiet", pull)
	requireSameImage(t, d, pull, img)
	d.rmi(pull)

	_, err := tryCmd(t, d.env, "docker", "pull", agent+"/"+repo+":nope")
	require.Error(t, err)
	require.Contains(t, strings.ToLower(err.Error()), "manifest unknown", "docker's message for a tag nobody has")

	// A push into the upstream's repository is refused at its first blob, naming it.
	mine, err := random.Image(1024, 1)
	require.NoError(t, err)
	tag, err := name.NewTag(c.proxy()+"/"+repo+":local", name.Insecure)
	require.NoError(t, err)
	err = remote.Write(tag, mine, remote.WithContext(t.Context()))
	require.Error(t, err)
	require.Contains(t, err.Error(), `namespace "`+repo+`"`)
	require.Contains(t, err.Error(), "read-only")

	up.stop()

	_, err = tryCmd(t, d.env, "docker", "pull", agent+"/"+repo+":v2")
	require.Error(t, err)
	require.Contains(t, err.Error(), "upstream registry", "docker's message names the upstream")
	require.NotContains(t, strings.ToLower(err.Error()), "internal error")
	t.Logf("docker's message with the upstream down: %v", err)

	// docker's push into the repository while the upstream is down: its HEADs of the blobs
	// find them unknown (not failed), and the first upload is refused with the message.
	d.buildHello(push, "pushed while the upstream is down")
	_, err = tryCmd(t, d.env, "docker", "push", "--quiet", push)
	require.Error(t, err)
	require.Contains(t, err.Error(), "read-only", "docker prints why")
	t.Logf("docker's message for a push into an upstream's repository: %v", err)
	d.rmi(push)
}
