package buildindex

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/registry"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// DefaultUpstreamTagTTL is how long an upstream registry's answer for a tag is reused when
// upstream_tags.ttl is not set.
const DefaultUpstreamTagTTL = 30 * time.Second

// HeaderTagSource is set to "upstream ROUTE" on a tag answered by the upstream registry that
// the backend route ROUTE names, rather than by the Raft store.
const HeaderTagSource = "Krakenctl-Tag-Source"

// upstreamTagTimeout bounds one resolution upstream. It runs apart from the request that
// started it (others may be waiting for the same answer), so it needs its own bound.
const upstreamTagTimeout = time.Minute

// maxUpstreamTags bounds the cache of upstream answers.
const maxUpstreamTags = 10_000

// defaults fills unset fields.
func (c *UpstreamTagsConfig) defaults() {
	if c.TTL == 0 {
		c.TTL = DefaultUpstreamTagTTL
	}
}

// problems reports what is wrong with the section, and a tags_namespace that routes to a
// registry backend: the write-back could never store a tag there.
func (c *UpstreamTagsConfig) problems(cfg *Config) []error {
	var errs []error
	if c.TTL < 0 {
		errs = append(errs, fmt.Errorf("upstream_tags.ttl: %s is negative", c.TTL))
	}
	for i, b := range cfg.Backends {
		re, err := regexp.Compile(`^(?:` + b.Namespace + `)$`)
		if err != nil || !re.MatchString(cfg.TagsNamespace) {
			continue
		}
		if b.Registry != nil {
			errs = append(errs, fmt.Errorf("backends[%d]: routes tags_namespace %q to a read-only registry; the tag write-back needs a writable backend (route it first)", i, cfg.TagsNamespace))
		}
		break
	}
	return errs
}

// upstreamBackend is a backend that is an upstream registry, which can resolve tags:
// backend/registry's Backend. Only such a backend is asked for tags and links; what other
// backends hold says nothing about repositories.
type upstreamBackend interface {
	backend.Backend
	ResolveTag(ctx context.Context, repo, tag string) (digest.Digest, error)
	Tags(ctx context.Context, repo string) ([]string, error)
}

// router is backend.Router's lookup.
type router interface {
	Route(namespace string) (backend.Route, error)
}

// upstreamTags resolves tags upstream and caches the answers. It is safe for concurrent use.
type upstreamTags struct {
	backend backend.Backend
	ttl     time.Duration
	metrics *metrics
	now     func() time.Time

	calls singleflight.Group
	mu    sync.Mutex
	cache map[upstreamKey]upstreamEntry
}

// upstreamKey is a tag (name holds no "/") or a link (kind "/" digest) of repo.
type upstreamKey struct{ repo, name string }

type upstreamEntry struct {
	digest  digest.Digest
	expires time.Time
}

func newUpstreamTags(b backend.Backend, cfg UpstreamTagsConfig, m *metrics) *upstreamTags {
	if b == nil || cfg.Disabled {
		return nil
	}
	return &upstreamTags{backend: b, ttl: cfg.TTL, metrics: m, now: time.Now, cache: map[upstreamKey]upstreamEntry{}}
}

// route returns the registry backend that repo's namespace routes to, and the route's name.
func (u *upstreamTags) route(repo string) (upstreamBackend, string, bool) {
	if rt, ok := u.backend.(router); ok {
		r, err := rt.Route(repo)
		if err != nil {
			return nil, "", false
		}
		res, ok := r.Backend.(upstreamBackend)
		return res, r.Name, ok
	}
	res, ok := u.backend.(upstreamBackend)
	return res, "upstream", ok
}

// lookup returns the digest cached under k, or asks the upstream with ask and caches a
// success. Concurrent lookups of one key share one request upstream. what names the object in
// errors.
func (u *upstreamTags) lookup(ctx context.Context, k upstreamKey, route, what string, ask func(context.Context) (digest.Digest, error)) (digest.Digest, error) {
	u.mu.Lock()
	e, ok := u.cache[k]
	u.mu.Unlock()
	if ok && u.now().Before(e.expires) {
		u.metrics.upstreamCacheHits.Inc()
		return e.digest, nil
	}
	ch := u.calls.DoChan(k.repo+"\x00"+k.name, func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), upstreamTagTimeout)
		defer cancel()
		d, err := ask(rctx)
		u.metrics.upstreamTags.WithLabelValues(upstreamResult(err)).Inc()
		if err != nil {
			return "", err
		}
		u.store(k, d)
		return d, nil
	})
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return "", upstreamError(route, what, r.Err)
		}
		return r.Val.(digest.Digest), nil
	}
}

// store caches d under k. A full cache first loses its expired entries, then, if
// still full, an arbitrary one.
func (u *upstreamTags) store(k upstreamKey, d digest.Digest) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.now()
	if len(u.cache) >= maxUpstreamTags {
		for k, e := range u.cache {
			if !now.Before(e.expires) {
				delete(u.cache, k)
			}
		}
		for k := range u.cache {
			if len(u.cache) < maxUpstreamTags {
				break
			}
			delete(u.cache, k)
		}
	}
	u.cache[k] = upstreamEntry{digest: d, expires: now.Add(u.ttl)}
}

// upstreamResult is the metric label of a resolution's outcome.
func upstreamResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, backend.ErrNotFound):
		return "not_found"
	case errors.Is(err, registry.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, registry.ErrInvalidResponse), errors.Is(err, registry.ErrSizeMismatch):
		return "invalid"
	default:
		return "error"
	}
}

// upstreamError maps a failed resolution to the registry error the client sees. The
// upstream's "not found" is MANIFEST_UNKNOWN, as for a local tag. Any failure of the upstream
// is 424 Failed Dependency with a message that names it and says what went wrong, never a bare
// 500: a 4xx, because docker shows the message of a 4xx but drops the body of a 5xx, and
// because the build-index's clients pass a 5xx on to the next node, which would only ask the
// same upstream again.
func upstreamError(route, what string, err error) error {
	e := &errcode.Error{Status: http.StatusFailedDependency, Code: errcode.CodeUnavailable, Err: err}
	switch {
	case errors.Is(err, backend.ErrNotFound):
		e.Status, e.Code = http.StatusNotFound, errcode.CodeManifestUnknown
		e.Message = fmt.Sprintf("manifest unknown: %s is unknown here and to the upstream registry (backend %s)", what, route)
	case errors.Is(err, registry.ErrUnauthorized):
		e.Code = errcode.CodeDenied
		e.Message = fmt.Sprintf("the upstream registry (backend %s) refused the build-index's credentials for %s: %v", route, what, err)
	case errors.Is(err, registry.ErrInvalidResponse), errors.Is(err, registry.ErrSizeMismatch):
		e.Code = errcode.CodeUnknown
		e.Message = fmt.Sprintf("the upstream registry (backend %s) answered %s with an invalid response: %v", route, what, err)
	case errors.Is(err, backend.ErrInvalidKey):
		e.Status, e.Code = http.StatusBadRequest, errcode.CodeNameInvalid
		e.Message = err.Error()
	default:
		e.Message = fmt.Sprintf("the upstream registry (backend %s) could not resolve %s: %v", route, what, err)
	}
	return e
}

// getUpstreamTag answers a GET of repo:tag that the store does not have (notFound, its
// error) from the upstream registry that repo routes to, if any.
func (s *Server) getUpstreamTag(w http.ResponseWriter, r *http.Request, repo, tag string, notFound error) error {
	if s.upstream == nil {
		return notFound
	}
	res, route, ok := s.upstream.route(repo)
	if !ok {
		return notFound
	}
	d, err := s.upstream.lookup(r.Context(), upstreamKey{repo, tag}, route, repo+":"+tag, func(ctx context.Context) (digest.Digest, error) {
		return res.ResolveTag(ctx, repo, tag)
	})
	if err != nil {
		s.logUpstream(r, route, repo+":"+tag, err)
		return err
	}
	w.Header().Set(HeaderTagSource, "upstream "+route)
	return writeJSON(w, http.StatusOK, api.Tag{Repo: repo, Tag: tag, Digest: d})
}

// getUpstreamLink answers a GET of a blob or manifest link that the store does not have
// (notFound, its error), of a sha256 digest, from the upstream registry that repo routes to:
// the link exists when the registry holds the digest in repo, as a blob or a manifest. Agents
// serve content only under repositories that link it, and the upstream's content has no links
// here (nothing was pushed through the proxy).
func (s *Server) getUpstreamLink(w http.ResponseWriter, r *http.Request, repo string, ref linkRef, notFound error) error {
	if s.upstream == nil || (ref.kind != tagstore.LinkKindBlob && ref.kind != tagstore.LinkKindManifest) ||
		len(ref.keys) != 1 || ref.keys[0].Algorithm() != digest.SHA256 {
		return unknownLink(repo, ref, notFound)
	}
	res, route, ok := s.upstream.route(repo)
	if !ok {
		return unknownLink(repo, ref, notFound)
	}
	d := ref.keys[0]
	_, err := s.upstream.lookup(r.Context(), upstreamKey{repo, ref.name}, route, repo+"@"+d.String(), func(ctx context.Context) (digest.Digest, error) {
		_, err := res.Stat(ctx, repo, d.Encoded())
		return d, err
	})
	if errors.Is(err, backend.ErrNotFound) {
		return unknownLink(repo, ref, err)
	}
	if err != nil {
		// Unknown, as far as this cluster can tell, rather than a failure: a client pushing
		// into the repository checks its blobs with a HEAD first, and must go on to upload
		// them (docker cannot read a failure's message from a HEAD) while the upstream is down.
		s.logUpstream(r, route, repo+"@"+d.String(), err)
		cause := err
		if ue := (*errcode.Error)(nil); errors.As(err, &ue) && ue.Err != nil {
			cause = ue.Err
		}
		e := unknownLink(repo, ref, err)
		var ue *errcode.Error
		if errors.As(e, &ue) {
			ue.Message = fmt.Sprintf("repository %q has no link %s here, and the upstream registry (backend %s) could not be asked: %v", repo, ref.name, route, cause)
		}
		return e
	}
	w.Header().Set(HeaderTagSource, "upstream "+route)
	return writeJSON(w, http.StatusOK, api.Link{Repo: repo, Name: ref.name, Digest: d})
}

// mergeUpstreamTags adds the tags of the upstream registry that repo routes to, if any, to
// local, one page of the store's tags after last (localErr is the store's error: nil or
// tagstore.ErrNotFound), and returns the first limit of the union after last, and whether
// the repository has tags at all. The upstream's list is not cached: a listing is rare and
// should be current.
func (s *Server) mergeUpstreamTags(r *http.Request, repo, last string, limit int, local []string, localErr error) ([]string, bool, error) {
	found := localErr == nil
	if s.upstream == nil {
		return local, found, nil
	}
	res, route, ok := s.upstream.route(repo)
	if !ok {
		return local, found, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), upstreamTagTimeout)
	defer cancel()
	up, err := res.Tags(ctx, repo)
	s.metrics.upstreamTags.WithLabelValues(upstreamResult(err)).Inc()
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return local, found, nil
	case err != nil:
		err = upstreamError(route, "the tags of "+repo, err)
		s.logUpstream(r, route, repo, err)
		return nil, false, err
	}
	all := slices.Clone(local)
	for _, t := range up {
		// A tag this API could not name is the upstream's garbage: not repeated.
		if t > last && tagstore.ValidateTag(t) == nil {
			all = append(all, t)
		}
	}
	slices.Sort(all)
	all = slices.Compact(all)
	return all[:min(len(all), limit)], found || len(up) > 0, nil
}

// logUpstream logs a failure of the upstream (handle logs only 5xx answers); an unknown tag
// or link is no failure.
func (s *Server) logUpstream(r *http.Request, route, what string, err error) {
	var e *errcode.Error
	if r.Context().Err() == nil && errors.As(err, &e) && e.Status == http.StatusFailedDependency {
		s.log.Warn("upstream registry failed", "backend", route, "object", what, "err", e.Err)
	}
}

// Interface guards
var (
	_ upstreamBackend = (*registry.Backend)(nil)
	_ router          = (*backend.Router)(nil)
)
