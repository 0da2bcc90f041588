package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrNoEndpoints means an endpoints file lists no addresses at all.
var ErrNoEndpoints = errors.New("endpoints file lists no addresses")

// Endpoints is the endpoints file: the addresses of a cluster's roles, which `krakenctl dev up`
// writes (server/dev) so that operator commands (cli/endpoints) find the cluster without flags:
//
//	origins: ["127.0.0.1:15000", "127.0.0.1:15001", "127.0.0.1:15002"]
//	build_index: ["127.0.0.1:15100"]
//	trackers: ["127.0.0.1:15300"]
//	proxy: ["127.0.0.1:15400"]
//	agents: ["127.0.0.1:16000"]
//	admin:
//	  origins: ["127.0.0.1:15310", "127.0.0.1:15311", "127.0.0.1:15312"]
//	  build_index: ["127.0.0.1:15303"]
//	  trackers: ["127.0.0.1:15301"]
//	  proxy: ["127.0.0.1:15302"]
//	  agents: ["127.0.0.1:16002"]
//	tls:                                  # only for a cluster that runs with TLS (dev up --tls)
//	  ca_file: /home/me/.local/state/krakenctl/dev/tls/ca.pem
//	  cert_file: /home/me/.local/state/krakenctl/dev/tls/admin.pem
//	  key_file: /home/me/.local/state/krakenctl/dev/tls/admin-key.pem
//
// A file whose name ends in ".json" is written as JSON with the same keys (which ReadEndpoints
// reads too: JSON is YAML).
type Endpoints struct {
	Origins []string `yaml:"origins" json:"origins"`
	// BuildIndex lists the build-index nodes' API addresses; any of them serves every request.
	BuildIndex []string `yaml:"build_index,omitempty" json:"build_index,omitempty"`
	// Trackers lists the trackers' addresses.
	Trackers []string `yaml:"trackers,omitempty" json:"trackers,omitempty"`
	// Proxy lists the registry proxies' addresses: where images are pushed.
	Proxy []string `yaml:"proxy,omitempty" json:"proxy,omitempty"`
	// Agents lists the agents' blob and registry API addresses: where images are pulled.
	Agents []string `yaml:"agents,omitempty" json:"agents,omitempty"`
	// Admin lists every role's admin listener (/metrics, /debug/pprof, /health, /readyz), in
	// the same order; nil in a file that names none.
	Admin *AdminEndpoints `yaml:"admin,omitempty" json:"admin,omitempty"`
	// TLS says how to reach a cluster that runs with TLS; nil for one in plain text.
	TLS *EndpointsTLS `yaml:"tls,omitempty" json:"tls,omitempty"`
}

// EndpointsTLS is how commands reach a cluster that runs with TLS: the CA its servers'
// certificates chain to, and the client certificate and key to present (an admin's, as dev up
// writes them), as absolute paths.
type EndpointsTLS struct {
	CAFile   string `yaml:"ca_file" json:"ca_file"`
	CertFile string `yaml:"cert_file,omitempty" json:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty" json:"key_file,omitempty"`
}

// AdminEndpoints are the addresses of the roles' admin listeners, by role as in Endpoints.
type AdminEndpoints struct {
	Origins    []string `yaml:"origins,omitempty" json:"origins,omitempty"`
	BuildIndex []string `yaml:"build_index,omitempty" json:"build_index,omitempty"`
	Trackers   []string `yaml:"trackers,omitempty" json:"trackers,omitempty"`
	Proxy      []string `yaml:"proxy,omitempty" json:"proxy,omitempty"`
	Agents     []string `yaml:"agents,omitempty" json:"agents,omitempty"`
}

// WriteEndpoints writes e to path atomically (a temporary file in the same directory, then a
// rename), creating the directory if needed: as JSON when path ends in ".json", else as YAML.
// A reader sees the old file or the new one, never a partial one.
func WriteEndpoints(path string, e Endpoints) (err error) {
	var data []byte
	if strings.EqualFold(filepath.Ext(path), ".json") {
		data, err = json.MarshalIndent(e, "", "  ")
		data = append(data, '\n')
	} else {
		data, err = yaml.Marshal(e)
	}
	if err != nil {
		return fmt.Errorf("write endpoints file: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write endpoints file: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write endpoints file: %w", err)
	}
	tmp := f.Name()
	// Only a failed write leaves the temporary file behind (the rename moves it into place), so
	// only then is it removed; one that cannot be removed is reported with the failure.
	defer func() {
		if err == nil {
			return
		}
		if rerr := os.Remove(tmp); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write endpoints file %s: %w", path, errors.Join(err, f.Close()))
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("write endpoints file %s: %w", path, errors.Join(err, f.Close()))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write endpoints file %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write endpoints file %s: %w", path, err)
	}
	return nil
}

// ReadEndpoints reads an endpoints file. Unknown keys are errors; a missing file wraps
// fs.ErrNotExist; a file that lists neither origins nor build-index nodes wraps ErrNoEndpoints.
func ReadEndpoints(path string) (Endpoints, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Endpoints{}, fmt.Errorf("read endpoints file: %w", err)
	}
	var e Endpoints
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&e); err != nil {
		return Endpoints{}, fmt.Errorf("read endpoints file %s: %w", path, err)
	}
	if len(e.Origins) == 0 && len(e.BuildIndex) == 0 && len(e.Agents) == 0 && len(e.Proxy) == 0 {
		return Endpoints{}, fmt.Errorf("read endpoints file %s: %w", path, ErrNoEndpoints)
	}
	return e, nil
}
