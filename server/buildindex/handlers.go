package buildindex

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// Page sizes of the tag list and the catalog: without n a page holds defaultPage names; n is
// capped at maxPage (the Link header then leads to the rest).
const (
	defaultPage = 1000
	maxPage     = 100_000
)

// HeaderServedBy names the node that executed a request (the leader, for a forwarded one).
const HeaderServedBy = "Krakenctl-Build-Index"

// handlerFunc is a handler that returns its error for the wrapper to write.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) routes(mux *http.ServeMux) {
	mux.Handle("PUT /repositories/{repo}/tags/{tag}", s.handle("put_tag", s.handlePutTag))
	mux.Handle("GET /repositories/{repo}/tags/{tag}", s.handle("get_tag", s.handleGetTag))
	mux.Handle("DELETE /repositories/{repo}/tags/{tag}", s.handle("delete_tag", s.handleDeleteTag))
	mux.Handle("GET /repositories/{repo}/tags", s.handle("list_tags", s.handleListTags))
	mux.Handle("PUT /repositories/{repo}/links/{name}", s.handle("put_link", s.handlePutLink))
	mux.Handle("GET /repositories/{repo}/links/{name}", s.handle("get_link", s.handleGetLink))
	mux.Handle("DELETE /repositories/{repo}/links/{name}", s.handle("delete_link", s.handleDeleteLink))
	mux.Handle("GET /repositories/{repo}/links", s.handle("list_links", s.handleListLinks))
	mux.Handle("/repositories/{path...}", s.handle("repository_path", s.handleRepoPath))
	mux.Handle("GET "+api.RepositoriesPath, s.handle("catalog", s.handleCatalog))
	mux.Handle("GET "+api.ClusterPath, s.handle("cluster", s.handleCluster))
	mux.Handle("POST "+api.ClusterMembersPath, s.handle("join", s.handleJoin))
	mux.Handle("DELETE "+api.ClusterMembersPath+"/{id}", s.handle("remove", s.handleRemove))
	mux.Handle("POST "+api.ClusterRestorePath, s.handle("restore", s.handleRestore))
	mux.Handle("GET "+api.ChangesPath, s.handle("changes", s.handleChanges))
	mux.Handle("GET "+api.ReplicationPath, s.handle("replication", s.handleReplication))
	mux.Handle("POST "+api.ReplicationRetry, s.handle("replication_retry", s.handleReplicationRetry))
	mux.Handle("GET "+readIndexPath, s.handle("read_index", s.handleReadIndex))
}

// handle instruments h under route and writes the error it returns.
func (s *Server) handle(route string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderServedBy, s.cfg.Raft.NodeID)
		if l, ok := s.store.Leader(); ok && l.APIAddr != "" {
			w.Header().Set(api.HeaderLeader, l.APIAddr)
		}
		err := s.authorize(route, r)
		if err == nil {
			err = h(w, r)
		}
		if err == nil || errors.Is(err, errForwarded) {
			return
		}
		e := registry.FromError(err)
		if e.Status >= 500 {
			if e.Status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			if r.Context().Err() == nil {
				s.log.Warn("request failed", "route", route, "method", r.Method, "path", r.URL.Path, "status", e.Status, "err", err)
			}
		}
		registry.WriteError(w, r, e)
	})
}

// handleRepoPath serves the tag and link paths with the repository's slashes left unescaped
// ("/repositories/library/ubuntu/tags/24.04"), as curl users write them. A path ending in
// "/tags" lists; otherwise the last "/tags/" separates repository and tag (tags hold no "/").
// Any other path is tried as a link path (routeRawLinkPath).
func (s *Server) handleRepoPath(w http.ResponseWriter, r *http.Request) error {
	p := r.PathValue("path")
	if repo, ok := strings.CutSuffix(p, "/tags"); ok && repo != "" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return errcode.Errorf(http.StatusMethodNotAllowed, errcode.CodeUnsupported, "%s is not supported on a tag list", r.Method)
		}
		r.SetPathValue("repo", repo)
		return s.handleListTags(w, r)
	}
	i := strings.LastIndex(p, "/tags/")
	if i <= 0 || strings.Contains(p[i+len("/tags/"):], "/") {
		// Not a tag (tags hold no "/"): a link path, or nothing.
		if ok, err := s.routeRawLinkPath(w, r, p); ok {
			return err
		}
	}
	if i <= 0 {
		return errcode.Errorf(http.StatusNotFound, errcode.CodeNameUnknown,
			"no such path: want /repositories/REPOSITORY/tags[/TAG] or /repositories/REPOSITORY/links[/NAME]")
	}
	r.SetPathValue("repo", p[:i])
	r.SetPathValue("tag", p[i+len("/tags/"):])
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return s.handleGetTag(w, r)
	case http.MethodPut:
		return s.handlePutTag(w, r)
	case http.MethodDelete:
		return s.handleDeleteTag(w, r)
	default:
		return errcode.Errorf(http.StatusMethodNotAllowed, errcode.CodeUnsupported, "%s is not supported on a tag", r.Method)
	}
}

func toAPI(t tagstore.Tag) api.Tag {
	return api.Tag{Repo: t.Repo, Tag: t.Name, Digest: t.Digest, Index: t.Index, Updated: t.Updated}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode answer: %w", err)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return nil
}

// readBody reads the whole request body, at most max_body bytes (beyond: 413).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxBody)))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeBodyInvalid, Message: "read request body", Err: err}
	}
	return b, nil
}

// decodeBody decodes exactly one JSON document with only known fields.
func decodeBody(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeBodyInvalid, Message: "invalid JSON body: " + err.Error(), Err: err}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errcode.Errorf(http.StatusBadRequest, errcode.CodeBodyInvalid, "invalid JSON body: more than one document")
	}
	return nil
}

// readPut reads and decodes the body of a tag or link PUT, returning the body (forwarded as
// is off the leader) and the digest it names, unchecked.
func (s *Server) readPut(w http.ResponseWriter, r *http.Request) ([]byte, digest.Digest, error) {
	body, err := s.readBody(w, r)
	if err != nil {
		return nil, "", err
	}
	var req api.PutTagRequest
	if err := decodeBody(body, &req); err != nil {
		return nil, "", err
	}
	return body, req.Digest, nil
}

// checkContent runs check when verify_content is on. It runs where the write happens: off the
// leader it fails with *tagstore.NotLeaderError, so a follower forwards before fetching
// anything.
func (s *Server) checkContent(check func(*contentChecker) error) error {
	if s.content == nil {
		return nil
	}
	if err := s.requireLeader(); err != nil {
		return err
	}
	return check(s.content)
}

// consistency reads ?stale=: linearizable unless stale=true.
func consistency(r *http.Request) (tagstore.Consistency, error) {
	v := r.URL.Query().Get("stale")
	if v == "" {
		return tagstore.Linearizable, nil
	}
	stale, err := strconv.ParseBool(v)
	if err != nil {
		return 0, errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported, "invalid stale=%q: want true or false", v)
	}
	if stale {
		return tagstore.Stale, nil
	}
	return tagstore.Linearizable, nil
}

func (s *Server) handlePutTag(w http.ResponseWriter, r *http.Request) error {
	repo, tag := r.PathValue("repo"), r.PathValue("tag")
	if err := checkRepoTag(repo, tag); err != nil {
		return err
	}
	body, raw, err := s.readPut(w, r)
	if err != nil {
		return err
	}
	d, err := parseTagDigest(string(raw))
	if err != nil {
		return err
	}
	var t tagstore.Tag
	err = s.onLeader(w, r, body, func() error {
		err := s.checkContent(func(c *contentChecker) error { return c.check(r.Context(), repo, d) })
		if err != nil {
			return err
		}
		t, err = s.store.Put(r.Context(), repo, tag, d)
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toAPI(t))
}

func (s *Server) handleGetTag(w http.ResponseWriter, r *http.Request) error {
	repo, tag := r.PathValue("repo"), r.PathValue("tag")
	if err := checkRepoTag(repo, tag); err != nil {
		return err
	}
	c, err := consistency(r)
	if err != nil {
		return err
	}
	var t tagstore.Tag
	get := func(c tagstore.Consistency) error {
		var err error
		t, err = s.store.Get(r.Context(), repo, tag, c)
		return err
	}
	err = s.read(w, r, c, get)
	if errors.Is(err, tagstore.ErrNotFound) && r.URL.Query().Get(api.QueryUpstream) != "false" {
		// Not here: the upstream registry the repository is routed to may have it (unless
		// the caller asked for the store's own value, as replication does).
		return s.getUpstreamTag(w, r, repo, tag, err)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toAPI(t))
}

func (s *Server) handleDeleteTag(w http.ResponseWriter, r *http.Request) error {
	repo, tag := r.PathValue("repo"), r.PathValue("tag")
	if err := checkRepoTag(repo, tag); err != nil {
		return err
	}
	var t tagstore.Tag
	err := s.onLeader(w, r, nil, func() error {
		var err error
		t, err = s.store.Delete(r.Context(), repo, tag)
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toAPI(t))
}

// pageArgs reads n and last of a paginated list. n = 0 asks for an empty page.
func pageArgs(r *http.Request) (last string, n int, err error) {
	q := r.URL.Query()
	n = defaultPage
	if v := q.Get("n"); v != "" {
		n, err = strconv.Atoi(v)
		if err != nil || n < 0 {
			return "", 0, errcode.Errorf(http.StatusBadRequest, errcode.CodePaginationNumberInvalid, "invalid n=%q: want a number of at least 0", v)
		}
	}
	return q.Get("last"), min(n, maxPage), nil
}

// page trims a list fetched with n+1 entries to n and sets the Link to the next page when it
// had more.
func page(w http.ResponseWriter, path string, list []string, n int) []string {
	if list == nil {
		list = []string{}
	}
	if len(list) <= n {
		return list
	}
	list = list[:n]
	q := url.Values{"n": {strconv.Itoa(n)}, "last": {list[n-1]}}
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, q.Encode()))
	return list
}

// listTagsOf answers a tag list by digest: the tags of repo (in the Raft store; an upstream
// registry's are not ours to list by digest) that point at the digest, found through the
// store's reverse index. No such tag is an empty list, not an error: a manifest delete asks
// whether there are any.
func (s *Server) listTagsOf(w http.ResponseWriter, r *http.Request, repo string, c tagstore.Consistency, last string, n int) error {
	d, err := digest.Parse(r.URL.Query().Get(api.QueryDigest))
	if err != nil {
		return errcode.Errorf(http.StatusBadRequest, errcode.CodeDigestInvalid, "invalid %s=%q: %v", api.QueryDigest, r.URL.Query().Get(api.QueryDigest), err)
	}
	tags := []string{}
	if n > 0 {
		err = s.read(w, r, c, func(c tagstore.Consistency) error {
			var err error
			tags, err = s.store.TagsOf(r.Context(), repo, d, last, n+1, c)
			return err
		})
		if err != nil {
			return err
		}
	}
	path := api.TagsPath(repo)
	tags = page(w, path, tags, n)
	if l := w.Header().Get("Link"); l != "" {
		// The next page is of the same filter.
		w.Header().Set("Link", strings.Replace(l, path+"?", path+"?"+api.QueryDigest+"="+url.QueryEscape(d.String())+"&", 1))
	}
	return writeJSON(w, http.StatusOK, api.TagList{Name: repo, Tags: tags, Digest: d})
}

func (s *Server) handleListTags(w http.ResponseWriter, r *http.Request) error {
	repo := r.PathValue("repo")
	if err := checkRepo(repo); err != nil {
		return err
	}
	c, err := consistency(r)
	if err != nil {
		return err
	}
	last, n, err := pageArgs(r)
	if err != nil {
		return err
	}
	if r.URL.Query().Has(api.QueryDigest) {
		return s.listTagsOf(w, r, repo, c, last, n)
	}
	var tags []string
	if n > 0 {
		list := func(c tagstore.Consistency) error {
			var err error
			tags, err = s.store.Tags(r.Context(), repo, last, n+1, c)
			return err
		}
		err = s.read(w, r, c, list)
		if err == nil || errors.Is(err, tagstore.ErrNotFound) {
			// The upstream registry the repository is routed to, if any, adds its tags.
			var found bool
			if tags, found, err = s.mergeUpstreamTags(r, repo, last, n+1, tags, err); err != nil {
				return err
			}
			if !found {
				err = tagstore.ErrNotFound
			}
		}
		if errors.Is(err, tagstore.ErrNotFound) || err == nil && len(tags) == 0 && last == "" {
			return &errcode.Error{Status: http.StatusNotFound, Code: errcode.CodeNameUnknown,
				Message: fmt.Sprintf("repository %q has no tags", repo), Err: err}
		}
		if err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, api.TagList{Name: repo, Tags: page(w, api.TagsPath(repo), tags, n)})
}

func (s *Server) handleCatalog(w http.ResponseWriter, r *http.Request) error {
	c, err := consistency(r)
	if err != nil {
		return err
	}
	last, n, err := pageArgs(r)
	if err != nil {
		return err
	}
	var repos []string
	if n > 0 {
		list := func(c tagstore.Consistency) error {
			var err error
			repos, err = s.store.Repositories(r.Context(), last, n+1, c)
			return err
		}
		err = s.read(w, r, c, list)
		if err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, api.Catalog{Repositories: page(w, api.RepositoriesPath, repos, n)})
}

func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, toAPIStatus(s.store.Status()))
}

func toAPIStatus(st tagstore.ClusterStatus) api.ClusterStatus {
	out := api.ClusterStatus{
		ID: st.ID, State: st.State, LeaderID: st.LeaderID, LeaderAPIAddr: st.LeaderAPIAddr, Term: st.Term,
		CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, LastLogIndex: st.LastLogIndex,
		LastSnapshotIndex: st.LastSnapshotIndex, Members: make([]api.Member, len(st.Members)),
	}
	for i, m := range st.Members {
		out.Members[i] = api.Member(m)
	}
	return out
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var m api.Member
	if err := decodeBody(body, &m); err != nil {
		return err
	}
	if err := checkMember(m); err != nil {
		return err
	}
	if err := s.authorizeMembership(r, m.ID); err != nil {
		return err
	}
	err = s.onLeader(w, r, body, func() error { return s.store.Join(r.Context(), tagstore.Member(m)) })
	switch {
	case errors.Is(err, tagstore.ErrUnavailable) && !errors.Is(err, tagstore.ErrNotLeader):
		// The store's message says what became of the node (it did not answer, and was removed
		// again); it holds nothing secret.
		return &errcode.Error{Status: http.StatusServiceUnavailable, Code: errcode.CodeUnavailable, Message: err.Error(), Err: err}
	case err != nil:
		return err
	}
	s.log.Info("member joined", "member", m.ID, "raft_addr", m.RaftAddr, "api_addr", m.APIAddr)
	return writeJSON(w, http.StatusOK, toAPIStatus(s.store.Status()))
}

// checkMember refuses a join request that could never work.
func checkMember(m api.Member) error {
	bad := func(format string, a ...any) error {
		return errcode.Errorf(http.StatusBadRequest, errcode.CodeBodyInvalid, format, a...)
	}
	if m.ID == "" {
		return bad("member id: required")
	}
	for key, v := range map[string]string{"raft_addr": m.RaftAddr, "api_addr": m.APIAddr} {
		if _, _, err := net.SplitHostPort(v); err != nil || v == "" {
			return bad("member %s: %q is not host:port", key, v)
		}
	}
	if m.Leader {
		return bad("member leader: a joining member cannot be the leader")
	}
	return nil
}

func (s *Server) handleRemove(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var opts tagstore.RemoveOptions
	if v := r.URL.Query().Get("force"); v != "" {
		var err error
		if opts.Force, err = strconv.ParseBool(v); err != nil {
			return errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported, "invalid force=%q: want true or false", v)
		}
	}
	if err := s.authorizeMembership(r, ""); err != nil {
		return err
	}
	err := s.onLeader(w, r, nil, func() error { return s.store.Remove(r.Context(), id, opts) })
	switch {
	case errors.Is(err, tagstore.ErrNotFound):
		return &errcode.Error{Status: http.StatusNotFound, Code: errcode.CodeMemberUnknown,
			Message: fmt.Sprintf("member %q is not in the cluster", id), Err: err}
	case errors.Is(err, tagstore.ErrQuorum):
		// The store's message names the voters that do not answer; it holds nothing secret.
		return &errcode.Error{Status: http.StatusConflict, Code: errcode.CodeQuorumAtRisk,
			Message: fmt.Sprintf("refused to remove %s: %s (force=true removes it anyway)", id, strings.TrimPrefix(err.Error(), "remove "+id+": ")),
			Err:     err}
	case err != nil:
		return err
	}
	s.log.Info("member removed", "member", id, "forced", opts.Force)
	return writeJSON(w, http.StatusOK, toAPIStatus(s.store.Status()))
}

func (s *Server) handleRestore(w http.ResponseWriter, r *http.Request) error {
	if s.wb == nil {
		return errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported, "no storage backend is configured: nothing to restore from")
	}
	var res api.RestoreResult
	err := s.onLeader(w, r, nil, func() error {
		if err := s.requireLeader(); err != nil {
			return err
		}
		var err error
		res, err = s.wb.restore(r.Context())
		return err
	})
	if err != nil {
		return err
	}
	s.log.Info("restored tags from the backend", "imported", res.Imported, "skipped", res.Skipped)
	return writeJSON(w, http.StatusOK, res)
}

// handleChanges streams this node's applied tag changes as newline-delimited JSON, one flush
// per change (batched while more are waiting), until the client goes away, the node shuts
// down or the store ends the feed.
func (s *Server) handleChanges(w http.ResponseWriter, r *http.Request) error {
	var from uint64
	if v := r.URL.Query().Get("from"); v != "" {
		var err error
		if from, err = strconv.ParseUint(v, 10, 64); err != nil {
			return errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported, "invalid from=%q: want a log index", v)
		}
	}
	ch, cancel := s.store.Changes(from)
	defer cancel()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return nil // The client went away.
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-s.stopping:
			return nil
		case c, ok := <-ch:
			if !ok {
				return nil
			}
			// api.TagChange describes tags; links are not part of this feed.
			if !c.Tag.IsLink() {
				_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
				if err := enc.Encode(api.TagChange{Index: c.Index, Op: c.Op, Tag: toAPI(c.Tag)}); err != nil {
					return nil // The client went away.
				}
			}
			if len(ch) == 0 {
				if err := rc.Flush(); err != nil {
					return nil
				}
			}
		}
	}
}
