package dev

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/krakenctl/krakenctl/backend/registry"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/origin"
)

// Upstream routes repositories to an upstream registry, so the cluster sits in front of it:
// the origins pull blobs and manifests through from it, and the build-index resolves the
// tags that nobody pushed here there (buildindex.UpstreamTagsConfig).
type Upstream struct {
	// Namespace is a regular expression matched against the whole repository name.
	Namespace string
	// Registry is the upstream registry's backend config.
	Registry registry.Config
}

// routes are the backend routes of upstreams, first match first, ahead of the shared
// filesystem backend.
func upstreamRoutes(ups []Upstream) []backends.Config {
	routes := make([]backends.Config, len(ups))
	for i, u := range ups {
		reg := u.Registry
		routes[i] = backends.Config{Namespace: u.Namespace, Name: fmt.Sprintf("upstream-%d", i), Registry: &reg}
	}
	return routes
}

// withUpstreams puts the upstream routes ahead of the builder's backends of an origin and a
// build-index. The build-index's tag write-back keeps its own route to the shared backend
// ahead of them all: a registry route is read-only, and a pattern such as ".*" would catch it.
func withUpstreams(ups []Upstream, originCfg func(int, *origin.Config), biCfg func(int, *buildindex.Config)) (func(int, *origin.Config), func(int, *buildindex.Config)) {
	if len(ups) == 0 {
		return originCfg, biCfg
	}
	o := func(i int, c *origin.Config) {
		if originCfg != nil {
			originCfg(i, c)
		}
		c.Backends = append(upstreamRoutes(ups), c.Backends...)
	}
	b := func(i int, c *buildindex.Config) {
		if biCfg != nil {
			biCfg(i, c)
		}
		var head []backends.Config
		if len(c.Backends) > 0 {
			tags := c.Backends[0]
			ns := c.TagsNamespace
			if ns == "" {
				ns = buildindex.DefaultTagsNamespace
			}
			tags.Namespace, tags.Name = regexp.QuoteMeta(ns), "tags"
			head = append(head, tags)
		}
		head = append(head, upstreamRoutes(ups)...)
		c.Backends = append(head, c.Backends...)
	}
	return o, b
}

// upstreamProblems checks the upstreams' patterns and registry configs.
func upstreamProblems(ups []Upstream) []error {
	var errs []error
	for i, u := range ups {
		if u.Namespace == "" {
			errs = append(errs, fmt.Errorf("upstream %d: empty repository pattern", i))
		} else if _, err := regexp.Compile(u.Namespace); err != nil {
			errs = append(errs, fmt.Errorf("upstream %d: repository pattern %q: %w", i, u.Namespace, err))
		}
		reg := u.Registry
		reg.Defaults()
		if err := reg.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("upstream %d (%s): %w", i, u.Registry.Address, err))
		}
	}
	return errs
}

// ParseUpstream reads REGEX=URL (`dev up --upstream-registry`): the repositories matching
// REGEX come from the registry at URL, http://HOST:PORT (plain HTTP) or https://HOST[:PORT]. The URL holds no "=", so the
// last one separates them.
func ParseUpstream(v string) (Upstream, error) {
	i := strings.LastIndex(v, "=")
	if i <= 0 {
		return Upstream{}, errors.New("want REGEX=URL, for example 'library/.*=http://127.0.0.1:5000'")
	}
	re, raw := v[:i], v[i+1:]
	if _, err := regexp.Compile(re); err != nil {
		return Upstream{}, fmt.Errorf("repository pattern: %w", err)
	}
	if !strings.HasPrefix(raw, "http://") && !strings.HasPrefix(raw, "https://") {
		return Upstream{}, fmt.Errorf("registry URL %q: want http:// or https://", raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Upstream{}, fmt.Errorf("registry URL: %w", err)
	}
	if u.Host == "" || u.User != nil || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return Upstream{}, fmt.Errorf("registry URL %q: want scheme://host[:port] and nothing more", raw)
	}
	cfg := registry.Config{Address: u.Host, Insecure: u.Scheme == "http"}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return Upstream{}, fmt.Errorf("registry URL %q: %w", raw, err)
	}
	return Upstream{Namespace: re, Registry: cfg}, nil
}
