// Package dev runs a local krakenctl cluster in one process, for trying krakenctl on a laptop
// and for tests: N origins on consecutive loopback ports, sharing one filesystem backend, each
// with its own store under one directory; optionally a single-node build-index, a tracker with
// agents, and the registry proxy. `krakenctl dev up` is a thin wrapper around it; the cluster
// itself is built by server/cluster, and this package adds what a developer's cluster needs on
// top: the documented ports, the directory lock, state that survives a restart, and the
// endpoints file.
//
// A Cluster is built with New (which validates, locks the directory, binds every listener and
// opens every role) and then either Run once, or released with Close. Once every role answers
// /readyz, Run writes the endpoints file (if configured) so operator commands find the cluster,
// and it removes that file again when it returns.
//
// Ports, from Config.Port (P, default 15000) and Config.AgentPort (A, default 16000):
//
//	origin i         P+i        its swarm port P+200+i, its admin listener P+310+i
//	build-index      P+100      its Raft port P+101, its admin listener P+303
//	tracker          P+300      its admin listener P+301
//	proxy            P+400      the registry clients push to; its admin listener P+302
//	agent i          A+10i      blob and registry pull API; its swarm port A+10i+1, its admin
//	                            listener A+10i+2
//
// The admin listeners serve /metrics, /debug/pprof, /health and /readyz; the default ones are
// 15301-15303, 15310 and up, and 16002, 16012, ...
//
// With Config.TLS every listener serves TLS and the roles authenticate each other with
// certificates from a CA made for the run (Dir/tls); the endpoints file then names the CA and
// an admin's client certificate, so operator commands reach the cluster without flags. With
// Config.Auth as well, the proxy lets one user, Username, do everything, with a random
// password kept in Dir/auth (Credentials); nobody else may push or pull through it.
package dev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/proxy"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultOrigins        = 3
	DefaultPort           = 15000
	DefaultHealthInterval = 2 * time.Second
	// DefaultAgentPort is the first agent's blob API port, the port `krakenctl pull` tries
	// when given no agent.
	DefaultAgentPort = 16000
	// MaxOrigins bounds Config.Origins: a dev cluster is for one machine.
	MaxOrigins = cluster.MaxPlannedOrigins
	// MaxAgents bounds Config.Agents.
	MaxAgents = 64
	// PortSpan is how far above Config.Port the cluster's ports reach (the proxy's).
	PortSpan = cluster.PortSpan
	// Host is the only address a dev cluster listens on.
	Host = cluster.Host
	// TLSDir is the directory in Config.Dir that holds the certificates of a cluster with TLS.
	TLSDir = "tls"
)

// Errors returned by New and Run.
var (
	// ErrInvalidConfig is wrapped by every error about a bad Config.
	ErrInvalidConfig = errors.New("invalid dev cluster config")
	// ErrDirInUse means another dev cluster runs from the same directory.
	ErrDirInUse = errors.New("dev cluster directory in use")
	// ErrAlreadyRun is returned by Run after Run or Close.
	ErrAlreadyRun = errors.New("dev cluster already run or closed")
)

// Config describes a dev cluster.
type Config struct {
	// Origins is how many origins run; DefaultOrigins when zero.
	Origins int
	// Dir holds every origin's store (Dir/origin-<i>), the shared filesystem backend
	// (Dir/backend) and the lock file. Required; created if missing.
	Dir string
	// Port is the first origin's port; origin i listens on 127.0.0.1:Port+i. Zero means an
	// ephemeral port for every origin (tests). Use DefaultPort for the documented default.
	Port int
	// EndpointsFile, when set, is written with the origins' addresses once every origin is
	// ready, and removed when Run returns.
	EndpointsFile string
	// HealthInterval is the ring's health check interval; DefaultHealthInterval when zero.
	HealthInterval time.Duration
	// Agents is how many agents run, each with its own store (Dir/agent-<i>), downloading
	// through the swarm that the origins seed (origin i on Port+200+i) and a tracker
	// (Port+300). Zero runs neither agents nor tracker.
	Agents int
	// AgentPort is the first agent's blob API port when Port is set; DefaultAgentPort when
	// zero. Agent i serves on AgentPort+10i and accepts peers on AgentPort+10i+1. The agents'
	// ports must stay out of Port..Port+PortSpan.
	AgentPort int
	// BuildIndex runs a single-node build-index (API on Port+100, Raft on Port+101, state in
	// Dir/build-index, bootstrapped on the first start): tags checked against the origins and
	// written back to the shared backend. Agents resolve tags (registry API) through it.
	BuildIndex bool
	// Proxy runs the registry proxy on Port+400: the OCI distribution API that docker, crane
	// and skopeo push to, storing blobs and manifests on the origins and tags and links on the
	// build-index. It needs BuildIndex.
	Proxy bool
	// TLS runs every role with TLS on every listener and mutual TLS between roles, with
	// certificates from a CA made for this run: Dir/tls holds ca.pem, a certificate and key per
	// role (valid for 127.0.0.1 and localhost) and admin.pem, the admin's client certificate
	// that the endpoints file names for operator commands.
	TLS bool
	// Auth closes the proxy's registry API to everyone but one user, Username, who may pull,
	// push and delete anything: the distribution token flow (a Bearer challenge, tokens from
	// the proxy's /v2/token) and Basic credentials, with a random password made at the first
	// start and kept in Dir/auth/password (see Credentials). Dir/auth also holds the htpasswd
	// file (bcrypt) and the token secret, written at every start; every file there is readable
	// by its owner only. The admin's certificate of TLS may do everything too. It needs TLS
	// (a password sent in plain text is no secret) and Proxy.
	Auth bool
	// Upstreams route repositories to upstream registries, ahead of the shared filesystem
	// backend: origins pull through from them and the build-index resolves their tags there.
	Upstreams []Upstream
	// Rate caps, in bytes per second, every origin's swarm egress and every agent's swarm
	// egress and ingress, as on hosts with that link speed (0: no cap). A slow swarm lets
	// `krakenctl top` be watched, and tried, on one machine.
	Rate int64
	// Replication is the build-index's replication rules: tags of matching repositories go to
	// the clusters of the endpoints files the rules name (often another dev cluster's). Dev
	// queues retry at most every 10 s, so a remote that comes back is caught up quickly.
	Replication []buildindex.ReplicationRule
}

// Deps are a dev cluster's collaborators.
type Deps struct {
	// Logger receives every role's logs; nil discards them.
	Logger *slog.Logger
}

// Cluster is a local cluster. Its accessors are safe for concurrent use; Run and Close are
// called at most once between them.
type Cluster struct {
	cfg    Config
	log    *slog.Logger
	cl     *cluster.Cluster
	creds  Credentials
	unlock func()
	ready  chan struct{}

	mu   sync.Mutex
	used bool // Run or Close was called
}

// New validates cfg, takes the directory's lock, binds every listener and builds every role
// (opening their stores). On error nothing stays open. The caller must then call Run or Close.
func New(cfg Config, deps Deps) (*Cluster, error) {
	if cfg.Origins == 0 {
		cfg.Origins = DefaultOrigins
	}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = DefaultHealthInterval
	}
	if cfg.AgentPort == 0 {
		cfg.AgentPort = DefaultAgentPort
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create dev dir: %w", err)
	}
	unlock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	spec := cfg.spec()
	if cfg.TLS {
		// A new CA every run: its key lives only in this process, so nothing on disk can issue
		// certificates the cluster trusts once it stops.
		ca, err := pki.NewCA("krakenctl dev " + cfg.Dir)
		if err != nil {
			unlock()
			return nil, fmt.Errorf("dev cluster ca: %w", err)
		}
		spec.TLS = &cluster.TLS{CA: ca, Dir: filepath.Join(cfg.Dir, TLSDir)}
	}
	var creds Credentials
	if cfg.Auth {
		ac, cr, err := setupAuth(cfg.Dir)
		if err != nil {
			unlock()
			return nil, fmt.Errorf("dev cluster login: %w", err)
		}
		creds = cr
		spec.ProxyConfig = func(_ int, c *proxy.Config) { c.Auth = ac }
	}
	cl, err := cluster.New(spec, cluster.Deps{Logger: log})
	if err != nil {
		unlock()
		return nil, err
	}
	return &Cluster{cfg: cfg, log: log, cl: cl, creds: creds, unlock: unlock, ready: make(chan struct{})}, nil
}

// spec is the cluster cfg describes.
func (cfg Config) spec() cluster.Spec {
	spec := cluster.Spec{
		Dir:            cfg.Dir,
		Origins:        cfg.Origins,
		Agents:         cfg.Agents,
		HealthInterval: cfg.HealthInterval,
		Rate:           config.ByteSize(cfg.Rate),
		BuildIndexConfig: func(_ int, c *buildindex.Config) {
			// The state of a dev build-index has lived in Dir/build-index as node "dev" since
			// before the cluster builder: keep both, so that tags survive an upgrade. The node
			// ID stays the same across restarts on other ephemeral ports: the Raft state
			// belongs to it, and Raft updates its recorded addresses when they change.
			c.Dir = filepath.Join(cfg.Dir, "build-index")
			c.Raft.NodeID = "dev"
			// A group of one has no peers to wait for: elect it quickly (the defaults suit a
			// network).
			c.Raft.HeartbeatTimeout = 200 * time.Millisecond
			c.Raft.ElectionTimeout = 200 * time.Millisecond
			c.Raft.LeaderLeaseTimeout = 100 * time.Millisecond
			c.Replication = cfg.Replication
			c.ReplicationQueue.RetryInitial = 500 * time.Millisecond
			c.ReplicationQueue.RetryMax = 10 * time.Second
		},
	}
	// A dev cluster's `krakenctl gc` finds the blobs a push touched let go within seconds
	// (the default holds them five minutes); a backend decision still has five seconds,
	// half of it, to ask the origins on one host.
	spec.OriginConfig = func(_ int, c *origin.Config) { c.Writeback.TouchHold = 10 * time.Second }
	spec.OriginConfig, spec.BuildIndexConfig = withUpstreams(cfg.Upstreams, spec.OriginConfig, spec.BuildIndexConfig)
	if cfg.BuildIndex {
		spec.BuildIndexes = 1
	}
	if cfg.Proxy {
		spec.Proxies = 1
	}
	if cfg.Port > 0 {
		spec.Ports = cluster.Ports{Base: cfg.Port, Agent: cfg.AgentPort}
	}
	return spec
}

// first returns the first address of addrs, empty when there is none.
func first(addrs []string) string {
	if len(addrs) == 0 {
		return ""
	}
	return addrs[0]
}

// BuildIndexAddr returns the build-index's API address, empty without one.
func (c *Cluster) BuildIndexAddr() string { return first(c.cl.Addrs(cluster.BuildIndex)) }

// ProxyAddr returns the registry proxy's address, empty without one.
func (c *Cluster) ProxyAddr() string { return first(c.cl.Addrs(cluster.Proxy)) }

// TrackerAddr returns the tracker's address, empty without agents.
func (c *Cluster) TrackerAddr() string { return first(c.cl.Addrs(cluster.Tracker)) }

// Agents returns the agents' blob API addresses.
func (c *Cluster) Agents() []string { return c.cl.Addrs(cluster.Agent) }

// Addrs returns the address of every role and of its admin listener, and with TLS the CA and
// the admin's certificate: what the endpoints file holds.
func (c *Cluster) Addrs() api.Endpoints {
	e := api.Endpoints{Admin: &api.AdminEndpoints{}}
	for _, f := range []struct {
		r           cluster.Role
		addr, admin *[]string
	}{
		{cluster.Origin, &e.Origins, &e.Admin.Origins},
		{cluster.BuildIndex, &e.BuildIndex, &e.Admin.BuildIndex},
		{cluster.Tracker, &e.Trackers, &e.Admin.Trackers},
		{cluster.Proxy, &e.Proxy, &e.Admin.Proxy},
		{cluster.Agent, &e.Agents, &e.Admin.Agents},
	} {
		if c.cl.Len(f.r) > 0 {
			*f.addr, *f.admin = c.cl.Addrs(f.r), c.cl.AdminAddrs(f.r)
		}
	}
	if t := c.cl.AdminTLS(); t.Enabled() {
		e.TLS = &api.EndpointsTLS{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile}
	}
	return e
}

func (cfg Config) validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...))
	}
	if cfg.Origins < 1 || cfg.Origins > MaxOrigins {
		bad("origins must be between 1 and %d, got %d", MaxOrigins, cfg.Origins)
	}
	if cfg.Dir == "" {
		bad("dir is required")
	}
	if cfg.Agents < 0 || cfg.Agents > MaxAgents {
		bad("agents must be between 0 and %d, got %d", MaxAgents, cfg.Agents)
	}
	// The port plan is the cluster builder's, and so is its check; it is made here too because
	// New takes the directory's lock before it builds the cluster.
	if err := (cluster.Ports{Base: cfg.Port, Agent: cfg.AgentPort}).Check(cfg.spec()); err != nil {
		bad("%w", err)
	}
	if cfg.Proxy && !cfg.BuildIndex {
		bad("the proxy needs the build-index (set BuildIndex)")
	}
	if cfg.Auth && (!cfg.TLS || !cfg.Proxy) {
		bad("auth needs TLS and the proxy (set TLS and Proxy): a password sent in plain text is no secret")
	}
	if cfg.HealthInterval < 0 {
		bad("health interval must not be negative, got %s", cfg.HealthInterval)
	}
	for _, err := range upstreamProblems(cfg.Upstreams) {
		bad("%w", err)
	}
	return errors.Join(errs...)
}

// Endpoints returns the origins' addresses ("127.0.0.1:port"), in origin order. They are known
// as soon as New returns.
func (c *Cluster) Endpoints() []string { return c.cl.Addrs(cluster.Origin) }

// Credentials returns the login of the proxy with Config.Auth, the zero Credentials without.
// They are known as soon as New returns.
func (c *Cluster) Credentials() Credentials { return c.creds }

// Replicas returns how many origins hold each blob.
func (c *Cluster) Replicas() int { return c.cl.Replicas() }

// Dir returns the cluster's directory.
func (c *Cluster) Dir() string { return c.cfg.Dir }

// Ready is closed once every role answers /readyz and the endpoints file is written.
func (c *Cluster) Ready() <-chan struct{} { return c.ready }

// Run serves every role until ctx ends or one of them fails, then shuts all of them down,
// removes the endpoints file and releases the directory. It returns nil after a clean shutdown
// on cancellation, and the first error otherwise (a role's, or writing the endpoints file).
// Run may be called once.
func (c *Cluster) Run(ctx context.Context) error {
	if !c.claim() {
		return ErrAlreadyRun
	}
	defer c.unlock()
	if err := c.cl.Start(); err != nil {
		return err
	}
	// A role that fails while the others start ends the wait with its error.
	if err := c.cl.WaitReady(ctx); err != nil {
		return errors.Join(c.cl.Err(), c.cl.Close()) // nil when ctx ended first and all stopped cleanly
	}
	if c.cfg.EndpointsFile != "" {
		if err := api.WriteEndpoints(c.cfg.EndpointsFile, c.Addrs()); err != nil {
			return errors.Join(err, c.cl.Close())
		}
		defer func() {
			if err := removeEndpoints(c.cfg.EndpointsFile, c.Endpoints()); err != nil {
				c.log.Warn("remove endpoints file", "path", c.cfg.EndpointsFile, "err", err)
			}
		}()
	}
	c.log.Info("dev cluster ready", "origins", c.Endpoints(), "build_index", c.BuildIndexAddr(), "proxy", c.ProxyAddr(),
		"tracker", c.TrackerAddr(), "agents", c.Agents(), "admin", c.Addrs().Admin, "dir", c.cfg.Dir)
	close(c.ready)
	select {
	case <-ctx.Done():
	case <-c.cl.Failed():
	}
	return errors.Join(c.cl.Err(), c.cl.Close())
}

// Close releases a cluster that was never Run: it closes every role (their listeners, stores
// and queues) and the directory lock. After Run it does nothing and returns nil.
func (c *Cluster) Close() error {
	if !c.claim() {
		return nil
	}
	defer c.unlock()
	return c.cl.Close()
}

func (c *Cluster) claim() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.used {
		return false
	}
	c.used = true
	return true
}
