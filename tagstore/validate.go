package tagstore

import (
	// Register the hash functions go-digest needs to validate sha256 and sha512 digests.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Limits of the OCI distribution grammar.
const (
	// MaxRepositoryLen is the longest repository name accepted.
	MaxRepositoryLen = 255
	// MaxTagLen is the longest tag accepted.
	MaxTagLen = 128
	// MaxNodeIDLen is the longest node ID accepted.
	MaxNodeIDLen = 128
)

var (
	// repoComponent is one path component of a repository name (OCI distribution spec).
	repoComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$`)
	// tagPattern is the OCI tag grammar.
	tagPattern = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	// nodeIDPattern keeps node IDs printable and safe in URLs, logs and file names.
	nodeIDPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)
)

// ValidateRepository reports whether name is an OCI repository name: one or more "/"-separated
// components of lowercase letters and digits joined by ".", "_", "__" or runs of "-", at most
// MaxRepositoryLen characters in all. The error wraps ErrInvalid and names the bad component.
func ValidateRepository(name string) error {
	if name == "" {
		return fmt.Errorf("%w repository name: empty", ErrInvalid)
	}
	if len(name) > MaxRepositoryLen {
		return fmt.Errorf("%w repository name %.40q...: %d characters, the limit is %d", ErrInvalid, name, len(name), MaxRepositoryLen)
	}
	for i, c := range strings.Split(name, "/") {
		if !repoComponent.MatchString(c) {
			return fmt.Errorf("%w repository name %q: component %d (%q) must be lowercase letters and digits, "+
				`separated by ".", "_", "__" or dashes, with no separator at either end`, ErrInvalid, name, i+1, c)
		}
	}
	return nil
}

// ValidateTag reports whether tag is an OCI tag: 1 to MaxTagLen letters, digits, "_", "." and
// "-", not starting with "." or "-". The error wraps ErrInvalid.
func ValidateTag(tag string) error {
	switch {
	case tag == "":
		return fmt.Errorf("%w tag: empty", ErrInvalid)
	case len(tag) > MaxTagLen:
		return fmt.Errorf("%w tag %.40q...: %d characters, the limit is %d", ErrInvalid, tag, len(tag), MaxTagLen)
	case !tagPattern.MatchString(tag):
		return fmt.Errorf(`%w tag %q: must be letters, digits, "_", "." and "-", not starting with "." or "-"`, ErrInvalid, tag)
	}
	return nil
}

// ValidateDigest reports whether d is a well-formed sha256 or sha512 digest (lowercase hex of
// the right length). The error wraps ErrInvalid and ErrInvalidDigest.
func ValidateDigest(d digest.Digest) error {
	if d == "" {
		return digestError{fmt.Errorf("%w digest: empty", ErrInvalid)}
	}
	alg, _, ok := strings.Cut(string(d), ":")
	if !ok {
		return digestError{fmt.Errorf("%w digest %q: want algorithm:hex, e.g. sha256:<64 hex digits>", ErrInvalid, d)}
	}
	if alg != string(digest.SHA256) && alg != string(digest.SHA512) {
		return digestError{fmt.Errorf("%w digest %q: algorithm %q is not supported, want sha256 or sha512", ErrInvalid, d, alg)}
	}
	if err := d.Validate(); err != nil {
		return digestError{fmt.Errorf("%w digest %q: %w", ErrInvalid, d, err)}
	}
	return nil
}

// validateRef checks a repository and tag together.
func validateRef(repo, tag string) error {
	if err := ValidateRepository(repo); err != nil {
		return err
	}
	return ValidateTag(tag)
}

// ValidateNodeID reports whether id is usable as a node ID: 1 to MaxNodeIDLen letters, digits,
// ".", "_" and "-", starting with a letter or digit. The error wraps ErrInvalid.
func ValidateNodeID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w node ID: empty", ErrInvalid)
	case len(id) > MaxNodeIDLen:
		return fmt.Errorf("%w node ID %.40q...: %d characters, the limit is %d", ErrInvalid, id, len(id), MaxNodeIDLen)
	case !nodeIDPattern.MatchString(id):
		return fmt.Errorf(`%w node ID %q: must be letters, digits, ".", "_" and "-", starting with a letter or digit`, ErrInvalid, id)
	}
	return nil
}

// checkHostPort reports whether addr is "host:port" that a peer can dial: a non-empty host
// that is not an unspecified address (0.0.0.0, ::) and a port in 1..65535.
func checkHostPort(addr string) error {
	if strings.ContainsAny(addr, "/?#@ \t\r\n\x00") {
		return fmt.Errorf("%q must be host:port, without scheme, path or spaces", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q must be host:port: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q has an empty host", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q has an unspecified host; peers cannot dial it, give a concrete address", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
		return fmt.Errorf("%q has port %q, want a number in 1..65535", addr, port)
	}
	return nil
}
