package api_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
)

func TestReadEndpoints(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}

	e, err := api.ReadEndpoints(write("ok.yaml", "origins: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n"))
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1:1", "127.0.0.1:2"}, e.Origins)

	_, err = api.ReadEndpoints(filepath.Join(dir, "missing.yaml"))
	require.ErrorIs(t, err, fs.ErrNotExist)

	_, err = api.ReadEndpoints(write("empty.yaml", "origins: []\n"))
	require.ErrorIs(t, err, api.ErrNoEndpoints)
	_, err = api.ReadEndpoints(write("empty-both.yaml", "origins: []\nbuild_index: []\n"))
	require.ErrorIs(t, err, api.ErrNoEndpoints)

	e, err = api.ReadEndpoints(write("bi.yaml", "build_index: [\"127.0.0.1:3\"]\n"))
	require.NoError(t, err, "a file may name only build-index nodes")
	require.Equal(t, []string{"127.0.0.1:3"}, e.BuildIndex)
	require.Empty(t, e.Origins)

	_, err = api.ReadEndpoints(write("unknown.yaml", "origins: [\"127.0.0.1:1\"]\nproxies: 3\n"))
	require.ErrorContains(t, err, "proxies")

	_, err = api.ReadEndpoints(write("garbage.yaml", "origins: {\n"))
	require.Error(t, err)

	// WriteEndpoints round-trips and leaves no temporary files.
	p := filepath.Join(dir, "sub", "rt.yaml")
	in := api.Endpoints{
		Origins: []string{"127.0.0.1:15000", "[::1]:15001"}, BuildIndex: []string{"127.0.0.1:15100"},
		Trackers: []string{"127.0.0.1:15300"}, Proxy: []string{"127.0.0.1:15400"}, Agents: []string{"127.0.0.1:16000"},
	}
	require.NoError(t, api.WriteEndpoints(p, in))
	out, err := api.ReadEndpoints(p)
	require.NoError(t, err)
	require.Equal(t, in, out)
	entries, err := os.ReadDir(filepath.Dir(p))
	require.NoError(t, err)
	require.Len(t, entries, 1)

	// A .json name gets JSON with the same keys, which ReadEndpoints reads back.
	pj := filepath.Join(dir, "sub", "rt.json")
	require.NoError(t, api.WriteEndpoints(pj, in))
	raw, err := os.ReadFile(pj)
	require.NoError(t, err)
	var doc map[string][]string
	require.NoError(t, json.Unmarshal(raw, &doc), "%s", raw)
	require.Equal(t, in.Proxy, doc["proxy"])
	require.Equal(t, in.BuildIndex, doc["build_index"])
	out, err = api.ReadEndpoints(pj)
	require.NoError(t, err)
	require.Equal(t, in, out)
}
