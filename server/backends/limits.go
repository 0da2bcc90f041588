package backends

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/limit"
	"github.com/krakenctl/krakenctl/backend/registry"
	"github.com/krakenctl/krakenctl/server/config"
)

// LimitsConfig is a route's `limits:`, for any backend kind: the route's bandwidth and
// requests in flight in this process, and retries of what the store refused as too much.
//
//	limits: {upload_rate: 50MiB, download_rate: 200MiB, concurrency: 8, retries: 5, retry_min: 200ms, retry_max: 30s}
type LimitsConfig struct {
	// UploadRate is the bytes per second of all write-backs through the route together
	// ("50MiB"); 0 is unlimited.
	UploadRate config.ByteSize `yaml:"upload_rate"`
	// DownloadRate is the bytes per second of all pull-throughs through the route together;
	// 0 is unlimited. Separate from UploadRate so a write-back backlog cannot starve the pulls
	// a client waits on.
	DownloadRate config.ByteSize `yaml:"download_rate"`
	// Concurrency is the most requests in flight to the backend (Stat and List too); 0 is
	// unlimited.
	Concurrency int `yaml:"concurrency"`
	// Retries is how many times a throttled request (429, 503, SlowDown) or one whose
	// connection was reset before any byte moved is tried again; 0 tries once.
	Retries int `yaml:"retries"`
	// RetryMin is the first backoff (default 200ms), doubled on each retry up to RetryMax
	// (default 30s), which also caps how long a store's Retry-After is obeyed.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
}

func (c *LimitsConfig) limit() limit.Config {
	l := limit.Config{
		UploadRate: int64(c.UploadRate), DownloadRate: int64(c.DownloadRate),
		Concurrency: c.Concurrency, Retries: c.Retries, RetryMin: c.RetryMin, RetryMax: c.RetryMax,
	}
	l.Defaults()
	return l
}

// Validate reports the first invalid key, named as in YAML under limits.
func (c *LimitsConfig) Validate() error { return c.limit().Validate() }

// wrap returns b under c's limits, or b itself when c is nil. An upstream registry keeps its
// tag lookups, under the same limits.
func (c *LimitsConfig) wrap(b backend.Backend, route string, reg prometheus.Registerer) (backend.Backend, error) {
	if c == nil {
		return b, nil
	}
	l, err := limit.New(b, c.limit(), limit.Deps{Route: route, Registerer: reg})
	if err != nil {
		return nil, err
	}
	if r, ok := b.(*registry.Backend); ok {
		return limitedRegistry{Backend: l, reg: r}, nil
	}
	return l, nil
}

// limitedRegistry is an upstream registry under a route's limits, with the registry's own
// methods the build-index uses for upstream tags.
type limitedRegistry struct {
	*limit.Backend
	reg *registry.Backend
}

// Tags is registry.Backend.Tags under the route's limits.
func (l limitedRegistry) Tags(ctx context.Context, repo string) ([]string, error) {
	var tags []string
	err := l.Do(ctx, "tags", func(ctx context.Context) error {
		var err error
		tags, err = l.reg.Tags(ctx, repo)
		return err
	})
	return tags, err
}

// ResolveTag is registry.Backend.ResolveTag under the route's limits.
func (l limitedRegistry) ResolveTag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	var d digest.Digest
	err := l.Do(ctx, "resolve_tag", func(ctx context.Context) error {
		var err error
		d, err = l.reg.ResolveTag(ctx, repo, tag)
		return err
	})
	return d, err
}
