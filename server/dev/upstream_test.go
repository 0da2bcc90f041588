package dev

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/origin"
)

func TestParseUpstream(t *testing.T) {
	t.Parallel()
	u, err := ParseUpstream("library/.*=http://127.0.0.1:5000")
	require.NoError(t, err)
	require.Equal(t, "library/.*", u.Namespace)
	require.Equal(t, "127.0.0.1:5000", u.Registry.Address)
	require.True(t, u.Registry.Insecure)
	u, err = ParseUpstream("a|b=https://registry.example/")
	require.NoError(t, err)
	require.Equal(t, "registry.example", u.Registry.Address)
	require.False(t, u.Registry.Insecure)
	for v, want := range map[string]string{
		"library/.*":                  "want REGEX=URL",
		"=http://127.0.0.1:5000":      "want REGEX=URL",
		"(=http://127.0.0.1:5000":     "repository pattern",
		"x=ftp://127.0.0.1:5000":      "want http:// or https://",
		"x=127.0.0.1:5000":            "want http:// or https://",
		"x=http://127.0.0.1:5000/v2":  "nothing more",
		"x=http://u:p@127.0.0.1:5000": "nothing more",
	} {
		_, err := ParseUpstream(v)
		require.ErrorContains(t, err, want, v)
	}
}

// TestWithUpstreams: the upstream routes come before the shared backend on origins and the
// build-index, and the build-index's tag write-back keeps a writable route ahead of them.
func TestWithUpstreams(t *testing.T) {
	t.Parallel()
	u, err := ParseUpstream(".*=http://127.0.0.1:5000")
	require.NoError(t, err)
	shared := backends.Config{Namespace: ".*", Name: "shared-fs", FS: &fs.Config{Root: t.TempDir()}}
	o, b := withUpstreams([]Upstream{u}, nil, nil)
	oc := origin.Config{Backends: []backends.Config{shared}}
	o(0, &oc)
	require.Len(t, oc.Backends, 2)
	require.NotNil(t, oc.Backends[0].Registry)
	require.Equal(t, shared, oc.Backends[1])

	bc := buildindex.Config{Dir: t.TempDir(), Backends: []backends.Config{shared}}
	off := false
	bc.VerifyContent = &off
	b(0, &bc)
	require.Len(t, bc.Backends, 3)
	require.NotNil(t, bc.Backends[0].FS, "the tags' route")
	require.NotNil(t, bc.Backends[1].Registry)
	bc.Defaults()
	require.NoError(t, bc.Validate(), "the tags namespace must not route to the registry")
}
