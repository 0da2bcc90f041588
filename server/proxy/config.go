package proxy

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/ring/members"
	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/pki"
)

// Defaults of Config.
const (
	DefaultListen         = "127.0.0.1:15400"
	DefaultAdminListen    = "127.0.0.1:15402"
	DefaultManifestCache  = 64 << 20
	DefaultDialTimeout    = 5 * time.Second
	DefaultIndexTimeout   = 30 * time.Second
	DefaultOriginResponse = 15 * time.Minute
	DefaultSeedQueue      = 256
	DefaultSeedParallel   = 4
)

// Config is a proxy's YAML configuration file.
//
//	listen: 127.0.0.1:15400          # OCI distribution API (--listen overrides)
//	admin_listen: 127.0.0.1:15402    # metrics, pprof, health and readiness
//	origins:                         # blob API addresses of every origin, as in their ring
//	  - 10.0.0.1:15000
//	  - 10.0.0.2:15000
//	build_index:                     # build-index API addresses, tried in order
//	  - 10.0.0.5:15100
//	  - 10.0.0.6:15100
//	max_blob_size: 10GiB             # refuse larger blobs with 413; default: the origins' limit
//	manifest_cache: 64MiB            # manifest bytes kept in memory
//	origin_health:                   # how the proxy checks the origins (the ring's defaults)
//	  interval: 5s
//	  timeout: 2s
//	  fail_threshold: 3
//	  pass_threshold: 2
//	timeouts:
//	  dial: 5s                       # connecting to an origin or a build-index node
//	  build_index: 30s               # one build-index request
//	  origin_response: 15m           # waiting for an origin's answer (a commit copies the blob to its owners first)
//	auth:                            # absent: anyone may push and pull (see server/auth)
//	  htpasswd_file: /etc/krakenctl/htpasswd
//	  rules:
//	    - {repositories: ["**"], users: [ci], actions: [pull, push]}
//	seed:                            # absent: no seeding, POST /notifications answers 503
//	  on_push: true                  # seed repo@digest of every manifest pushed here
//	  agents: [10.0.1.1:16000]       # also preload on these agents; none: origins only
//	  parallel: 4                    # blobs warmed at once by one seed
//	  queue: 256                     # seeds waiting; more are dropped and counted
type Config struct {
	// Listen is the address the OCI distribution API binds. The --listen flag overrides it.
	Listen string `yaml:"listen"`
	// AdminListen is the address of the admin listener: /metrics, /debug/pprof, /health and
	// /readyz. It stays on loopback by default: pprof exposes the process's memory.
	AdminListen string `yaml:"admin_listen"`
	// TLS is the role's certificate, key and cluster CA: every listener speaks TLS and every
	// call to another component presents the certificate. Empty runs in plain text.
	// client_auth defaults to verify_if_given.
	TLS pki.Config `yaml:"tls"`
	// Origins are the blob-API addresses (host:port) of every origin, spelled as in the
	// origins' ring.members, or dns:///NAME:PORT entries (every address NAME resolves to),
	// re-resolved every dns_interval. Required. Upload sessions are started on them and their
	// ids name the origin, so an id naming an address not listed here is refused.
	Origins []string `yaml:"origins"`
	// BuildIndex are API addresses of build-index nodes (host:port, or dns:///NAME:PORT),
	// tried in order: the next one is asked when one cannot be reached or answers 5xx.
	// Required.
	BuildIndex []string `yaml:"build_index"`
	// DNSInterval is how often the dns:/// entries of origins and build_index are resolved
	// again; zero means 30s.
	DNSInterval time.Duration `yaml:"dns_interval"`
	// MaxBlobSize refuses blobs larger than this with 413 SIZE_INVALID. Zero leaves the limit
	// to the origins (their store.max_blob_size).
	MaxBlobSize config.ByteSize `yaml:"max_blob_size"`
	// ManifestCache bounds the bytes of manifests kept in memory (manifests are immutable, so
	// the cache needs no invalidation; a repository's links are still checked on every read).
	ManifestCache config.ByteSize `yaml:"manifest_cache"`
	// OriginHealth configures the proxy's health checks of the origins: uploads start on a
	// healthy origin and reads try healthy ones first.
	OriginHealth HealthConfig `yaml:"origin_health"`
	// Timeouts bound the proxy's calls to the origins and the build-index.
	Timeouts TimeoutConfig `yaml:"timeouts"`
	// Auth authenticates and authorizes the clients of the registry API (htpasswd users,
	// tokens, per-repository rules). Nil (no auth: key) leaves the API open to anyone who can
	// reach it.
	Auth *auth.Config `yaml:"auth"`
	// Seed makes pushed images hot on their owning origins (and agents) before anyone pulls:
	// on every manifest push with OnPush, and on registry notifications (POST /notifications).
	// Nil: no seeding.
	Seed *SeedConfig `yaml:"seed"`
}

// SeedConfig configures the proxy's seeding (server/seed) of pushed images.
type SeedConfig struct {
	// OnPush seeds repo@digest of every manifest pushed through this proxy, once committed.
	OnPush bool `yaml:"on_push"`
	// Agents are agents' API addresses to preload every blob on; none: the origins only.
	Agents []string `yaml:"agents"`
	// Parallel bounds the blobs one seed warms at once; DefaultSeedParallel when zero.
	Parallel int `yaml:"parallel"`
	// Queue bounds the seeds waiting for the worker; one more is dropped (and counted).
	// DefaultSeedQueue when zero.
	Queue int `yaml:"queue"`
}

// HealthConfig configures the health checks of the origins (GET /health).
type HealthConfig struct {
	// Interval is the time between two rounds of checks.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one check; it must not exceed Interval.
	Timeout time.Duration `yaml:"timeout"`
	// FailThreshold is how many failed checks in a row mark an origin down.
	FailThreshold int `yaml:"fail_threshold"`
	// PassThreshold is how many successful checks in a row mark it up again.
	PassThreshold int `yaml:"pass_threshold"`
}

// TimeoutConfig bounds calls to other roles.
type TimeoutConfig struct {
	// Dial bounds connecting to an origin or a build-index node.
	Dial time.Duration `yaml:"dial"`
	// BuildIndex bounds one request to a build-index node.
	BuildIndex time.Duration `yaml:"build_index"`
	// OriginResponse bounds the wait for an origin's response headers once a request is sent.
	// A commit answers only after the blob is on its owners, so keep it generous.
	OriginResponse time.Duration `yaml:"origin_response"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	c.TLS.DefaultsTo(pki.ClientAuthVerifyIfGiven)
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.ManifestCache == 0 {
		c.ManifestCache = DefaultManifestCache
	}
	h := &c.OriginHealth
	if h.Interval == 0 {
		h.Interval = ring.DefaultHealthInterval
	}
	if h.Timeout == 0 {
		h.Timeout = min(ring.DefaultHealthTimeout, h.Interval)
	}
	if h.FailThreshold == 0 {
		h.FailThreshold = ring.DefaultFailThreshold
	}
	if h.PassThreshold == 0 {
		h.PassThreshold = ring.DefaultPassThreshold
	}
	t := &c.Timeouts
	if t.Dial == 0 {
		t.Dial = DefaultDialTimeout
	}
	if t.BuildIndex == 0 {
		t.BuildIndex = DefaultIndexTimeout
	}
	if t.OriginResponse == 0 {
		t.OriginResponse = DefaultOriginResponse
	}
	if c.Auth != nil {
		c.Auth.Defaults()
	}
	if c.Seed != nil {
		if c.Seed.Parallel == 0 {
			c.Seed.Parallel = DefaultSeedParallel
		}
		if c.Seed.Queue == 0 {
			c.Seed.Queue = DefaultSeedQueue
		}
	}
}

// Validate reports every problem, each naming its key. It expects Defaults to have run.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, err := range c.TLS.Problems() {
		bad("tls.%w", err)
	}
	for _, a := range c.ListenAddrs() {
		if err := config.CheckHostPort(a.Addr); err != nil {
			bad("%s: %w", a.Key, err)
		}
	}
	errs = append(errs, ring.CheckMembers("origins", c.Origins)...)
	if len(c.BuildIndex) == 0 {
		bad("build_index: required (the API addresses of the build-index nodes)")
	}
	seen := map[string]bool{}
	for i, a := range c.BuildIndex {
		if members.IsDNS(a) {
			if _, _, err := members.ParseDNS(a); err != nil {
				bad("build_index[%d]: %w", i, err)
			}
		} else if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			bad("build_index[%d]: %q is not host:port", i, a)
		}
		if seen[a] {
			bad("build_index[%d]: %q is listed twice", i, a)
		}
		seen[a] = true
	}
	if c.MaxBlobSize < 0 {
		bad("max_blob_size: must not be negative")
	}
	if c.DNSInterval < 0 {
		bad("dns_interval: must not be negative")
	}
	if c.ManifestCache < 0 {
		bad("manifest_cache: must not be negative")
	}
	h := c.OriginHealth
	if h.Interval <= 0 {
		bad("origin_health.interval: must be positive")
	}
	if h.Timeout <= 0 || h.Timeout > h.Interval {
		bad("origin_health.timeout: must be positive and at most origin_health.interval")
	}
	if h.FailThreshold < 1 {
		bad("origin_health.fail_threshold: must be at least 1")
	}
	if h.PassThreshold < 1 {
		bad("origin_health.pass_threshold: must be at least 1")
	}
	t := c.Timeouts
	if t.Dial <= 0 {
		bad("timeouts.dial: must be positive")
	}
	if t.BuildIndex <= 0 {
		bad("timeouts.build_index: must be positive")
	}
	if t.OriginResponse <= 0 {
		bad("timeouts.origin_response: must be positive")
	}
	if c.Auth != nil {
		for _, err := range c.Auth.Problems() {
			bad("auth.%w", err)
		}
	}
	if sc := c.Seed; sc != nil {
		if sc.Parallel < 1 {
			bad("seed.parallel: must be at least 1")
		}
		if sc.Queue < 1 || sc.Queue > maxSeedQueue {
			bad("seed.queue: must be between 1 and %d", maxSeedQueue)
		}
		for i, a := range sc.Agents {
			if err := config.CheckHostPort(a); err != nil {
				bad("seed.agents[%d]: %w", i, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ListenAddrs lists the addresses the proxy binds, for config.Check's overlap check.
func (c *Config) ListenAddrs() []config.ListenAddr {
	return []config.ListenAddr{{Key: "listen", Addr: c.Listen}, {Key: "admin_listen", Addr: c.AdminListen}}
}

// ringConfig is the proxy's view of the origin ring: its members and health checks. Replicas
// do not matter to the proxy, which only ranks members.
func (c *Config) ringConfig() ring.Config {
	return ring.Config{
		Members:        c.Origins,
		HealthInterval: c.OriginHealth.Interval,
		HealthTimeout:  c.OriginHealth.Timeout,
		FailThreshold:  c.OriginHealth.FailThreshold,
		PassThreshold:  c.OriginHealth.PassThreshold,
	}
}

// TLSConfig is the role's tls section, for the process that starts it.
func (c *Config) TLSConfig() pki.Config { return c.TLS }
