package fs_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/backendtest"
	fsbackend "github.com/krakenctl/krakenctl/backend/fs"
)

func newBackend(t *testing.T, root string) *fsbackend.Backend {
	t.Helper()
	b, err := fsbackend.New(fsbackend.Config{Root: root})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		dir := t.TempDir()
		t.Cleanup(func() {
			// Nothing was written beside the root.
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Len(t, entries, 1)
			require.Equal(t, "root", entries[0].Name())
		})
		return newBackend(t, filepath.Join(dir, "root"))
	})
}

// files lists every regular file under dir, relative to dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	}))
	slices.Sort(out)
	return out
}

func TestLayout(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "root")
	b := newBackend(t, root)
	ctx := t.Context()
	require.NoError(t, b.Upload(ctx, "library", "ubuntu", bytes.NewReader([]byte("a")), 1))
	require.NoError(t, b.Upload(ctx, "library/ubuntu", "abc", bytes.NewReader([]byte("b")), 1))
	require.Equal(t, []string{"library/_objects/ubuntu", "library/ubuntu/_objects/abc"}, files(t, root))
	got, err := os.ReadFile(filepath.Join(root, "library/ubuntu/_objects/abc"))
	require.NoError(t, err)
	require.Equal(t, "b", string(got))
}

func TestInvalidKeysTouchNothing(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	b := newBackend(t, root)
	ctx := t.Context()
	for _, ns := range backendtest.InvalidNamespaces {
		err := b.Upload(ctx, ns, "x", bytes.NewReader([]byte("evil")), 4)
		require.ErrorIs(t, err, backend.ErrInvalidKey, "namespace %q", ns)
	}
	for _, name := range backendtest.InvalidNames {
		err := b.Upload(ctx, "ns", name, bytes.NewReader([]byte("evil")), 4)
		require.ErrorIs(t, err, backend.ErrInvalidKey, "name %q", name)
	}
	require.Empty(t, files(t, parent))
}

func TestSymlinkOutsideRootIsNotFollowed(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	outside := filepath.Join(parent, "outside")
	require.NoError(t, os.MkdirAll(filepath.Join(outside, "_objects"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "_objects", "secret"), []byte("secret"), 0o644))
	b := newBackend(t, root)
	require.NoError(t, os.Symlink(outside, filepath.Join(root, "escape")))

	ctx := t.Context()
	_, err := b.Stat(ctx, "escape", "secret")
	require.Error(t, err)
	var buf bytes.Buffer
	require.Error(t, b.Download(ctx, "escape", "secret", &buf))
	require.Zero(t, buf.Len())
	require.Error(t, b.Upload(ctx, "escape", "planted", bytes.NewReader([]byte("x")), 1))
	_, err = os.Stat(filepath.Join(outside, "_objects", "planted"))
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestLeftoverTempFilesAreIgnored(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "root")
	b := newBackend(t, root)
	ctx := t.Context()
	require.NoError(t, b.Upload(ctx, "ns", "a", bytes.NewReader([]byte("a")), 1))
	// What a crash in the middle of an Upload leaves behind.
	require.NoError(t, os.WriteFile(filepath.Join(root, "ns", "_objects", "~tmp-0123456789abcdef"), []byte("partial"), 0o644))
	names, err := b.List(ctx, "ns", "")
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, names)
}

func TestFailedUploadLeavesNoTempFile(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "root")
	b := newBackend(t, root)
	ctx := t.Context()
	require.Error(t, b.Upload(ctx, "ns", "a", bytes.NewReader([]byte("short")), 100))
	require.NoError(t, b.Upload(ctx, "ns", "b", bytes.NewReader([]byte("b")), 1))
	require.Equal(t, []string{"ns/_objects/b"}, files(t, root))
}

func TestStatOfDirectory(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "root")
	b := newBackend(t, root)
	require.NoError(t, os.MkdirAll(filepath.Join(root, "ns", "_objects", "dir"), 0o755))
	_, err := b.Stat(t.Context(), "ns", "dir")
	require.Error(t, err)
	require.NotErrorIs(t, err, backend.ErrNotFound)
	names, err := b.List(t.Context(), "ns", "")
	require.NoError(t, err)
	require.Empty(t, names)
}

func TestConfig(t *testing.T) {
	t.Parallel()
	err := fsbackend.Config{}.Validate()
	require.ErrorContains(t, err, "root")
	_, err = fsbackend.New(fsbackend.Config{})
	require.ErrorContains(t, err, "root: must be set")

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, err = fsbackend.New(fsbackend.Config{Root: file})
	require.Error(t, err)
}
