// Package backends turns the `backends:` section of a role's config into a backend.Router. It is
// the one table that maps a backend's name to its implementation; nothing registers itself.
package backends

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/azure"
	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/backend/gcs"
	"github.com/krakenctl/krakenctl/backend/httpbackend"
	"github.com/krakenctl/krakenctl/backend/registry"
	"github.com/krakenctl/krakenctl/backend/s3"
	"github.com/krakenctl/krakenctl/backend/webhdfs"
)

// Config is one route: namespaces matching Namespace go to the one backend configured below it.
//
//	backends:
//	  - namespace: "library/.*"
//	    s3: {bucket: images, region: us-east-1}
//	  - namespace: ".*"
//	    fs: {root: /var/lib/krakenctl/blobs}
type Config struct {
	// Namespace is a regular expression matched against the whole namespace.
	Namespace string `yaml:"namespace"`
	// Name labels the route in logs; defaults to the backend type and index.
	Name string `yaml:"name"`

	FS       *fs.Config          `yaml:"fs"`
	S3       *s3.Config          `yaml:"s3"`
	HTTP     *httpbackend.Config `yaml:"http"`
	Registry *registry.Config    `yaml:"registry"`
	WebHDFS  *webhdfs.Config     `yaml:"webhdfs"`
	GCS      *gcs.Config         `yaml:"gcs"`
	Azure    *azure.Config       `yaml:"azure"`

	// Limits caps the route's bandwidth and requests in flight and retries its throttled
	// requests (limits.go); nil leaves the backend unwrapped.
	Limits *LimitsConfig `yaml:"limits"`
}

// kind returns the configured backend's type name, or an error unless exactly one is set.
func (c *Config) kind() (string, error) {
	var kinds []string
	if c.FS != nil {
		kinds = append(kinds, "fs")
	}
	if c.S3 != nil {
		kinds = append(kinds, "s3")
	}
	if c.HTTP != nil {
		kinds = append(kinds, "http")
	}
	if c.Registry != nil {
		kinds = append(kinds, "registry")
	}
	if c.GCS != nil {
		kinds = append(kinds, "gcs")
	}
	if c.WebHDFS != nil {
		kinds = append(kinds, "webhdfs")
	}
	if c.Azure != nil {
		kinds = append(kinds, "azure")
	}
	switch len(kinds) {
	case 0:
		return "", errors.New("no backend configured: set one of fs, s3, gcs, azure, webhdfs, http, registry")
	case 1:
		return kinds[0], nil
	default:
		return "", fmt.Errorf("more than one backend configured (%v): set exactly one", kinds)
	}
}

// Validate checks the route and the backend's own config (after its defaults).
func (c *Config) Validate() error {
	if c.Namespace == "" {
		return errors.New("namespace: required (a regular expression; \".*\" matches everything)")
	}
	if _, err := regexp.Compile(c.Namespace); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	kind, err := c.kind()
	if err != nil {
		return err
	}
	var verr error
	switch kind {
	case "fs":
		verr = c.FS.Validate()
	case "s3":
		c.S3.Defaults()
		verr = c.S3.Validate()
	case "http":
		c.HTTP.Defaults()
		verr = c.HTTP.Validate()
	case "registry":
		c.Registry.Defaults()
		verr = c.Registry.Validate()
	case "gcs":
		c.GCS.Defaults()
		verr = c.GCS.Validate()
	case "webhdfs":
		c.WebHDFS.Defaults()
		verr = c.WebHDFS.Validate()
	case "azure":
		c.Azure.Defaults()
		verr = c.Azure.Validate()
	}
	if verr != nil {
		return fmt.Errorf("%s: %w", kind, verr)
	}
	if c.Limits != nil {
		if err := c.Limits.Validate(); err != nil {
			return fmt.Errorf("limits.%w", err)
		}
	}
	return nil
}

// Deps are the optional collaborators of the backends Build makes.
type Deps struct {
	// Registerer receives the metrics of the routes with limits (backend/limit); nil registers
	// nowhere.
	Registerer prometheus.Registerer
}

// Resolve is ResolveWith without Deps.
func Resolve(ctx context.Context, injected backend.Backend, cfgs []Config) (backend.Backend, error) {
	return ResolveWith(ctx, injected, cfgs, Deps{})
}

// ResolveWith is the backend a role uses: injected when it is not nil (tests inject faults),
// otherwise the router BuildWith makes of cfgs, or nil when cfgs is empty (the role has no
// storage behind it).
func ResolveWith(ctx context.Context, injected backend.Backend, cfgs []Config, deps Deps) (backend.Backend, error) {
	switch {
	case injected != nil:
		return injected, nil
	case len(cfgs) == 0:
		return nil, nil
	}
	r, err := BuildWith(ctx, cfgs, deps)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Build is BuildWith without Deps.
func Build(ctx context.Context, cfgs []Config) (*backend.Router, error) {
	return BuildWith(ctx, cfgs, Deps{})
}

// BuildWith constructs every configured backend, wrapped in its route's limits when it has
// any, and returns the router over them. Configs must have passed Validate.
func BuildWith(ctx context.Context, cfgs []Config, deps Deps) (*backend.Router, error) {
	routes := make([]backend.Route, 0, len(cfgs))
	for i := range cfgs {
		c := &cfgs[i]
		kind, err := c.kind()
		if err != nil {
			return nil, fmt.Errorf("backends[%d]: %w", i, err)
		}
		var b backend.Backend
		switch kind {
		case "fs":
			b, err = fs.New(*c.FS)
		case "s3":
			b, err = s3.New(ctx, *c.S3)
		case "http":
			b, err = httpbackend.New(*c.HTTP, httpbackend.Deps{})
		case "registry":
			b, err = registry.New(*c.Registry, registry.Deps{})
		case "gcs":
			b, err = gcs.New(ctx, *c.GCS)
		case "webhdfs":
			b, err = webhdfs.New(*c.WebHDFS)
		case "azure":
			b, err = azure.New(*c.Azure)
		}
		if err != nil {
			return nil, fmt.Errorf("backends[%d] (%s): %w", i, kind, err)
		}
		name := c.Name
		if name == "" {
			name = fmt.Sprintf("%s-%d", kind, i)
		}
		if b, err = c.Limits.wrap(b, name, deps.Registerer); err != nil {
			return nil, fmt.Errorf("backends[%d].limits: %w", i, err)
		}
		re, err := regexp.Compile(c.Namespace)
		if err != nil {
			return nil, fmt.Errorf("backends[%d].namespace: %w", i, err)
		}
		routes = append(routes, backend.Route{Pattern: re, Name: name, Backend: b})
	}
	return backend.NewRouter(routes...), nil
}
