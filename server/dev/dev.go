// Package dev runs a local krakenctl cluster in one process, for trying krakenctl on a laptop
// and for tests: N origins on consecutive loopback ports, sharing one filesystem backend, each
// with its own store under one directory; optionally a single-node build-index, a tracker with
// agents, and the registry proxy. `krakenctl dev up` is a thin wrapper around it.
//
// A Cluster is built with New (which validates, locks the directory, binds every listener and
// opens every role) and then either Run once, or released with Close. Once every role answers
// /readyz, Run writes the endpoints file (if configured) so operator commands find the cluster,
// and it removes that file again when it returns.
//
// Ports, from Config.Port (P, default 15000) and Config.AgentPort (A, default 16000):
//
//	origin i         P+i        its swarm port P+200+i
//	build-index      P+100      its Raft port P+101
//	tracker          P+300
//	proxy            P+400      the registry clients push to
//	agent i          A+10i      blob and registry pull API; its swarm port A+10i+1
package dev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/tracker"
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
	MaxOrigins = 64
	// MaxAgents bounds Config.Agents.
	MaxAgents = 64
	// Offsets from Config.Port of the build-index, the origins' swarm ports, the tracker and
	// the proxy; agent i takes AgentPort+10i (blob API) and AgentPort+10i+1 (swarm).
	buildIndexOffset     = 100
	buildIndexRaftOffset = 101
	originPeerOffset     = 200
	trackerOffset        = 300
	proxyOffset          = 400
	agentStride          = 10
	// PortSpan is how far above Config.Port the cluster's ports reach (the proxy's).
	PortSpan = proxyOffset
	// Host is the only address a dev cluster listens on.
	Host = "127.0.0.1"
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
	// zero. Agent i serves on AgentPort+10i and accepts peers on AgentPort+10i+1.
	AgentPort int
	// BuildIndex runs a single-node build-index (API on Port+100, Raft on Port+101, state in
	// Dir/build-index, bootstrapped on the first start): tags checked against the origins and
	// written back to the shared backend. Agents resolve tags (registry API) through it.
	BuildIndex bool
	// Proxy runs the registry proxy on Port+400: the OCI distribution API that docker, crane
	// and skopeo push to, storing blobs and manifests on the origins and tags and links on the
	// build-index. It needs BuildIndex.
	Proxy bool
}

// Deps are a dev cluster's collaborators.
type Deps struct {
	// Logger receives every origin's logs; nil discards them.
	Logger *slog.Logger
	// HTTPClient is used for readiness checks; nil means a client with a short timeout.
	HTTPClient *http.Client
}

// Cluster is a local origin cluster. Endpoints and Ready are safe for concurrent use; Run and
// Close are called at most once between them.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	hc      *http.Client
	addrs   []string
	origins []*origin.Server
	bindex  *buildindex.Server // nil without Config.BuildIndex
	proxy   *proxy.Server      // nil without Config.Proxy
	tracker *tracker.Server    // nil without agents
	agents  []*agent.Server
	others  []net.Listener // swarm, tracker and agent listeners not yet owned by a role
	unlock  func()
	ready   chan struct{}

	mu   sync.Mutex
	used bool // Run or Close was called
}

// New validates cfg, takes the directory's lock, binds a loopback listener for each origin and
// opens each origin's store. On error nothing stays open. The caller must then call Run or Close.
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
	hc := deps.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create dev dir: %w", err)
	}
	unlock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, log: log, hc: hc, unlock: unlock, ready: make(chan struct{})}
	lns, err := listen(cfg)
	if err != nil {
		unlock()
		return nil, err
	}
	for _, ln := range lns {
		c.addrs = append(c.addrs, ln.Addr().String())
	}
	for i, ln := range lns {
		// Each origin gets its own registry, so its /metrics shows only its own series.
		reg := admin.NewRegistry()
		peer, err := c.listen(cfg.Port, originPeerOffset+i, "swarm port of origin "+strconv.Itoa(i))
		if err != nil {
			closeAll(lns[i:])
			c.release()
			return nil, err
		}
		srv, err := origin.New(c.originConfig(i), origin.Deps{
			Listener:     ln,
			PeerListener: peer,
			Logger:       log,
			Registerer:   reg,
			Gatherer:     reg,
		})
		if err != nil {
			closeAll(lns[i:])
			c.release()
			return nil, fmt.Errorf("start origin %s: %w", c.addrs[i], err)
		}
		c.origins = append(c.origins, srv)
	}
	if cfg.BuildIndex {
		if err := c.startBuildIndex(); err != nil {
			c.release()
			return nil, err
		}
	}
	if cfg.Proxy {
		if err := c.startProxy(); err != nil {
			c.release()
			return nil, err
		}
	}
	if cfg.Agents > 0 {
		if err := c.startSwarm(); err != nil {
			c.release()
			return nil, err
		}
	}
	return c, nil
}

// listen binds Host:base+offset, or an ephemeral port when base is zero. The listener is
// remembered so that release closes it if no role took it over.
func (c *Cluster) listen(base, offset int, what string) (net.Listener, error) {
	port := 0
	if base > 0 {
		port = base + offset
	}
	addr := net.JoinHostPort(Host, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for the %s: %w", addr, what, err)
	}
	c.others = append(c.others, ln)
	return ln, nil
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}

// startBuildIndex builds a one-node build-index that bootstraps its own Raft group.
func (c *Cluster) startBuildIndex() error {
	ln, err := c.listen(c.cfg.Port, buildIndexOffset, "build-index")
	if err != nil {
		return err
	}
	rln, err := c.listen(c.cfg.Port, buildIndexRaftOffset, "build-index Raft port")
	if err != nil {
		return err
	}
	cfg := buildindex.Config{
		Listen:     ln.Addr().String(),
		RaftListen: rln.Addr().String(),
		Dir:        filepath.Join(c.cfg.Dir, "build-index"),
		Origins:    c.addrs,
		Backends:   c.backends(),
	}
	// The node ID stays the same across restarts on other ephemeral ports: the Raft state in
	// Dir belongs to it. Its recorded addresses are updated by Raft when they change.
	cfg.Raft.NodeID = "dev"
	cfg.Raft.Bootstrap = true
	// A group of one has no peers to wait for: elect it quickly (the defaults suit a network).
	cfg.Raft.HeartbeatTimeout = 200 * time.Millisecond
	cfg.Raft.ElectionTimeout = 200 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 100 * time.Millisecond
	reg := admin.NewRegistry()
	c.bindex, err = buildindex.New(cfg, buildindex.Deps{
		Listener: ln, RaftListener: rln, Logger: c.log, Registerer: reg, Gatherer: reg,
	})
	if err != nil {
		return fmt.Errorf("start build-index: %w", err)
	}
	return nil
}

// BuildIndexAddr returns the build-index's API address, empty without one.
func (c *Cluster) BuildIndexAddr() string {
	if c.bindex == nil {
		return ""
	}
	return c.bindex.Addr()
}

// startProxy builds the registry proxy over the origins and the build-index.
func (c *Cluster) startProxy() error {
	ln, err := c.listen(c.cfg.Port, proxyOffset, "proxy")
	if err != nil {
		return err
	}
	cfg := proxy.Config{
		Listen:     ln.Addr().String(),
		Origins:    c.addrs,
		BuildIndex: []string{c.bindex.Addr()},
	}
	cfg.OriginHealth.Interval = c.cfg.HealthInterval
	cfg.OriginHealth.Timeout = min(ring.DefaultHealthTimeout, c.cfg.HealthInterval)
	reg := admin.NewRegistry()
	c.proxy, err = proxy.New(cfg, proxy.Deps{Listener: ln, Logger: c.log, Registerer: reg, Gatherer: reg})
	if err != nil {
		return fmt.Errorf("start proxy: %w", err)
	}
	return nil
}

// ProxyAddr returns the registry proxy's address, empty without one.
func (c *Cluster) ProxyAddr() string {
	if c.proxy == nil {
		return ""
	}
	return c.proxy.Addr()
}

// startSwarm builds the tracker and the agents.
func (c *Cluster) startSwarm() error {
	ln, err := c.listen(c.cfg.Port, trackerOffset, "tracker")
	if err != nil {
		return err
	}
	reg := admin.NewRegistry()
	c.tracker, err = tracker.New(tracker.Config{
		Listen: ln.Addr().String(), Origins: c.addrs, Replicas: c.Replicas(),
	}, tracker.Deps{Listener: ln, Logger: c.log, Registerer: reg, Gatherer: reg})
	if err != nil {
		return fmt.Errorf("start tracker: %w", err)
	}
	agentBase := 0
	if c.cfg.Port > 0 {
		agentBase = c.cfg.AgentPort
	}
	for i := range c.cfg.Agents {
		api, err := c.listen(agentBase, agentStride*i, "agent "+strconv.Itoa(i))
		if err != nil {
			return err
		}
		peer, err := c.listen(agentBase, agentStride*i+1, "swarm port of agent "+strconv.Itoa(i))
		if err != nil {
			return err
		}
		reg := admin.NewRegistry()
		cfg := agent.Config{
			Listen: api.Addr().String(), PeerListen: peer.Addr().String(),
			Trackers: []string{c.tracker.Addr()},
			StoreDir: filepath.Join(c.cfg.Dir, fmt.Sprintf("agent-%d", i)),
		}
		if c.bindex != nil {
			cfg.BuildIndex = []string{c.bindex.Addr()}
		}
		a, err := agent.New(cfg, agent.Deps{Listener: api, PeerListener: peer, Logger: c.log, Registerer: reg, Gatherer: reg})
		if err != nil {
			return fmt.Errorf("start agent %d: %w", i, err)
		}
		c.agents = append(c.agents, a)
	}
	return nil
}

// TrackerAddr returns the tracker's address, empty without agents.
func (c *Cluster) TrackerAddr() string {
	if c.tracker == nil {
		return ""
	}
	return c.tracker.Addr()
}

// Agents returns the agents' blob API addresses.
func (c *Cluster) Agents() []string {
	var out []string
	for _, a := range c.agents {
		out = append(out, a.Addr())
	}
	return out
}

// Addrs returns the address of every role: what the endpoints file holds.
func (c *Cluster) Addrs() api.Endpoints {
	e := api.Endpoints{Origins: c.Endpoints(), Agents: c.Agents()}
	if c.bindex != nil {
		e.BuildIndex = []string{c.bindex.Addr()}
	}
	if c.proxy != nil {
		e.Proxy = []string{c.proxy.Addr()}
	}
	if c.tracker != nil {
		e.Trackers = []string{c.tracker.Addr()}
	}
	return e
}

// role is what the cluster does with each of its servers.
type role interface {
	server.Role
	Addr() string
	Close() error
}

// roles returns every server of the cluster: origins, build-index, proxy, tracker, agents.
func (c *Cluster) roles() []role {
	var out []role
	for _, o := range c.origins {
		out = append(out, o)
	}
	if c.bindex != nil {
		out = append(out, c.bindex)
	}
	if c.proxy != nil {
		out = append(out, c.proxy)
	}
	if c.tracker != nil {
		out = append(out, c.tracker)
	}
	for _, a := range c.agents {
		out = append(out, a)
	}
	return out
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
	if cfg.Port < 0 || cfg.Port > 65535 {
		bad("port must be between 0 and 65535, got %d", cfg.Port)
	} else if cfg.Port > 0 && cfg.Origins >= 1 && cfg.Port+cfg.Origins-1 > 65535 {
		bad("port %d leaves no room for %d origins (the last port would be %d)", cfg.Port, cfg.Origins, cfg.Port+cfg.Origins-1)
	}
	if cfg.Agents < 0 || cfg.Agents > MaxAgents {
		bad("agents must be between 0 and %d, got %d", MaxAgents, cfg.Agents)
	}
	if cfg.Port > 0 && cfg.Port+PortSpan > 65535 {
		bad("port %d leaves no room for the ports up to %d", cfg.Port, cfg.Port+PortSpan)
	}
	if cfg.AgentPort < 0 || cfg.AgentPort+agentStride*cfg.Agents > 65535 {
		bad("agent port %d leaves no room for %d agents up to 65535", cfg.AgentPort, cfg.Agents)
	}
	if cfg.Proxy && !cfg.BuildIndex {
		bad("the proxy needs the build-index (set BuildIndex)")
	}
	if cfg.HealthInterval < 0 {
		bad("health interval must not be negative, got %s", cfg.HealthInterval)
	}
	return errors.Join(errs...)
}

// listen binds one loopback listener per origin, closing all of them if any bind fails.
func listen(cfg Config) ([]net.Listener, error) {
	lns := make([]net.Listener, 0, cfg.Origins)
	for i := range cfg.Origins {
		port := 0
		if cfg.Port > 0 {
			port = cfg.Port + i
		}
		addr := net.JoinHostPort(Host, strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen on %s for origin %d: %w", addr, i, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// originConfig is origin i's configuration: every origin is a ring member, blobs live on
// min(3, N) of them, and every namespace writes back to the shared filesystem backend.
func (c *Cluster) originConfig(i int) origin.Config {
	addr := c.addrs[i]
	return origin.Config{
		Listen:    addr,
		Advertise: addr,
		Store:     origin.StoreConfig{Dir: filepath.Join(c.cfg.Dir, fmt.Sprintf("origin-%d", i))},
		Ring: ring.Config{
			Members:        c.addrs,
			Replicas:       c.Replicas(),
			HealthInterval: c.cfg.HealthInterval,
			HealthTimeout:  min(ring.DefaultHealthTimeout, c.cfg.HealthInterval),
		},
		Backends: c.backends(),
	}
}

// backends routes every namespace to the shared filesystem backend in Dir/backend.
func (c *Cluster) backends() []backends.Config {
	return []backends.Config{{
		Namespace: ".*",
		Name:      "dev-fs",
		FS:        &fs.Config{Root: filepath.Join(c.cfg.Dir, "backend")},
	}}
}

// Endpoints returns the origins' addresses ("127.0.0.1:port"), in origin order. They are known
// as soon as New returns.
func (c *Cluster) Endpoints() []string { return append([]string(nil), c.addrs...) }

// Replicas returns how many origins hold each blob.
func (c *Cluster) Replicas() int { return min(ring.DefaultReplicas, len(c.addrs)) }

// Dir returns the cluster's directory.
func (c *Cluster) Dir() string { return c.cfg.Dir }

// Ready is closed once every origin answers /readyz and the endpoints file is written.
func (c *Cluster) Ready() <-chan struct{} { return c.ready }

// Run serves every origin until ctx ends or one of them fails, then shuts all of them down,
// removes the endpoints file and releases the directory. It returns nil after a clean shutdown
// on cancellation, and the first error otherwise (an origin's, or writing the endpoints file).
// Run may be called once.
func (c *Cluster) Run(ctx context.Context) error {
	if !c.claim() {
		return ErrAlreadyRun
	}
	defer c.unlock()

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var roles []server.Role
	for _, r := range c.roles() {
		roles = append(roles, r)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- server.Run(runCtx, roles...) }()

	// Readiness is polled beside the origins, so an origin that fails at start ends the wait.
	readyCtx, stopReady := context.WithCancel(runCtx)
	defer stopReady()
	readyErr := make(chan error, 1)
	go func() { readyErr <- c.waitReady(readyCtx) }()

	select {
	case err := <-runErr:
		stopReady()
		<-readyErr
		return err
	case err := <-readyErr:
		if err != nil { // ctx ended before every origin was ready
			stop()
			return <-runErr
		}
	}
	if c.cfg.EndpointsFile != "" {
		if err := api.WriteEndpoints(c.cfg.EndpointsFile, c.Addrs()); err != nil {
			stop()
			return errors.Join(err, <-runErr)
		}
		defer func() {
			if err := removeEndpoints(c.cfg.EndpointsFile, c.addrs); err != nil {
				c.log.Warn("remove endpoints file", "path", c.cfg.EndpointsFile, "err", err)
			}
		}()
	}
	c.log.Info("dev cluster ready", "origins", c.addrs, "build_index", c.BuildIndexAddr(), "proxy", c.ProxyAddr(), "tracker", c.TrackerAddr(), "agents", c.Agents(), "dir", c.cfg.Dir)
	close(c.ready)
	return <-runErr
}

// waitReady polls every origin's /readyz until all answer 200 or ctx ends.
func (c *Cluster) waitReady(ctx context.Context) error {
	const poll = 50 * time.Millisecond
	for _, r := range c.roles() {
		// Every role serves /readyz the way an origin does.
		o := client.NewOrigin(r.Addr(), c.hc)
		for {
			err := o.Ready(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(poll):
			}
		}
	}
	return nil
}

// Close releases a cluster that was never Run: it closes every origin (their listeners, stores
// and queues) and the directory lock. After Run it does nothing and returns nil.
func (c *Cluster) Close() error {
	if !c.claim() {
		return nil
	}
	c.release()
	return nil
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

// release closes the servers that were built but never served, then unlocks the directory.
func (c *Cluster) release() {
	for _, r := range c.roles() {
		if err := r.Close(); err != nil {
			c.log.Warn("close server", "addr", r.Addr(), "err", err)
		}
	}
	closeAll(c.others) // closing a listener twice is harmless
	c.unlock()
}

// Interface guards
var _ server.Role = (*Cluster)(nil)
