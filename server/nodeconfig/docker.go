package nodeconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// DefaultDockerConfig is dockerd's configuration file.
const DefaultDockerConfig = "/etc/docker/daemon.json"

// mirrorsKey is daemon.json's list of Docker Hub mirrors: dockerd uses them for docker.io only.
const mirrorsKey = "registry-mirrors"

// DockerResult is what MergeDockerMirror did (or, in a dry run, would do).
type DockerResult struct {
	Path    string   `json:"path"`
	Action  Action   `json:"action"`
	Mirrors []string `json:"registry_mirrors"`
	Content string   `json:"content"`
}

// MergeDockerMirror puts agentURL first in the registry-mirrors of the daemon.json at path,
// keeping every other key and mirror. A missing file is created; a file that is not a JSON
// object, or whose registry-mirrors is not a list of strings, is refused and left as it is.
//
// A daemon.json that is a symbolic link (to a file that configuration management owns, say) is
// written where the link points, so the link stays; Path in the result is that file.
func MergeDockerMirror(path, agentURL string, dryRun bool) (DockerResult, error) {
	res := DockerResult{Path: path}
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	} else if st, lerr := os.Lstat(path); lerr == nil && st.Mode()&fs.ModeSymlink != 0 {
		// A dangling link: creating its target could put the file anywhere.
		return res, fmt.Errorf("%s is a symbolic link to nothing (%w); leaving it as it is", path, err)
	}
	res.Path = path
	doc := map[string]json.RawMessage{}
	mode := fs.FileMode(0o644)
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		res.Action = Created
	case err != nil:
		return res, fmt.Errorf("read %s: %w", path, err)
	default:
		res.Action = Updated
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
		if len(bytes.TrimSpace(old)) > 0 {
			dec := json.NewDecoder(bytes.NewReader(old))
			if err := dec.Decode(&doc); err != nil {
				return res, fmt.Errorf("%s is not a JSON object, leaving it as it is: %w", path, err)
			}
			if dec.More() {
				return res, fmt.Errorf("%s has more than one JSON value, leaving it as it is", path)
			}
			if doc == nil {
				return res, fmt.Errorf("%s is not a JSON object (null), leaving it as it is", path)
			}
		}
	}
	var mirrors []string
	if raw, ok := doc[mirrorsKey]; ok {
		if err := json.Unmarshal(raw, &mirrors); err != nil {
			return res, fmt.Errorf("%s: %q is not a list of strings, leaving it as it is: %w", path, mirrorsKey, err)
		}
	}
	mirrors = slices.DeleteFunc(mirrors, func(m string) bool { return m == agentURL || m == agentURL+"/" })
	mirrors = append([]string{agentURL}, mirrors...)
	res.Mirrors = mirrors
	raw, err := json.Marshal(mirrors)
	if err != nil {
		return res, fmt.Errorf("write %s: %w", path, err)
	}
	doc[mirrorsKey] = raw
	// Keys come out sorted: dockerd does not care about their order, and other values keep
	// their bytes (RawMessage), re-indented.
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return res, fmt.Errorf("write %s: %w", path, err)
	}
	out = append(out, '\n')
	res.Content = string(out)
	if res.Action == Updated && jsonEqual(old, out) {
		res.Action = Unchanged
	}
	if dryRun || res.Action == Unchanged {
		return res, nil
	}
	if err := writeAtomic(path, out, mode); err != nil {
		return res, err
	}
	return res, nil
}

// jsonEqual reports whether a and b hold the same JSON value, whatever their layout.
func jsonEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}
