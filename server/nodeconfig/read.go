package nodeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// maxHostsFile bounds how much of a hosts.toml is read: real ones are a few hundred bytes.
const maxHostsFile = 1 << 20

// Hosts is one registry's hosts.toml as containerd reads it: the mirrors it tries in order,
// then the server.
type Hosts struct {
	Registry string `json:"registry"`
	Path     string `json:"path"`
	Server   string `json:"server,omitempty"`
	// Mirrors are the [host."URL"] entries in the order they appear, which is the order
	// containerd tries them in.
	Mirrors []HostEntry `json:"mirrors,omitempty"`
}

// HostEntry is one [host."URL"] table.
type HostEntry struct {
	URL          string   `json:"url"`
	Capabilities []string `json:"capabilities,omitempty"`
	CA           []string `json:"ca,omitempty"`
}

// hostsFile is the part of containerd's hosts.toml this package reads.
type hostsFile struct {
	Server string               `toml:"server"`
	Host   map[string]hostTable `toml:"host"`
}

type hostTable struct {
	Capabilities []string `toml:"capabilities"`
	// CA is a path or a list of paths.
	CA any `toml:"ca"`
}

// ParseHosts parses a hosts.toml. Unknown keys are allowed (containerd has more: header,
// skip_verify, client, override_path).
func ParseHosts(registry, path string, data []byte) (Hosts, error) {
	var f hostsFile
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return Hosts{}, fmt.Errorf("parse %s: %w", path, err)
	}
	h := Hosts{Registry: registry, Path: path, Server: f.Server}
	// Keys() lists tables in file order, which is containerd's order of trying them.
	var order []string
	for _, k := range md.Keys() {
		if len(k) == 2 && k[0] == "host" && !slices.Contains(order, k[1]) {
			order = append(order, k[1])
		}
	}
	for u := range f.Host {
		if !slices.Contains(order, u) {
			order = append(order, u)
		}
	}
	for _, u := range order {
		t := f.Host[u]
		e := HostEntry{URL: u, Capabilities: t.Capabilities}
		if t.Capabilities == nil {
			// containerd's default for a host without capabilities.
			e.Capabilities = []string{"pull", "resolve", "push"}
		}
		switch ca := t.CA.(type) {
		case string:
			e.CA = []string{ca}
		case []any:
			for _, c := range ca {
				if s, ok := c.(string); ok {
					e.CA = append(e.CA, s)
				}
			}
		}
		h.Mirrors = append(h.Mirrors, e)
	}
	return h, nil
}

// ReadHosts reads every <registry>/hosts.toml under dir, sorted by registry. A missing dir
// wraps fs.ErrNotExist; registry directories without a hosts.toml are skipped; a file that does
// not parse is an error naming it (after the others are read).
func ReadHosts(dir string) ([]Hosts, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read containerd hosts directory: %w", err)
	}
	var out []Hosts
	var errs []error
	for _, e := range entries {
		if !e.IsDir() && e.Type()&fs.ModeSymlink == 0 {
			continue // a file beside the registries' directories: the CA of InstallCA, say
		}
		path := filepath.Join(dir, e.Name(), HostsFile)
		st, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", path, err))
			continue
		}
		if st.Size() > maxHostsFile {
			errs = append(errs, fmt.Errorf("read %s: %d bytes, more than a hosts.toml has", path, st.Size()))
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", path, err))
			continue
		}
		h, err := ParseHosts(e.Name(), path, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Registry < out[j].Registry })
	return out, errors.Join(errs...)
}

// PullsThrough reports whether h sends pulls to the agent at hostport (host:port): a mirror
// with that host that may pull and resolve, or the server itself.
func (h Hosts) PullsThrough(hostport string) bool {
	for _, m := range h.Mirrors {
		if u, err := url.Parse(withScheme(m.URL)); err == nil && u.Host == hostport &&
			slices.Contains(m.Capabilities, "pull") && slices.Contains(m.Capabilities, "resolve") {
			return true
		}
	}
	if u, err := url.Parse(withScheme(h.Server)); err == nil && u.Host == hostport {
		return true
	}
	return false
}

// withScheme gives a host key without a scheme containerd's default one, https.
func withScheme(s string) string {
	if s != "" && !strings.Contains(s, "://") {
		return "https://" + s
	}
	return s
}
