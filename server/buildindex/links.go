package buildindex

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// Links are the OCI registry's per-repository records (api.LinkPath): "blob/<digest>",
// "manifest/<digest>" and "referrer/<subject>/<digest>", each with a digest value. The tag
// store keeps them next to the tags with the same replication and read guarantees; these
// handlers add the value rules of the registry contract (server/registry/oci.go) and, with
// verify_content, the content checks (content.go).

// linkRef is a parsed link name.
type linkRef struct {
	name string
	kind string
	// keys are the digests of the name: one, or subject then referrer for a referrer link.
	keys []digest.Digest
}

// checkLinkName parses a link name: 400 DIGEST_INVALID when a digest in it is malformed, 400
// NAME_INVALID when the name is not "<kind>/<key>" at all.
func checkLinkName(name string) (linkRef, error) {
	kind, keys, err := tagstore.ParseLinkName(name)
	if err == nil {
		return linkRef{name: name, kind: kind, keys: keys}, nil
	}
	return linkRef{}, linkNameError(err)
}

// linkNameError answers a link name or prefix tagstore refused: DIGEST_INVALID when its shape
// is right and a digest in it is not, else NAME_INVALID.
func linkNameError(err error) error {
	code := errcode.CodeNameInvalid
	if errors.Is(err, tagstore.ErrInvalidDigest) {
		code = errcode.CodeDigestInvalid
	}
	return &errcode.Error{Status: http.StatusBadRequest, Code: code, Message: err.Error(), Err: err}
}

// checkLinkPrefix checks the prefix of a link listing the same way.
func checkLinkPrefix(prefix string) error {
	if prefix == "" {
		return errcode.Errorf(http.StatusBadRequest, errcode.CodeNameInvalid,
			"missing prefix: list links with ?prefix=blob/, manifest/ or referrer/ (and more of a name)")
	}
	if err := tagstore.ValidateLinkPrefix(prefix); err != nil {
		return linkNameError(err)
	}
	return nil
}

// parseLinkDigest checks the value of a link PUT: a canonical sha256 or sha512 digest.
func parseLinkDigest(d digest.Digest) (digest.Digest, error) {
	if err := tagstore.ValidateDigest(d); err != nil {
		return "", &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeDigestInvalid, Message: err.Error(), Err: err}
	}
	return d, nil
}

// checkValue enforces what the registry contract says a link's value is: for blob/ and
// manifest/ links the SHA-256 digest the content is stored under on the origins (the key
// itself when the key is a sha256 digest); for referrer/ links the referrer's own digest.
func (l linkRef) checkValue(d digest.Digest) error {
	bad := func(format string, a ...any) error {
		return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeDigestInvalid,
			Message: fmt.Sprintf(format, a...), Detail: map[string]string{"digest": d.String()}}
	}
	switch l.kind {
	case tagstore.LinkKindReferrer:
		if d != l.keys[1] {
			return bad("link %s: the value of a referrer link is the referrer's digest %s, not %s", l.name, l.keys[1], d)
		}
	default:
		if d.Algorithm() != digest.SHA256 {
			return bad("link %s: the value of a %s link is the sha256 digest the content is stored under, not %s", l.name, l.kind, d)
		}
		if l.keys[0].Algorithm() == digest.SHA256 && d != l.keys[0] {
			return bad("link %s: content addressed by a sha256 digest is stored under that digest, not %s", l.name, d)
		}
	}
	return nil
}

// unknownLink is the 404 of a missing link: BLOB_UNKNOWN for a blob link, MANIFEST_UNKNOWN
// for the others.
func unknownLink(repo string, l linkRef, err error) error {
	code := errcode.CodeManifestUnknown
	if l.kind == tagstore.LinkKindBlob {
		code = errcode.CodeBlobUnknown
	}
	return &errcode.Error{Status: http.StatusNotFound, Code: code,
		Message: fmt.Sprintf("repository %q has no link %s", repo, l.name), Err: err}
}

// linkArgs reads and checks the repository and link name of a link path.
func linkArgs(r *http.Request) (string, linkRef, error) {
	repo := r.PathValue("repo")
	if err := checkRepo(repo); err != nil {
		return "", linkRef{}, err
	}
	ref, err := checkLinkName(r.PathValue("name"))
	return repo, ref, err
}

func toAPILink(l tagstore.Link) api.Link {
	return api.Link{Repo: l.Repo, Name: l.Name, Digest: l.Digest, Index: l.Index}
}

func (s *Server) handlePutLink(w http.ResponseWriter, r *http.Request) error {
	repo, ref, err := linkArgs(r)
	if err != nil {
		return err
	}
	body, raw, err := s.readPut(w, r)
	if err != nil {
		return err
	}
	d, err := parseLinkDigest(raw)
	if err != nil {
		return err
	}
	if err := ref.checkValue(d); err != nil {
		return err
	}
	var l tagstore.Link
	err = s.onLeader(w, r, body, func() error {
		// On the leader only, which also reads the links a referrer needs from its own state.
		err := s.checkContent(func(c *contentChecker) error { return c.checkLink(r.Context(), repo, ref, d) })
		if err != nil {
			return err
		}
		l, err = s.store.PutLink(r.Context(), repo, ref.name, d)
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toAPILink(l))
}

func (s *Server) handleGetLink(w http.ResponseWriter, r *http.Request) error {
	repo, ref, err := linkArgs(r)
	if err != nil {
		return err
	}
	c, err := consistency(r)
	if err != nil {
		return err
	}
	var l tagstore.Link
	get := func(c tagstore.Consistency) error {
		var err error
		l, err = s.store.GetLink(r.Context(), repo, ref.name, c)
		return err
	}
	err = s.read(w, r, c, get)
	if errors.Is(err, tagstore.ErrNotFound) {
		// Not here: the upstream registry the repository is routed to may hold the content.
		return s.getUpstreamLink(w, r, repo, ref, err)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toAPILink(l))
}

func (s *Server) handleDeleteLink(w http.ResponseWriter, r *http.Request) error {
	repo, ref, err := linkArgs(r)
	if err != nil {
		return err
	}
	var l tagstore.Link
	err = s.onLeader(w, r, nil, func() error {
		var err error
		l, err = s.store.DeleteLink(r.Context(), repo, ref.name)
		return err
	})
	if errors.Is(err, tagstore.ErrNotFound) {
		return unknownLink(repo, ref, err)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toAPILink(l))
}

func (s *Server) handleListLinks(w http.ResponseWriter, r *http.Request) error {
	repo := r.PathValue("repo")
	if err := checkRepo(repo); err != nil {
		return err
	}
	prefix := r.URL.Query().Get("prefix")
	if err := checkLinkPrefix(prefix); err != nil {
		return err
	}
	c, err := consistency(r)
	if err != nil {
		return err
	}
	var links []tagstore.Link
	list := func(c tagstore.Consistency) error {
		var err error
		links, err = s.store.Links(r.Context(), repo, prefix, c)
		return err
	}
	err = s.read(w, r, c, list)
	if err != nil {
		return err
	}
	out := api.LinkList{Links: make([]api.Link, len(links))}
	for i, l := range links {
		out.Links[i] = toAPILink(l)
	}
	return writeJSON(w, http.StatusOK, out)
}

// routeRawLinkPath serves the link paths of handleRepoPath, whose repository (and link name)
// slashes are not escaped: "/repositories/library/ubuntu/links/blob/sha256:...". ok is false
// when p is not a link path. The name starts after the first "/links/" followed by a link
// kind and "/" (repository components may be called "links", link names never hold "/links/"),
// or, when none is, after the first "/links/" (so that a bad name gets its 400).
func (s *Server) routeRawLinkPath(w http.ResponseWriter, r *http.Request, p string) (ok bool, err error) {
	if repo, found := strings.CutSuffix(p, "/links"); found && repo != "" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return true, errcode.Errorf(http.StatusMethodNotAllowed, errcode.CodeUnsupported, "%s is not supported on a link list", r.Method)
		}
		r.SetPathValue("repo", repo)
		return true, s.handleListLinks(w, r)
	}
	at := -1 // where the repository ends
	for i := 0; ; i++ {
		j := strings.Index(p[i:], "/links/")
		if j < 0 {
			break
		}
		i += j
		if i == 0 {
			continue
		}
		if at < 0 {
			at = i // no better guess: the first, so a bad name gets its 400
		}
		kind, _, ok := strings.Cut(p[i+len("/links/"):], "/")
		if ok && tagstore.LinkDigests(kind) > 0 {
			at = i
			break
		}
	}
	if at < 0 {
		return false, nil
	}
	r.SetPathValue("repo", p[:at])
	r.SetPathValue("name", p[at+len("/links/"):])
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return true, s.handleGetLink(w, r)
	case http.MethodPut:
		return true, s.handlePutLink(w, r)
	case http.MethodDelete:
		return true, s.handleDeleteLink(w, r)
	default:
		return true, errcode.Errorf(http.StatusMethodNotAllowed, errcode.CodeUnsupported, "%s is not supported on a link", r.Method)
	}
}
