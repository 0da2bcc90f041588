package registry

import (
	"net/http"
	"strings"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// MaxNameLength is the longest repository name accepted, as in distribution (the name, not
// counting the registry host).
const MaxNameLength = tagstore.MaxRepositoryLen

// MaxTagLength is the longest tag the spec allows.
const MaxTagLength = tagstore.MaxTagLen

// ValidateName checks a repository name against the spec's grammar,
// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*, at most MaxNameLength
// bytes: the grammar the build-index enforces (tagstore.ValidateRepository), answered as an
// *errcode.Error with NAME_INVALID (400).
func ValidateName(name string) error {
	if err := tagstore.ValidateRepository(name); err != nil {
		return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeNameInvalid, Message: err.Error()}
	}
	return nil
}

// ValidateTag checks a tag against the spec's grammar, [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}, as
// tagstore.ValidateTag does. The error is an *errcode.Error with TAG_INVALID (400).
func ValidateTag(tag string) error {
	if err := tagstore.ValidateTag(tag); err != nil {
		return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeTagInvalid, Message: err.Error()}
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
