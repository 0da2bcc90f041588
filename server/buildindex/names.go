package buildindex

import (
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// checkRepo returns a 400 NAME_INVALID error unless repo follows the OCI grammar (the tag
// store's, so both layers agree).
func checkRepo(repo string) error {
	if err := tagstore.ValidateRepository(repo); err != nil {
		return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeNameInvalid, Message: err.Error(), Err: err}
	}
	return nil
}

// checkTag returns a 400 TAG_INVALID error unless tag follows the OCI grammar.
func checkTag(tag string) error {
	if err := tagstore.ValidateTag(tag); err != nil {
		return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeTagInvalid, Message: err.Error(), Err: err}
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

// parseTagDigest checks the digest of a tag PUT: the canonical "sha256:<64 hex>" form, or
// "sha512:<128 hex>" (a manifest the registry stores under its SHA-256, found through the
// repository's manifest/ link).
func parseTagDigest(s string) (digest.Digest, error) {
	if s == "" {
		return "", errcode.Errorf(http.StatusBadRequest, errcode.CodeDigestInvalid, "missing digest")
	}
	if !strings.Contains(s, ":") {
		return "", errcode.Errorf(http.StatusBadRequest, errcode.CodeDigestInvalid, "invalid digest %q: want sha256:<64 hex digits>", s)
	}
	if d := digest.Digest(s); d.Algorithm() == digest.SHA512 {
		return parseLinkDigest(d)
	}
	return registry.ParseDigest(s)
}
