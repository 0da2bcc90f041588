package buildindex

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/registry"
)

// maxRepoLen is the OCI distribution limit on repository names.
const maxRepoLen = 255

var (
	// repoPattern is the OCI distribution grammar of a repository name.
	repoPattern = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	// tagPattern is the OCI distribution grammar of a tag.
	tagPattern = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// checkRepo returns a 400 NAME_INVALID error unless repo follows the OCI grammar.
func checkRepo(repo string) error {
	if len(repo) > maxRepoLen || !repoPattern.MatchString(repo) {
		return registry.Errorf(http.StatusBadRequest, registry.CodeNameInvalid,
			"invalid repository name %q: want lower-case components [a-z0-9]+ joined by '.', '_', '__' or '-', separated by '/', at most %d bytes", repo, maxRepoLen)
	}
	return nil
}

// checkTag returns a 400 TAG_INVALID error unless tag follows the OCI grammar.
func checkTag(tag string) error {
	if !tagPattern.MatchString(tag) {
		return registry.Errorf(http.StatusBadRequest, registry.CodeTagInvalid,
			"invalid tag %q: want [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", tag)
	}
	return nil
}

// checkRepoTag checks both.
func checkRepoTag(repo, tag string) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	return checkTag(tag)
}

// parseTagDigest checks the digest of a tag PUT: the canonical "sha256:<64 hex>" form only.
func parseTagDigest(s string) (digest.Digest, error) {
	if s == "" {
		return "", registry.Errorf(http.StatusBadRequest, registry.CodeDigestInvalid, "missing digest")
	}
	if !strings.Contains(s, ":") {
		return "", registry.Errorf(http.StatusBadRequest, registry.CodeDigestInvalid, "invalid digest %q: want sha256:<64 hex digits>", s)
	}
	return registry.ParseDigest(s)
}
