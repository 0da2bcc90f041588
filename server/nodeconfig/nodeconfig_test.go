package nodeconfig_test

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/nodeconfig"
	"github.com/krakenctl/krakenctl/server/pki"
)

func TestCheckRegistry(t *testing.T) {
	for _, ok := range []string{"docker.io", "ghcr.io", "registry.local:5000", "localhost", "10.0.0.1", "10.0.0.1:5000", "[::1]:5000", "_default", "a-b.example.com"} {
		require.NoError(t, nodeconfig.CheckRegistry(ok), ok)
	}
	for _, bad := range []string{"", "..", ".", "docker.io/library", "../etc", "a..b", "-a.io", "a-.io", "host:0", "host:99999", "host:port", "a b", "::1", "https://docker.io", "a/../../b", "x\x00y", "_x.io"} {
		err := nodeconfig.CheckRegistry(bad)
		require.ErrorIs(t, err, nodeconfig.ErrInvalidRegistry, "%q", bad)
		assert.Contains(t, err.Error(), strconv.Quote(bad), "the error names the registry")
	}
}

func TestAgentURL(t *testing.T) {
	for _, c := range []struct{ addr, ca, want string }{
		{"127.0.0.1:16000", "", "http://127.0.0.1:16000"},
		{"127.0.0.1:16000", "/ca.pem", "https://127.0.0.1:16000"},
		{"https://agent.local:16000", "", "https://agent.local:16000"},
		{"http://127.0.0.1:16000/", "", "http://127.0.0.1:16000"},
	} {
		got, err := nodeconfig.AgentURL(c.addr, c.ca)
		require.NoError(t, err, c.addr)
		assert.Equal(t, c.want, got)
	}
	for _, bad := range []string{"127.0.0.1", "ftp://x:1", "http://x:1/v2", "http://127.0.0.1:16000", "x:\"1"} {
		ca := ""
		if bad == "http://127.0.0.1:16000" {
			ca = "/ca.pem" // http with a CA is a contradiction
		}
		_, err := nodeconfig.AgentURL(bad, ca)
		assert.Error(t, err, bad)
	}
}

func TestHostsTOMLParsesBack(t *testing.T) {
	for _, c := range []struct {
		registry   string
		m          nodeconfig.Mirror
		wantServer string
	}{
		{"docker.io", nodeconfig.Mirror{Agent: "http://127.0.0.1:16000", Fallback: true}, "https://registry-1.docker.io"},
		{"ghcr.io", nodeconfig.Mirror{Agent: "https://127.0.0.1:16000", CAFile: "/etc/krakenctl/ca.pem", Fallback: true}, "https://ghcr.io"},
		{"ghcr.io", nodeconfig.Mirror{Agent: "http://127.0.0.1:16000"}, "http://127.0.0.1:16000"},
		{"_default", nodeconfig.Mirror{Agent: "http://127.0.0.1:16000", Fallback: true}, ""},
	} {
		data := nodeconfig.HostsTOML(c.registry, c.m)
		h, err := nodeconfig.ParseHosts(c.registry, "x", data)
		require.NoError(t, err, "%s", data)
		assert.Equal(t, c.wantServer, h.Server)
		require.Len(t, h.Mirrors, 1)
		assert.Equal(t, c.m.Agent, h.Mirrors[0].URL)
		assert.Equal(t, []string{"pull", "resolve"}, h.Mirrors[0].Capabilities)
		if c.m.CAFile != "" {
			assert.Equal(t, []string{c.m.CAFile}, h.Mirrors[0].CA)
		}
		assert.True(t, h.PullsThrough("127.0.0.1:16000"))
		assert.False(t, h.PullsThrough("127.0.0.1:16001"))
	}
}

func TestWriteHosts(t *testing.T) {
	dir := t.TempDir()
	m := nodeconfig.Mirror{Agent: "http://127.0.0.1:16000", Fallback: true}

	files, err := nodeconfig.WriteHosts(dir, []string{"docker.io", "ghcr.io", "docker.io"}, m, true)
	require.NoError(t, err)
	require.Len(t, files, 2, "duplicates are written once")
	assert.Equal(t, nodeconfig.Created, files[0].Action)
	_, err = os.Stat(filepath.Join(dir, "docker.io"))
	require.ErrorIs(t, err, os.ErrNotExist, "a dry run writes nothing")

	files, err = nodeconfig.WriteHosts(dir, []string{"docker.io", "ghcr.io"}, m, false)
	require.NoError(t, err)
	for _, f := range files {
		assert.Equal(t, nodeconfig.Created, f.Action)
		data, err := os.ReadFile(f.Path)
		require.NoError(t, err)
		assert.Equal(t, f.Content, string(data))
	}
	hosts, err := nodeconfig.ReadHosts(dir)
	require.NoError(t, err)
	require.Len(t, hosts, 2)
	assert.Equal(t, "docker.io", hosts[0].Registry)
	assert.True(t, hosts[0].PullsThrough("127.0.0.1:16000"))

	// Idempotent: the same call changes nothing; another agent updates.
	files, err = nodeconfig.WriteHosts(dir, []string{"docker.io"}, m, false)
	require.NoError(t, err)
	assert.Equal(t, nodeconfig.Unchanged, files[0].Action)
	m.Agent = "http://127.0.0.2:16000"
	files, err = nodeconfig.WriteHosts(dir, []string{"docker.io"}, m, false)
	require.NoError(t, err)
	assert.Equal(t, nodeconfig.Updated, files[0].Action)
	hosts, err = nodeconfig.ReadHosts(dir)
	require.NoError(t, err)
	assert.True(t, hosts[0].PullsThrough("127.0.0.2:16000"))

	entries, err := os.ReadDir(filepath.Join(dir, "docker.io"))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file is left behind")
}

func TestWriteHostsRefuses(t *testing.T) {
	dir := t.TempDir()
	m := nodeconfig.Mirror{Agent: "http://127.0.0.1:16000", Fallback: true}
	_, err := nodeconfig.WriteHosts(dir, []string{"docker.io", "../escape"}, m, false)
	require.ErrorIs(t, err, nodeconfig.ErrInvalidRegistry)
	assert.Contains(t, err.Error(), "../escape")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "one bad name writes nothing, not even the good ones")

	// A registry directory that is a link elsewhere is not written through.
	outside := t.TempDir()
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "ghcr.io")))
	_, err = nodeconfig.WriteHosts(dir, []string{"ghcr.io"}, m, false)
	require.ErrorContains(t, err, "symbolic link")
	entries, err = os.ReadDir(outside)
	require.NoError(t, err)
	assert.Empty(t, entries)
}

func TestReadHostsHandWritten(t *testing.T) {
	dir := t.TempDir()
	write := func(reg, content string) {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, reg), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, reg, "hosts.toml"), []byte(content), 0o644))
	}
	write("quay.io", `server = "https://quay.io"
[host."https://mirror.example:5000"]
  capabilities = ["pull"]
[host."127.0.0.1:16000"]
  capabilities = ["pull", "resolve"]
  ca = ["/a.pem", "/b.pem"]
`)
	write("bad.io", "server = [")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "empty.io"), 0o755))
	hosts, err := nodeconfig.ReadHosts(dir)
	require.ErrorContains(t, err, filepath.Join(dir, "bad.io", "hosts.toml"))
	require.Len(t, hosts, 1)
	h := hosts[0]
	require.Len(t, h.Mirrors, 2)
	assert.Equal(t, "https://mirror.example:5000", h.Mirrors[0].URL, "file order is containerd's order")
	assert.Equal(t, []string{"/a.pem", "/b.pem"}, h.Mirrors[1].CA)
	assert.True(t, h.PullsThrough("127.0.0.1:16000"), "a host without a scheme is https")
	assert.False(t, h.PullsThrough("mirror.example:5000"), "pull without resolve does not resolve tags")

	_, err = nodeconfig.ReadHosts(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestMergeDockerMirror(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "daemon.json")
	const agent = "http://127.0.0.1:16000"

	res, err := nodeconfig.MergeDockerMirror(path, agent, false)
	require.NoError(t, err)
	assert.Equal(t, nodeconfig.Created, res.Action)
	assert.Equal(t, []string{agent}, readMirrors(t, path))

	require.NoError(t, os.WriteFile(path, []byte(`{"log-driver": "journald", "registry-mirrors": ["https://mirror.gcr.io"], "features": {"buildkit": true}}`), 0o600))
	require.NoError(t, os.Chmod(path, 0o600))
	res, err = nodeconfig.MergeDockerMirror(path, agent, false)
	require.NoError(t, err)
	assert.Equal(t, nodeconfig.Updated, res.Action)
	assert.Equal(t, []string{agent, "https://mirror.gcr.io"}, readMirrors(t, path))
	var doc map[string]any
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &doc))
	assert.Equal(t, "journald", doc["log-driver"], "other keys are kept")
	assert.Equal(t, map[string]any{"buildkit": true}, doc["features"])
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the file keeps its mode")

	res, err = nodeconfig.MergeDockerMirror(path, agent, false)
	require.NoError(t, err)
	assert.Equal(t, nodeconfig.Unchanged, res.Action, "idempotent")
	assert.Equal(t, []string{agent, "https://mirror.gcr.io"}, readMirrors(t, path))

	for _, bad := range []string{`not json`, `[1, 2]`, `null`, `{"a": 1} {"b": 2}`, `{"registry-mirrors": "http://x"}`} {
		require.NoError(t, os.WriteFile(path, []byte(bad), 0o644))
		_, err := nodeconfig.MergeDockerMirror(path, agent, false)
		require.Error(t, err, bad)
		data, rerr := os.ReadFile(path)
		require.NoError(t, rerr)
		assert.Equal(t, bad, string(data), "a refused file is left as it is")
	}
}

func readMirrors(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var doc struct {
		Mirrors []string `json:"registry-mirrors"`
	}
	require.NoError(t, json.Unmarshal(data, &doc))
	return doc.Mirrors
}

// testCA returns a new CA certificate in PEM.
func testCA(t *testing.T) []byte {
	t.Helper()
	ca, err := pki.NewCA("test CA")
	require.NoError(t, err)
	return ca.CertPEM()
}

func TestInstallCA(t *testing.T) {
	dir := t.TempDir()
	ca := testCA(t)
	src := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, os.WriteFile(src, append(ca, testCA(t)...), 0o600))
	dst := filepath.Join(dir, "krakenctl-ca.crt")

	f, err := nodeconfig.InstallCA(src, dst, true)
	require.NoError(t, err)
	assert.Equal(t, nodeconfig.Created, f.Action)
	assert.NoFileExists(t, dst, "a dry run writes nothing")

	f, err = nodeconfig.InstallCA(src, dst, false)
	require.NoError(t, err)
	assert.True(t, f.CA)
	assert.Equal(t, nodeconfig.Created, f.Action)
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	want, _ := os.ReadFile(src)
	assert.Equal(t, want, got)
	st, err := os.Stat(dst)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm(), "containerd reads it")

	f, err = nodeconfig.InstallCA(src, dst, false)
	require.NoError(t, err)
	assert.Equal(t, nodeconfig.Unchanged, f.Action)

	// The CA file beside the registries does not disturb reading them back.
	_, err = nodeconfig.WriteHosts(dir, []string{"docker.io"}, nodeconfig.Mirror{Agent: "https://127.0.0.1:16000", CAFile: dst}, false)
	require.NoError(t, err)
	hosts, err := nodeconfig.ReadHosts(dir)
	require.NoError(t, err)
	require.Len(t, hosts, 1)
	assert.Equal(t, "docker.io", hosts[0].Registry)

	// A rotated CA replaces it.
	require.NoError(t, os.WriteFile(src, ca, 0o600))
	f, err = nodeconfig.InstallCA(src, dst, false)
	require.NoError(t, err)
	assert.Equal(t, nodeconfig.Updated, f.Action)
}

func TestInstallCARefuses(t *testing.T) {
	dir := t.TempDir()
	write := func(data []byte) string {
		p := filepath.Join(t.TempDir(), "ca")
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	good := write(testCA(t))
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("x")})
	for name, c := range map[string]struct {
		src, dst, want string
	}{
		"missing source":  {filepath.Join(dir, "nope"), filepath.Join(dir, "ca.crt"), "read the CA"},
		"not PEM":         {write([]byte("hello")), filepath.Join(dir, "ca.crt"), "not PEM"},
		"empty":           {write(nil), filepath.Join(dir, "ca.crt"), "no PEM certificate"},
		"a private key":   {write(append(testCA(t), keyPEM...)), filepath.Join(dir, "ca.crt"), `"EC PRIVATE KEY" block`},
		"bad certificate": {write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})), filepath.Join(dir, "ca.crt"), "certificate 1"},
		"too large":       {write(make([]byte, 1<<20+1)), filepath.Join(dir, "ca.crt"), "larger than"},
		"relative dest":   {good, "ca.crt", "absolute path"},
		"dest is symlink": {good, symlinkTo(t, dir), "not a regular file"},
		"dest is dir":     {good, dir, "not a regular file"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := nodeconfig.InstallCA(c.src, c.dst, false)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	target, err := os.ReadFile(filepath.Join(dir, "target"))
	require.NoError(t, err)
	assert.Equal(t, "untouched", string(target), "nothing is written through the link")
}

// symlinkTo makes dir/link pointing at dir/target (holding "untouched") and returns the link.
func symlinkTo(t *testing.T, dir string) string {
	t.Helper()
	target := filepath.Join(dir, "target")
	require.NoError(t, os.WriteFile(target, []byte("untouched"), 0o600))
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(target, link))
	return link
}

func TestMergeDockerMirrorThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "managed", "daemon.json")
	require.NoError(t, os.MkdirAll(filepath.Dir(target), 0o755))
	require.NoError(t, os.WriteFile(target, []byte(`{"data-root": "/mnt/docker"}`), 0o644))
	link := filepath.Join(dir, "daemon.json")
	require.NoError(t, os.Symlink(target, link))

	res, err := nodeconfig.MergeDockerMirror(link, "http://127.0.0.1:16000", false)
	require.NoError(t, err)
	assert.Equal(t, target, res.Path, "the file the link points at is the one written")
	st, err := os.Lstat(link)
	require.NoError(t, err)
	assert.NotZero(t, st.Mode()&os.ModeSymlink, "the link stays a link")
	assert.Equal(t, []string{"http://127.0.0.1:16000"}, readMirrors(t, target))

	dangling := filepath.Join(dir, "dangling.json")
	require.NoError(t, os.Symlink(filepath.Join(dir, "nowhere", "daemon.json"), dangling))
	_, err = nodeconfig.MergeDockerMirror(dangling, "http://127.0.0.1:16000", false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "symbolic link to nothing")
	assert.NoDirExists(t, filepath.Join(dir, "nowhere"))
}
