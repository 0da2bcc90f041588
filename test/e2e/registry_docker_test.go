package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// dockerCLI runs the docker client against $DOCKER_HOST with a private client configuration,
// so that no credential helper or setting of the machine's user takes part.
type dockerCLI struct {
	t   *testing.T
	env []string
}

func newDockerCLI(t *testing.T) *dockerCLI {
	needDocker(t)
	return &dockerCLI{t: t, env: []string{"DOCKER_CONFIG=" + t.TempDir(), "DOCKER_BUILDKIT=0"}}
}

func (d *dockerCLI) run(args ...string) string {
	d.t.Helper()
	return strings.TrimSpace(runCmd(d.t, d.env, "docker", args...))
}

// imageID is the local image ID of ref: the digest of its config, which a registry cannot
// change without changing the image.
func (d *dockerCLI) imageID(ref string) string {
	d.t.Helper()
	return d.run("image", "inspect", "--format", "{{.Id}}", ref)
}

// layers is how many layers the local image ref has.
func (d *dockerCLI) layers(ref string) string {
	d.t.Helper()
	return d.run("image", "inspect", "--format", "{{len .RootFS.Layers}}", ref)
}

// present reports whether the daemon has an image called ref.
func (d *dockerCLI) present(ref string) bool {
	d.t.Helper()
	_, err := tryCmd(d.t, d.env, "docker", "image", "inspect", ref)
	return err == nil
}

// buildHello builds ref FROM scratch with two COPY steps (two layers): a static Go binary that
// prints msg's file, and the file holding msg. Nothing is pulled.
func (d *dockerCLI) buildHello(ref, msg string) {
	d.t.Helper()
	ctx := d.t.TempDir()
	src := filepath.Join(ctx, "src")
	require.NoError(d.t, os.MkdirAll(src, 0o755))
	require.NoError(d.t, os.WriteFile(filepath.Join(src, "go.mod"), []byte("module hello\n\ngo 1.22\n"), 0o644))
	require.NoError(d.t, os.WriteFile(filepath.Join(src, "main.go"), []byte(`package main

import (
	"fmt"
	"os"
)

func main() {
	b, err := os.ReadFile("/msg")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Print(string(b))
}
`), 0o644))
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(ctx, "hello"), ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	out, err := build.CombinedOutput()
	require.NoError(d.t, err, "build hello: %s", out)
	require.NoError(d.t, os.RemoveAll(src))
	require.NoError(d.t, os.WriteFile(filepath.Join(ctx, "msg"), []byte(msg+"\n"), 0o644))
	require.NoError(d.t, os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(
		"FROM scratch\nCOPY hello /hello\nCOPY msg /msg\nENTRYPOINT [\"/hello\"]\n"), 0o644))
	// No cache: tests share one dockerd and remove their images when done, and a build that
	// reused a cached layer another test's `image rm --force` removed failed with "unknown
	// parent image ID" (seen once in CI).
	d.run("build", "--quiet", "--no-cache", "--tag", ref, ctx)
	require.Equal(d.t, "2", d.layers(ref), "layers of %s", ref)
}

// login logs the client in to c's proxy when it asks for a login, the password on stdin as
// dev up's summary shows.
func (d *dockerCLI) login(c *devCluster) {
	d.t.Helper()
	if c.password == "" {
		return
	}
	out := runCmdIn(d.t, d.env, c.password, "docker", "login", c.proxy(), "-u", c.user, "--password-stdin")
	require.Contains(d.t, out, "Login Succeeded")
}

// rmi removes the image names refs (and the images, when no other name holds them).
func (d *dockerCLI) rmi(refs ...string) {
	d.t.Helper()
	d.run(append([]string{"image", "rm"}, refs...)...)
	for _, r := range refs {
		require.False(d.t, d.present(r), "%s still present after docker image rm", r)
	}
}

// TestDockerPushPullThroughProxyAndAgents is the first-run promise: docker pushes a
// multi-layer image through the proxy and pulls it through each of two agents with the same
// image ID; a different image pushed under the same tag is what the next pull through each
// agent gets, at once.
func TestDockerPushPullThroughProxyAndAgents(t *testing.T) {
	t.Parallel()
	d := newDockerCLI(t)
	dockerPushPull(t, d, devUp(t, 2))
}

// dockerPushPull is TestDockerPushPullThroughProxyAndAgents on c, which has two agents or more;
// d logs in to the proxy first when it asks for a login.
func dockerPushPull(t *testing.T, d *dockerCLI, c *devCluster) {
	t.Helper()
	proxy, agents := c.proxy(), c.ep.Agents[:2]

	push := proxy + "/e2e/hello:v1"
	pulls := []string{agents[0] + "/e2e/hello:v1", agents[1] + "/e2e/hello:v1"}
	var ids []string
	t.Cleanup(func() {
		// Leave nothing behind in a shared daemon, dangling images included; names and images
		// that are gone already are fine.
		args := append([]string{"image", "rm", "--force", push}, pulls...)
		_, _ = tryCmd(t, d.env, "docker", append(args, ids...)...)
	})

	d.login(c)
	d.buildHello(push, "hello v1")
	v1 := d.imageID(push)
	ids = append(ids, v1)
	d.run("push", "--quiet", push)
	d.rmi(push)

	// Through each agent in turn, with nothing of the image left locally in between, so each
	// agent serves the manifest, the config and both layers.
	for _, ref := range pulls {
		require.False(t, d.present(ref))
		d.run("pull", "--quiet", ref)
		require.Equal(t, v1, d.imageID(ref), "image ID pulled through %s", ref)
		require.Equal(t, "2", d.layers(ref))
		d.rmi(ref)
	}

	// Pull v1 through both again and keep it: the agents have just resolved the tag.
	for _, ref := range pulls {
		d.run("pull", "--quiet", ref)
		require.Equal(t, v1, d.imageID(ref))
	}

	// A different image under the same tag.
	d.buildHello(push, "hello v2")
	v2 := d.imageID(push)
	ids = append(ids, v2)
	require.NotEqual(t, v1, v2, "the second image must differ from the first")
	d.run("push", "--quiet", push)
	d.rmi(push)

	// The first pull through each agent after the push gets v2: no retry, no wait.
	for _, ref := range pulls {
		d.run("pull", "--quiet", ref)
		require.Equal(t, v2, d.imageID(ref), "%s still resolves to the old image after the push", ref)
	}
}
