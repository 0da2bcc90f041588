package backend

import (
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
