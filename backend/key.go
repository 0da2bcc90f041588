package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidKey means a namespace or name is not acceptable as a storage key: empty where one
// is required, too long, or able to escape its directory (".." segments, absolute paths,
// backslashes, control characters).
var ErrInvalidKey = errors.New("backend: invalid key")

// maxNamespaceLen matches the OCI distribution limit on repository names.
const maxNamespaceLen = 255

// CheckNamespace reports whether ns is safe to use as a storage key. Namespaces are
// slash-separated path components of lower-case letters, digits and the separators ".", "_",
// "-" (the OCI repository-name grammar, which also rules out traversal).
func CheckNamespace(ns string) error {
	if ns == "" {
		return fmt.Errorf("%w: empty namespace", ErrInvalidKey)
	}
	if len(ns) > maxNamespaceLen {
		return fmt.Errorf("%w: namespace longer than %d bytes", ErrInvalidKey, maxNamespaceLen)
	}
	for _, comp := range strings.Split(ns, "/") {
		if !validComponent(comp) {
			return fmt.Errorf("%w: namespace %q: component %q must match [a-z0-9]+([._-][a-z0-9]+)*", ErrInvalidKey, ns, comp)
		}
	}
	return nil
}

// CheckName reports whether name is safe as an object name within a namespace: non-empty,
// at most 255 bytes, and made of [A-Za-z0-9._-] only, never "." or "..".
func CheckName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 255 {
		return fmt.Errorf("%w: name %q", ErrInvalidKey, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !keyByte(c) {
			return fmt.Errorf("%w: name %q has byte %q", ErrInvalidKey, name, c)
		}
	}
	return nil
}

func validComponent(c string) bool {
	if c == "" {
		return false
	}
	alnum := func(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }
	if !alnum(c[0]) || !alnum(c[len(c)-1]) {
		return false
	}
	for i := 1; i < len(c); i++ {
		b := c[i]
		if alnum(b) {
			continue
		}
		if b != '.' && b != '_' && b != '-' {
			return false
		}
		// Separators may repeat only as "__" or a run of "-" (OCI grammar); ".." never.
		if b == '.' && c[i-1] == '.' {
			return false
		}
	}
	return true
}

// keyByte reports whether c may appear in an object name: ASCII letters, digits, '.', '_', '-'.
func keyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// ObjectsElem is the path element between a namespace and its objects' names in the stores
// that keep objects under flat keys or paths (s3, gcs, azure, webhdfs):
// "library/_objects/NAME". No namespace component can be "_objects" (CheckNamespace: they start
// with a letter or digit), so a namespace's objects and a nested namespace ("library/ubuntu")
// never share a key, and a listing with a "/" delimiter sees only its own.
const ObjectsElem = "_objects"

// CheckRequest returns, before any I/O, ctx's error, or the error of a namespace or name that
// CheckNamespace or CheckName refuses: what every backend method checks first.
func CheckRequest(ctx context.Context, namespace, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := CheckNamespace(namespace); err != nil {
		return err
	}
	return CheckName(name)
}
