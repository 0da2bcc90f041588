package e2e

import (
	"archive/tar"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// cranePkg is go-containerregistry's crane, pinned in go.mod as a tool.
const cranePkg = "github.com/google/go-containerregistry/cmd/crane"

// layerTar writes a tarball holding one file, name, with data, and returns its path.
func layerTar(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name+".tar")
	f, err := os.Create(p)
	require.NoError(t, err)
	tw := tar.NewWriter(f)
	require.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}))
	_, err = tw.Write(data)
	require.NoError(t, err)
	require.NoError(t, tw.Close())
	require.NoError(t, f.Close())
	return p
}

// ociLayoutManifests reads the manifests an OCI image layout's index.json lists.
func ociLayoutManifests(t *testing.T, dir string) []ocispec.Descriptor {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	require.NoError(t, err)
	var idx ocispec.Index
	require.NoError(t, json.Unmarshal(b, &idx))
	return idx.Manifests
}

// craneCLI runs crane with a private configuration directory (no credential helpers).
type craneCLI struct {
	t   *testing.T
	bin string
	env []string
}

func newCrane(t *testing.T) *craneCLI {
	return &craneCLI{t: t, bin: goTool(t, cranePkg), env: []string{"DOCKER_CONFIG=" + t.TempDir()}}
}

// newCraneFor returns crane for c's registries: with TLS, trusting c's CA (Go's SSL_CERT_FILE)
// and nothing else, so that a certificate the CA did not issue fails; logged in to the proxy
// when it asks for a login.
func newCraneFor(t *testing.T, c *devCluster) *craneCLI {
	cr := newCraneAnonymous(t, c)
	if c.password != "" {
		runCmdIn(t, cr.env, c.password, cr.bin, "auth", "login", c.proxy(), "-u", c.user, "--password-stdin")
	}
	return cr
}

// newCraneAnonymous is newCraneFor without the login.
func newCraneAnonymous(t *testing.T, c *devCluster) *craneCLI {
	cr := newCrane(t)
	if c.ep.TLS != nil {
		cr.env = append(cr.env, "SSL_CERT_FILE="+c.ep.TLS.CAFile)
	}
	return cr
}

func (c *craneCLI) run(args ...string) string {
	c.t.Helper()
	return strings.TrimSpace(runCmd(c.t, c.env, c.bin, args...))
}

// twoLayerImage pushes an OCI image of two layers (file name with data, then a 1 MiB random
// file) to ref with crane append and returns its digest.
func (c *craneCLI) twoLayerImage(ref, name string, data []byte) string {
	c.t.Helper()
	dir := c.t.TempDir()
	c.run("append", "--oci-empty-base", "-f", layerTar(c.t, dir, name, data), "-t", ref)
	c.run("append", "-b", ref, "-f", layerTar(c.t, dir, "random", randomBytes(c.t, 1<<20)), "-t", ref)
	var m ocispec.Manifest
	require.NoError(c.t, json.Unmarshal([]byte(c.run("manifest", ref)), &m))
	require.Len(c.t, m.Layers, 2, "layers of %s", ref)
	return c.run("digest", ref)
}

// TestCraneAndSkopeo copies images in and out with crane and Debian's skopeo: pushed through
// the proxy, pulled through an agent, digests unchanged both ways; and a multi-arch index
// pushed through the proxy is pulled per platform through the agent.
func TestCraneAndSkopeo(t *testing.T) {
	t.Parallel()
	skopeo := needCommand(t, "skopeo", "run scripts/install-test-deps.sh (apt-get install skopeo)")
	craneAndSkopeo(t, skopeo, devUp(t, 1))
}

// craneAndSkopeo is TestCraneAndSkopeo on c: in plain text, skopeo is told the registries do
// not speak TLS; with TLS, it trusts c's CA (its --cert-dir options) and checks certificates.
// With a login on the proxy, crane logs in (crane auth login) and skopeo passes --creds.
func craneAndSkopeo(t *testing.T, skopeo string, c *devCluster) {
	t.Helper()
	crane := newCraneFor(t, c)
	proxy, agent := c.proxy(), c.ep.Agents[0]
	dir := t.TempDir()
	src, dest, both := []string{"--src-tls-verify=false"}, []string{"--dest-tls-verify=false"}, []string{"--tls-verify=false"}
	if c.ep.TLS != nil {
		certs := c.certDir(t)
		src, dest, both = []string{"--src-cert-dir", certs}, []string{"--dest-cert-dir", certs}, []string{"--cert-dir", certs}
	}
	// dest is always the proxy; src is the agent but in the proxy-to-proxy copy, srcProxy.
	srcProxy := src
	if c.password != "" {
		creds := c.user + ":" + c.password
		dest = append(dest, "--dest-creds", creds)
		srcProxy = append(slices.Clone(src), "--src-creds", creds)
	}
	sk := func(opts []string, args ...string) string {
		t.Helper()
		// The command first, then its TLS options, then its arguments.
		return runCmd(t, []string{"HOME=" + t.TempDir()}, skopeo, append(append([]string{args[0]}, opts...), args[1:]...)...)
	}

	// crane in through the proxy, out through the agent.
	img := crane.twoLayerImage(proxy+"/e2e/crane:v1", "hello.txt", []byte("hello from crane\n"))
	require.Equal(t, img, crane.run("digest", agent+"/e2e/crane:v1"))
	require.Equal(t, crane.run("manifest", proxy+"/e2e/crane:v1"), crane.run("manifest", agent+"/e2e/crane:v1"))
	crane.run("validate", "--remote", agent+"/e2e/crane:v1") // downloads every layer, checks digests
	require.Contains(t, strings.Fields(crane.run("ls", agent+"/e2e/crane")), "v1")
	require.Contains(t, strings.Fields(crane.run("catalog", proxy)), "e2e/crane")
	crane.run("pull", "--format", "oci", agent+"/e2e/crane:v1", filepath.Join(dir, "crane-oci"))
	require.Equal(t, img, ociLayoutManifests(t, filepath.Join(dir, "crane-oci"))[0].Digest.String())

	// crane copy between repositories of the proxy (a cross-repository mount).
	crane.run("copy", proxy+"/e2e/crane:v1", proxy+"/e2e/crane-copy:v1")
	require.Equal(t, img, crane.run("digest", agent+"/e2e/crane-copy:v1"))

	// skopeo out through the agent into an OCI layout, and back in through the proxy under
	// another name: the digest survives the round trip.
	sk(src, "copy", "docker://"+agent+"/e2e/crane:v1", "oci:"+filepath.Join(dir, "skopeo-oci")+":v1")
	require.Equal(t, img, ociLayoutManifests(t, filepath.Join(dir, "skopeo-oci"))[0].Digest.String())
	sk(dest, "copy", "oci:"+filepath.Join(dir, "skopeo-oci")+":v1", "docker://"+proxy+"/e2e/skopeo:v1")
	var inspect struct{ Digest string }
	require.NoError(t, json.Unmarshal([]byte(sk(both, "inspect", "docker://"+agent+"/e2e/skopeo:v1")), &inspect))
	require.Equal(t, img, inspect.Digest)
	var tags struct{ Tags []string }
	require.NoError(t, json.Unmarshal([]byte(sk(both, "list-tags", "docker://"+agent+"/e2e/skopeo")), &tags))
	require.Equal(t, []string{"v1"}, tags.Tags)
	// skopeo registry to registry: proxy to proxy, read back through the agent.
	sk(append(srcProxy, dest...), "copy", "docker://"+proxy+"/e2e/skopeo:v1", "docker://"+proxy+"/e2e/skopeo-copy:v2")
	require.Equal(t, img, crane.run("digest", agent+"/e2e/skopeo-copy:v2"))

	// A multi-arch index: two images with other content and other platforms.
	platformImage := func(arch string) string {
		ref := proxy + "/e2e/multi-" + arch + ":v1"
		crane.twoLayerImage(ref, "arch.txt", []byte(arch+"\n"))
		crane.run("mutate", "--set-platform", "linux/"+arch, ref, "-t", ref)
		return crane.run("digest", ref)
	}
	amd64, arm64 := platformImage("amd64"), platformImage("arm64")
	require.NotEqual(t, amd64, arm64)
	crane.run("index", "append", "-m", proxy+"/e2e/multi-amd64:v1", "-m", proxy+"/e2e/multi-arm64:v1", "-t", proxy+"/e2e/multi:v1")
	index := agent + "/e2e/multi:v1"
	var idx ocispec.Index
	require.NoError(t, json.Unmarshal([]byte(crane.run("manifest", index)), &idx))
	require.Len(t, idx.Manifests, 2, "the index through the agent")

	for arch, want := range map[string]string{"amd64": amd64, "arm64": arm64} {
		require.Equal(t, want, crane.run("digest", "--platform", "linux/"+arch, index), "crane digest --platform linux/%s", arch)
		out := filepath.Join(dir, "crane-"+arch)
		crane.run("pull", "--format", "oci", "--platform", "linux/"+arch, index, out)
		require.Equal(t, want, ociLayoutManifests(t, out)[0].Digest.String(), "crane pull --platform linux/%s", arch)
		out = filepath.Join(dir, "skopeo-"+arch)
		sk(src, "copy", "--override-os", "linux", "--override-arch", arch, "docker://"+index, "oci:"+out+":v1")
		require.Equal(t, want, ociLayoutManifests(t, out)[0].Digest.String(), "skopeo copy --override-arch %s", arch)
	}
}
