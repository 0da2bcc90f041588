package backends_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/azure"
	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/backend/s3"
	"github.com/krakenctl/krakenctl/backend/webhdfs"
	"github.com/krakenctl/krakenctl/backend/webhdfs/webhdfstest"
	"github.com/krakenctl/krakenctl/server/backends"
)

// TestValidate: a route names a namespace regular expression and exactly one backend, whose own
// config is checked too; each refusal names what is wrong.
func TestValidate(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for _, tc := range []struct {
		cfg  backends.Config
		want string
	}{
		{backends.Config{FS: &fs.Config{Root: root}}, "namespace: required"},
		{backends.Config{Namespace: "(", FS: &fs.Config{Root: root}}, "namespace: error parsing regexp"},
		{backends.Config{Namespace: ".*"}, "no backend configured: set one of fs, s3, gcs, azure, webhdfs, http, registry"},
		{backends.Config{Namespace: ".*", FS: &fs.Config{Root: root}, S3: &s3.Config{Bucket: "b"}}, "more than one backend configured ([fs s3])"},
		{backends.Config{Namespace: ".*", FS: &fs.Config{}}, "fs: "},
		{backends.Config{Namespace: ".*", S3: &s3.Config{}}, "s3: "},
		{backends.Config{Namespace: ".*", WebHDFS: &webhdfs.Config{Root: "/k"}}, "webhdfs: namenodes: at least one"},
		{backends.Config{Namespace: ".*", Azure: &azure.Config{}}, "azure: account: must be set"},
		{backends.Config{Namespace: ".*", Azure: &azure.Config{Account: "acct1", Container: "blobs"}}, "azure: account_key_file: no credentials"},
	} {
		err := tc.cfg.Validate()
		require.Error(t, err, tc.want)
		require.ErrorContains(t, err, tc.want)
	}
	ok := backends.Config{Namespace: "library/.*", FS: &fs.Config{Root: root}}
	require.NoError(t, ok.Validate())
}

// TestResolve: an injected backend wins, no routes means no backend, and routes become a
// router that sends each namespace to its first matching route.
func TestResolve(t *testing.T) {
	t.Parallel()
	injected := memory.New()
	got, err := backends.Resolve(t.Context(), injected, []backends.Config{{Namespace: ".*", FS: &fs.Config{Root: t.TempDir()}}})
	require.NoError(t, err)
	require.Same(t, backend.Backend(injected), got)

	got, err = backends.Resolve(t.Context(), nil, nil)
	require.NoError(t, err)
	require.Nil(t, got)

	libRoot, restRoot := t.TempDir(), t.TempDir()
	got, err = backends.Resolve(t.Context(), nil, []backends.Config{
		{Namespace: "library/.*", FS: &fs.Config{Root: libRoot}},
		{Namespace: ".*", FS: &fs.Config{Root: restRoot}},
	})
	require.NoError(t, err)
	require.NoError(t, got.Upload(t.Context(), "library/app", "a", bytes.NewReader([]byte("lib")), 3))
	require.NoError(t, got.Upload(t.Context(), "team/app", "b", bytes.NewReader([]byte("rest")), 4))
	lib, err := fs.New(fs.Config{Root: libRoot})
	require.NoError(t, err)
	_, err = lib.Stat(t.Context(), "library/app", "a")
	require.NoError(t, err, "library/ went to the first route")
	_, err = lib.Stat(t.Context(), "team/app", "b")
	require.ErrorIs(t, err, backend.ErrNotFound, "team/ did not")
}

// TestWebHDFSRoute: a webhdfs route validates and builds into a backend that stores through the
// namenode's redirect (the spec server stands in for HDFS).
func TestWebHDFSRoute(t *testing.T) {
	t.Parallel()
	srv := webhdfstest.Start(t, webhdfstest.Options{})
	cfg := backends.Config{Namespace: ".*", WebHDFS: &webhdfs.Config{Namenodes: srv.NamenodeURLs(), Root: "/kraken"}}
	require.NoError(t, cfg.Validate())
	got, err := backends.Resolve(t.Context(), nil, []backends.Config{cfg})
	require.NoError(t, err)
	require.NoError(t, got.Upload(t.Context(), "library/app", "a", bytes.NewReader([]byte("hdfs")), 4))
	data, ok := srv.ReadFile("/kraken/library/app/_objects/a")
	require.True(t, ok)
	require.Equal(t, "hdfs", string(data))
}
