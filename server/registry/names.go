package registry

import (
	"net/http"
	"regexp"
	"strings"
)

// MaxNameLength is the longest repository name accepted, as in distribution (the name, not
// counting the registry host).
const MaxNameLength = 255

// MaxTagLength is the longest tag the spec allows.
const MaxTagLength = 128

var (
	// nameRE is the repository name grammar (see ValidateName); tagRE the tag grammar.
	nameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// ValidateName checks a repository name against the spec's grammar,
// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*, at most MaxNameLength
// bytes. The error is an *Error with NAME_INVALID (400).
func ValidateName(name string) error {
	switch {
	case name == "":
		return Errorf(http.StatusBadRequest, CodeNameInvalid, "missing repository name")
	case len(name) > MaxNameLength:
		return Errorf(http.StatusBadRequest, CodeNameInvalid, "repository name is %d bytes, longer than %d", len(name), MaxNameLength)
	case !nameRE.MatchString(name):
		return Errorf(http.StatusBadRequest, CodeNameInvalid,
			"invalid repository name %q: want lowercase components of [a-z0-9] separated by '.', '_', '__' or dashes, joined by '/'", name)
	}
	return nil
}

// ValidateTag checks a tag against the spec's grammar, [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}. The
// error is an *Error with TAG_INVALID (400).
func ValidateTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return Errorf(http.StatusBadRequest, CodeTagInvalid,
			"invalid tag %q: want at most %d characters of [a-zA-Z0-9._-], not starting with '.' or '-'", tag, MaxTagLength)
	}
	return nil
}

// ParseReference parses the <reference> of a manifest URL: a digest when it contains ':'
// (sha256 or sha512, see ParseOCIDigest), else a tag (see ValidateTag).
func ParseReference(s string) (Reference, error) {
	if strings.Contains(s, ":") {
		d, err := ParseOCIDigest(s)
		if err != nil {
			return Reference{}, err
		}
		return Reference{Digest: d}, nil
	}
	if err := ValidateTag(s); err != nil {
		return Reference{}, err
	}
	return Reference{Tag: s}, nil
}
