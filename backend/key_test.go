package backend_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
)

func TestCheckNamespace(t *testing.T) {
	t.Parallel()
	valid := []string{
		"a", "library", "library/ubuntu", "a/b/c/d", "my-org/my_image", "a.b/c-d/e__f",
		"a--b", "0", "9x/y9", strings.Repeat("a", 255), strings.Repeat("a/", 127) + "a",
	}
	for _, ns := range valid {
		require.NoError(t, backend.CheckNamespace(ns), "%q", ns)
	}
	invalid := []string{
		// Empty and too long.
		"", strings.Repeat("a", 256), strings.Repeat("a/", 128),
		// Traversal and absolute paths.
		".", "..", "../x", "x/..", "x/../y", "a/./b", "./a", "/abs", "/", "//", "abs/", "a//b",
		"..\\x", "a\\b", "\\", "C:\\x", "c:/x", "x/...", "...", "a..b",
		// URL-ish and encoded tricks: not decoded, simply not allowed.
		"%2e%2e/x", "a%2fb", "a?b", "a#b", "a:b", "a@b", "~", "a~b",
		// Case, spaces, control and non-ASCII characters.
		"A", "Library", "a b", " a", "a ", "a\tb", "a\nb", "a\x00b", "a\x7fb", "ü", "ａ",
		// Separators at the edges of a component.
		"-a", "a-", "_a", "a_", ".a", "a.", "a/-b", "a/b.", "a/_objects",
	}
	for _, ns := range invalid {
		err := backend.CheckNamespace(ns)
		require.ErrorIs(t, err, backend.ErrInvalidKey, "%q", ns)
	}
}

func TestCheckName(t *testing.T) {
	t.Parallel()
	valid := []string{
		"a", "A", "blob.tar", "A_b-c.d", ".hidden", "x..y", "...", "-", "_",
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", strings.Repeat("z", 255),
	}
	for _, n := range valid {
		require.NoError(t, backend.CheckName(n), "%q", n)
	}
	invalid := []string{
		"", ".", "..", "a/b", "/", "/x", "x/", "../x", "..\\x", "a\\b", "\\", "a b", "a\x00",
		"a\n", "\t", "ü", "a:b", "a~b", "sha256:abc", strings.Repeat("z", 256),
	}
	for _, n := range invalid {
		require.ErrorIs(t, backend.CheckName(n), backend.ErrInvalidKey, "%q", n)
	}
}

// FuzzCheckNamespace asserts that every namespace CheckNamespace accepts is a clean, relative
// path that cannot leave the directory it is joined to, on any OS.
func FuzzCheckNamespace(f *testing.F) {
	for _, s := range []string{
		"library/ubuntu", "a", "a/b/c", "a.b", "a__b", "a--b", "..", "../x", "/a", "a//b", "a\\b",
		"a/./b", "a/../b", "a.", "a..b", "a/b/", "C:/x", "a\x00", "ü",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ns string) {
		if backend.CheckNamespace(ns) != nil {
			return
		}
		if ns == "" || len(ns) > 255 {
			t.Fatalf("accepted namespace of length %d", len(ns))
		}
		if strings.Contains(ns, "..") {
			t.Fatalf("accepted %q containing \"..\"", ns)
		}
		if strings.HasPrefix(ns, "/") || strings.HasSuffix(ns, "/") {
			t.Fatalf("accepted %q with a leading or trailing slash", ns)
		}
		if strings.ContainsAny(ns, "\\:") {
			t.Fatalf("accepted %q containing a backslash or colon", ns)
		}
		if filepath.Clean(ns) != ns {
			t.Fatalf("accepted %q, which cleans to %q", ns, filepath.Clean(ns))
		}
		if filepath.IsAbs(ns) || !filepath.IsLocal(ns) {
			t.Fatalf("accepted %q, which is not a local path", ns)
		}
		for _, comp := range strings.Split(ns, "/") {
			if comp == "" || comp == "." || comp[0] == '_' {
				t.Fatalf("accepted %q with component %q", ns, comp)
			}
		}
		for i := 0; i < len(ns); i++ {
			if c := ns[i]; c < 0x21 || c > 0x7e || c >= 'A' && c <= 'Z' {
				t.Fatalf("accepted %q with byte %q", ns, c)
			}
		}
	})
}

// FuzzCheckName asserts that every accepted name is a single local path element.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"a", ".", "..", "a/b", "a\\b", ".a", "x..y", "sha256:ab", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if backend.CheckName(name) != nil {
			return
		}
		if name == "" || name == "." || name == ".." || len(name) > 255 {
			t.Fatalf("accepted %q", name)
		}
		if strings.ContainsAny(name, "/\\:~") {
			t.Fatalf("accepted %q containing a separator or \"~\"", name)
		}
		if filepath.Base(name) != name || !filepath.IsLocal(name) {
			t.Fatalf("accepted %q, which is not a single local path element", name)
		}
	})
}
