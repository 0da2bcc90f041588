package nodeconfig

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultContainerdDir is where containerd's CRI plugin reads hosts.toml files from when
// config_path is set as the docs recommend.
const DefaultContainerdDir = "/etc/containerd/certs.d"

// DefaultRegistry is the registry name that hosts.toml files are written for when none is given.
const DefaultRegistry = "docker.io"

// AnyRegistry is containerd's directory name for the configuration of every registry that has
// no directory of its own (honoured by containerd 1.6.20 and later).
const AnyRegistry = "_default"

// HostsFile is the file containerd reads in each registry's directory.
const HostsFile = "hosts.toml"

// ErrInvalidRegistry is wrapped by errors about a registry name that is not host[:port].
var ErrInvalidRegistry = errors.New("invalid registry name")

// Mirror is what a hosts.toml points containerd at: the host's agent.
type Mirror struct {
	// Agent is the agent's base URL: http://host:port, or https://host:port with CAFile.
	Agent string
	// CAFile, when set, is the CA that containerd checks the agent's certificate against.
	CAFile string
	// Fallback keeps the registry's own server as the last resort when the agent does not
	// have an image (or is down); without it, the agent is the only place pulls go.
	Fallback bool
}

// AgentURL turns an agent address (host:port, or an http(s) URL with nothing but a host) into
// the base URL hosts.toml names: https when caFile is set or the URL says so.
func AgentURL(addr, caFile string) (string, error) {
	scheme, hostport := "http", addr
	if caFile != "" {
		scheme = "https"
	}
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return "", fmt.Errorf("agent %q must be host:port or an http(s) URL with only a host", addr)
		}
		if u.Scheme == "http" && caFile != "" {
			return "", fmt.Errorf("agent %q is http but a CA file is given: use https://", addr)
		}
		scheme, hostport = u.Scheme, u.Host
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || host == "" || !validPort(port) || strings.ContainsAny(host, "\"\\ \t\r\n/") {
		return "", fmt.Errorf("agent %q must be host:port or an http(s) URL with only a host", addr)
	}
	return scheme + "://" + hostport, nil
}

// CheckRegistry accepts a registry name as containerd names its directories: a DNS name or IP
// address with an optional port (docker.io, ghcr.io, registry.local:5000, [::1]:5000), or
// AnyRegistry. Errors name the registry and wrap ErrInvalidRegistry.
func CheckRegistry(name string) error {
	if name == AnyRegistry {
		return nil
	}
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidRegistry, name, why)
	}
	if name == "" {
		return bad("empty")
	}
	if len(name) > 255 {
		return bad("longer than 255 characters")
	}
	host := name
	if h, port, err := net.SplitHostPort(name); err == nil {
		if !validPort(port) {
			return bad("the port must be a number from 1 to 65535")
		}
		host = h
	} else if strings.Contains(name, ":") && net.ParseIP(name) == nil {
		return bad("must be host[:port]")
	}
	if strings.HasPrefix(host, "[") {
		return bad("must be host[:port]")
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.To4() == nil && host == name {
			// containerd's directory for an IPv6 registry carries brackets only with a port;
			// without one the name would be ambiguous with a port, so ask for the bracketed form.
			return bad("an IPv6 address needs brackets and a port: [addr]:port")
		}
		return nil
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return bad("must be host[:port], a DNS name of non-empty labels")
		}
		for i, c := range label {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
				c == '-' && i > 0 && i < len(label)-1 || c == '_' && label == host
			if !ok {
				return bad("must be host[:port] (letters, digits, '-' and '.')")
			}
		}
	}
	return nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535 && strconv.Itoa(n) == p
}

// Upstream is the URL of a registry's own server: Docker Hub's API host for docker.io, else
// https://<registry>.
func Upstream(registry string) string {
	if registry == DefaultRegistry {
		return "https://registry-1.docker.io"
	}
	return "https://" + registry
}

// HostsTOML returns the hosts.toml for registry with m: the agent as the first host (pull and
// resolve only: pushes go to the registry), then the registry's own server when m.Fallback.
// Without the fallback, server is the agent as well, so containerd has nowhere else to go.
func HostsTOML(registry string, m Mirror) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by krakenctl agent containerd-config: pulls of %s go through the host's agent", registry)
	switch {
	case !m.Fallback:
		b.WriteString(",\n# and nowhere else (--no-fallback).\n")
		fmt.Fprintf(&b, "server = %q\n", m.Agent)
	case registry == AnyRegistry:
		b.WriteString(",\n# then to each registry's own server.\n")
	default:
		b.WriteString(",\n# then to the registry itself when the agent does not have an image.\n")
		fmt.Fprintf(&b, "server = %q\n", Upstream(registry))
	}
	if !m.Fallback && m.CAFile != "" {
		fmt.Fprintf(&b, "ca = %q\n", m.CAFile)
	}
	fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", m.Agent)
	if m.CAFile != "" {
		fmt.Fprintf(&b, "  ca = %q\n", m.CAFile)
	}
	return b.Bytes()
}

// Action says what Write did with a file.
type Action string

// The actions of Write.
const (
	Created   Action = "created"
	Updated   Action = "updated"
	Unchanged Action = "unchanged"
)

// File is one hosts.toml that WriteHosts wrote (or, in a dry run, would write), or the CA
// that InstallCA put beside them (Registry empty, CA true).
type File struct {
	Registry string `json:"registry,omitempty"`
	CA       bool   `json:"ca,omitempty"`
	Path     string `json:"path"`
	Action   Action `json:"action"`
	Content  string `json:"content"`
}

// WriteHosts writes registry/hosts.toml under dir for every registry, after checking all the
// names first, so that one bad name writes nothing. dryRun reports what would be done and
// writes nothing. A registry directory that is a symbolic link is refused: it could lead the
// write outside dir.
func WriteHosts(dir string, registries []string, m Mirror, dryRun bool) ([]File, error) {
	if dir == "" {
		return nil, errors.New("no containerd hosts directory given")
	}
	if len(registries) == 0 {
		registries = []string{DefaultRegistry}
	}
	seen := make(map[string]bool, len(registries))
	var uniq []string
	for _, r := range registries {
		if err := CheckRegistry(r); err != nil {
			return nil, err
		}
		if !seen[r] {
			seen[r] = true
			uniq = append(uniq, r)
		}
	}
	files := make([]File, 0, len(uniq))
	for _, r := range uniq {
		content := HostsTOML(r, m)
		regDir := filepath.Join(dir, r)
		// CheckRegistry keeps separators and ".." out of r; this states the invariant.
		if filepath.Dir(regDir) != filepath.Clean(dir) {
			return files, fmt.Errorf("%w %q: it leaves %s", ErrInvalidRegistry, r, dir)
		}
		path := filepath.Join(regDir, HostsFile)
		action, err := plan(regDir, path, content)
		if err != nil {
			return files, err
		}
		f := File{Registry: r, Path: path, Action: action, Content: string(content)}
		if !dryRun && action != Unchanged {
			if err := os.MkdirAll(regDir, 0o755); err != nil {
				return files, fmt.Errorf("write %s: %w", path, err)
			}
			if err := writeAtomic(path, content, 0o644); err != nil {
				return files, err
			}
		}
		files = append(files, f)
	}
	return files, nil
}

// maxCAFile bounds the CA bundle InstallCA reads: a bundle of a few roots is a few KiB.
const maxCAFile = 1 << 20

// InstallCA copies the CA bundle at src to dst, where containerd reads it (the ca of hosts.toml):
// for an init container that has the cluster CA in a mounted Secret and the node's certs.d
// mounted at the path containerd knows it by. src must hold only PEM certificates, at least
// one; dst is written atomically and only when it changes, never through a symbolic link.
func InstallCA(src, dst string, dryRun bool) (File, error) {
	f, err := os.Open(src)
	if err != nil {
		return File{}, fmt.Errorf("read the CA: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCAFile+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return File{}, fmt.Errorf("read the CA %s: %w", src, err)
	}
	if len(data) > maxCAFile {
		return File{}, fmt.Errorf("the CA %s is larger than %d bytes: not a CA bundle", src, maxCAFile)
	}
	if err := checkCABundle(data); err != nil {
		return File{}, fmt.Errorf("the CA %s: %w", src, err)
	}
	if !filepath.IsAbs(dst) {
		return File{}, fmt.Errorf("the CA's destination %q must be an absolute path (containerd reads it as written)", dst)
	}
	out := File{CA: true, Path: dst, Content: string(data)}
	st, err := os.Lstat(dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		out.Action = Created
	case err != nil:
		return File{}, fmt.Errorf("write %s: %w", dst, err)
	case !st.Mode().IsRegular():
		return File{}, fmt.Errorf("write %s: it is not a regular file; refusing to write through it", dst)
	default:
		old, err := os.ReadFile(dst)
		if err != nil {
			return File{}, fmt.Errorf("write %s: %w", dst, err)
		}
		out.Action = Updated
		if bytes.Equal(old, data) {
			out.Action = Unchanged
		}
	}
	if dryRun || out.Action == Unchanged {
		return out, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return File{}, fmt.Errorf("write %s: %w", dst, err)
	}
	return out, writeAtomic(dst, data, 0o644)
}

// checkCABundle accepts PEM holding only certificates, at least one, each one parsing.
func checkCABundle(data []byte) error {
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if len(bytes.TrimSpace(rest)) > 0 {
				return errors.New("not PEM: bytes outside any PEM block")
			}
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("holds a %q block; a CA bundle holds only certificates", b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificate in it")
	}
	return nil
}

// plan says what writing content to path would do, refusing a symbolic link on the way.
func plan(regDir, path string, content []byte) (Action, error) {
	st, err := os.Lstat(regDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Created, nil
	case err != nil:
		return "", fmt.Errorf("write %s: %w", path, err)
	case st.Mode()&fs.ModeSymlink != 0:
		return "", fmt.Errorf("write %s: %s is a symbolic link; refusing to write through it", path, regDir)
	case !st.IsDir():
		return "", fmt.Errorf("write %s: %s is not a directory", path, regDir)
	}
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Created, nil
	case err != nil:
		return "", fmt.Errorf("write %s: %w", path, err)
	case bytes.Equal(old, content):
		return Unchanged, nil
	}
	return Updated, nil
}

// writeAtomic writes data to path through a temporary file in the same directory and a
// rename, so that containerd (which reads hosts.toml on every pull) sees the old file or the
// new one, never a partial one.
func writeAtomic(path string, data []byte, mode fs.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, errors.Join(err, f.Close()))
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, errors.Join(err, f.Close()))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, errors.Join(err, f.Close()))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
