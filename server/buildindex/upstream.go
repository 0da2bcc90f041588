package buildindex

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/registry"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
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

// UpstreamTagsConfig is the upstream_tags section: tags of a repository whose namespace the
// backends route to an upstream registry (a `registry:` route) resolve there when the Raft
// store does not have them, as Kraken's registry_tag backend does, so a cluster can sit in
// front of an existing registry with nothing pushed through its proxy.
//
// Such answers are not written into Raft: the upstream owns those tags, and a tag pushed
// here wins over the upstream's. They are therefore not linearizable: an answer is reused for
// TTL, so a tag moved upstream reaches pulls here within TTL. Only digests are cached; a tag
// the upstream does not know, and any failure, is asked again at the next read.
//
//	upstream_tags:
//	  disabled: false
//	  ttl: 30s
type UpstreamTagsConfig struct {
	// Disabled keeps every tag read inside the Raft store, even for registry-backed
	// repositories.
	Disabled bool `yaml:"disabled"`
	// TTL is how long an upstream answer is reused; DefaultUpstreamTagTTL when zero.
	TTL time.Duration `yaml:"ttl"`
}

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

// tagResolver is a backend that can resolve tags: backend/registry's Backend.
type tagResolver interface {
	ResolveTag(ctx context.Context, repo, tag string) (digest.Digest, error)
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

type upstreamKey struct{ repo, tag string }

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
func (u *upstreamTags) route(repo string) (tagResolver, string, bool) {
	if rt, ok := u.backend.(router); ok {
		r, err := rt.Route(repo)
		if err != nil {
			return nil, "", false
		}
		res, ok := r.Backend.(tagResolver)
		return res, r.Name, ok
	}
	res, ok := u.backend.(tagResolver)
	return res, "upstream", ok
}

// resolve returns repo:tag's digest from the cache or the upstream registry behind route.
// Concurrent reads of one tag share one request upstream.
func (u *upstreamTags) resolve(ctx context.Context, res tagResolver, route, repo, tag string) (digest.Digest, error) {
	k := upstreamKey{repo, tag}
	u.mu.Lock()
	e, ok := u.cache[k]
	u.mu.Unlock()
	if ok && u.now().Before(e.expires) {
		u.metrics.upstreamCacheHits.Inc()
		return e.digest, nil
	}
	ch := u.calls.DoChan(repo+":"+tag, func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), upstreamTagTimeout)
		defer cancel()
		d, err := res.ResolveTag(rctx, repo, tag)
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
			return "", upstreamError(route, repo, tag, r.Err)
		}
		return r.Val.(digest.Digest), nil
	}
}

// store caches d for repo:tag. A full cache first loses its expired entries, then, if
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

// upstreamError maps a failed resolution to the registry error the client sees: the
// upstream's "not found" is MANIFEST_UNKNOWN as for a local tag; any failure of the upstream
// is a 502 that names it and says what went wrong, never a bare 500.
func upstreamError(route, repo, tag string, err error) error {
	e := &errcode.Error{Status: http.StatusBadGateway, Code: errcode.CodeUnavailable, Err: err}
	switch {
	case errors.Is(err, backend.ErrNotFound):
		e.Status, e.Code = http.StatusNotFound, errcode.CodeManifestUnknown
		e.Message = fmt.Sprintf("manifest unknown: %s:%s is unknown here and to the upstream registry (backend %s)", repo, tag, route)
	case errors.Is(err, registry.ErrUnauthorized):
		e.Code = errcode.CodeDenied
		e.Message = fmt.Sprintf("the upstream registry (backend %s) refused the build-index's credentials for %s:%s: %v", route, repo, tag, err)
	case errors.Is(err, registry.ErrInvalidResponse), errors.Is(err, registry.ErrSizeMismatch):
		e.Code = errcode.CodeUnknown
		e.Message = fmt.Sprintf("the upstream registry (backend %s) answered %s:%s with an invalid response: %v", route, repo, tag, err)
	case errors.Is(err, backend.ErrInvalidKey):
		e.Status, e.Code = http.StatusBadRequest, errcode.CodeNameInvalid
		e.Message = err.Error()
	default:
		e.Message = fmt.Sprintf("the upstream registry (backend %s) could not resolve %s:%s: %v", route, repo, tag, err)
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
	d, err := s.upstream.resolve(r.Context(), res, route, repo, tag)
	if err != nil {
		return err // a failure upstream is a 502, which handle logs
	}
	w.Header().Set(HeaderTagSource, "upstream "+route)
	return writeJSON(w, http.StatusOK, api.Tag{Repo: repo, Tag: tag, Digest: d})
}

// Interface guards
var (
	_ tagResolver = (*registry.Backend)(nil)
	_ router      = (*backend.Router)(nil)
)
