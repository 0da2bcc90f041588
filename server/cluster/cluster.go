// Package cluster builds a krakenctl cluster inside one process: origins, build-index nodes,
// trackers, proxies and agents, each a real role (New, then Run) on its own 127.0.0.1
// listeners, wired to the others as a Spec says. `krakenctl dev up` (server/dev), `krakenctl
// bench swarm` and `bench tags` (server/bench) and the tests of the roles build their clusters
// here, so a change to how roles are put together (TLS and authentication on every link, say)
// is made once. rqlite's system-test helpers are the model.
//
// New binds every listener and builds every role, in the order in which their configurations
// need each other's addresses (origins, build-index nodes, trackers, proxies, agents); nothing
// runs yet. Start runs each role in a goroutine of its own; WaitReady returns once every
// running role answers /readyz; Close stops them all. Run does all of that for a caller that
// runs a cluster until told to stop. An error while building closes everything built so far,
// listeners included; a role that stops on its own while running is a failure, reported by
// Failed and Err, which ends Run and WaitReady.
//
// One role can be stopped and started again on the same addresses and state (Stop, Restart),
// as a process is killed and restarted; agents and proxies can be added to a running cluster
// (AddAgent, AddProxy). Every role has an admin listener (/metrics, /debug/pprof, /health,
// /readyz) and a Prometheus registry of its own (Registry). Tests start clusters through
// server/cluster/clustertest, which ties them to the test's lifetime.
//
// # State
//
// Spec.Dir holds every role's state: origin-<i> (an origin's store), agent-<i> (an agent's
// store), build-index-<j> (a node's Raft state and write-back queue) and backend (the
// filesystem backend the origins and build-index nodes share, unless Spec.Backend or
// Spec.NoBackend says otherwise). Per-role config functions may move them. With Spec.TLS, the
// certificates and keys go to TLS.Dir (Dir/tls unless set).
//
// # TLS
//
// With Spec.TLS every role serves TLS on each of its listeners and calls the others with mutual
// TLS, each member presenting a certificate of its own that names it and its role's group, as
// separate hosts would (see TLS); the builder's own client presents an admin's (Client,
// AdminTLS).
//
// # Ports
//
// With a zero Spec.Ports every listener is 127.0.0.1:0. With Ports{Base: P, Agent: A} every
// port is fixed, as `krakenctl dev up` documents them; the plan has room for MaxPlannedOrigins
// origins and one build-index node, tracker and proxy:
//
//	origin i        P+i        swarm P+200+i   admin P+310+i
//	build-index     P+100      Raft  P+101     admin P+303
//	tracker         P+300                      admin P+301
//	proxy           P+400                      admin P+302
//	agent i         A+10i      swarm A+10i+1   admin A+10i+2
//
// The admin listeners of the roles on P take P+301 to P+373, ports the rest of the plan leaves
// free, so that the plan still ends at P+PortSpan.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/tracker"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
)

// Role names a kind of server in a cluster.
type Role string

// The roles, in the order New builds them.
const (
	Origin     Role = "origin"
	BuildIndex Role = "build-index"
	Tracker    Role = "tracker"
	Proxy      Role = "proxy"
	Agent      Role = "agent"
)

// Errors of the builder.
var (
	// ErrInvalidSpec is wrapped by every error about a Spec New cannot build.
	ErrInvalidSpec = errors.New("invalid cluster spec")
	// ErrStarted is returned by Start and Run after Start, Run or Close.
	ErrStarted = errors.New("cluster already started or closed")
	// ErrClosed is returned by Restart, AddAgent and AddProxy after Close.
	ErrClosed = errors.New("cluster closed")
	// ErrRunning is returned by Restart for a role that runs.
	ErrRunning = errors.New("still running")
	// ErrNoLeader is returned by Leader when the running build-index nodes do not name one
	// running leader.
	ErrNoLeader = errors.New("no build-index leader")
)

// Spec declares a cluster. The zero value of each field is what most callers want; Dir is
// required.
type Spec struct {
	// Dir holds every role's state (see the package doc). Required; created if missing.
	Dir string

	// Origins is how many origins run. They form one hash ring.
	Origins int
	// Replicas is how many origins hold each blob (the ring's and the trackers' replicas);
	// zero means min(3, Origins). The ring holds a blob on every origin when there are fewer.
	Replicas int
	// Backend is the storage backend every origin and build-index node writes back to. Nil
	// means a filesystem backend in Dir/backend shared by all of them; NoBackend means none.
	Backend   backend.Backend
	NoBackend bool

	// BuildIndexes is how many build-index nodes run: the first bootstraps the Raft group, the
	// others join it through its API. Without origins they check no content.
	BuildIndexes int
	// Trackers is how many trackers run. Zero means one when there are agents (one per agent
	// with NoP2P), and none when Deps.AgentTracker replaces them.
	Trackers int
	// Proxies is how many registry proxies run, over the origins and the build-index nodes.
	Proxies int
	// Agents is how many agents run, each announcing to every tracker and resolving tags on
	// every build-index node.
	Agents int
	// NoP2P gives agent i tracker i alone (so Trackers must be Agents), which knows only the
	// origins: agents then pull from the origins and never from each other, the no-swarm
	// baseline of a benchmark.
	NoP2P bool

	// Rate caps, in bytes per second, every origin's swarm egress and every agent's swarm
	// egress and ingress; zero means no cap.
	Rate config.ByteSize
	// HealthInterval is how often the origins' rings and the proxies check the origins; zero
	// leaves the roles' defaults.
	HealthInterval time.Duration
	// Ports is the port plan; the zero value binds every listener to 127.0.0.1:0.
	Ports Ports
	// TLS, when set, runs every role with TLS on its listeners and mutual TLS between roles,
	// each with a certificate of its own from TLS.CA (see TLS); nil runs them in plain text.
	TLS *TLS

	// Per-role config functions, called once per server with its index and the config the
	// builder filled in (addresses, directories, peers), before the role's New; a restarted
	// server reuses that config. The addresses of listeners are the builder's; changing them
	// breaks the wiring.
	OriginConfig     func(i int, c *origin.Config)
	BuildIndexConfig func(i int, c *buildindex.Config)
	TrackerConfig    func(i int, c *tracker.Config)
	ProxyConfig      func(i int, c *proxy.Config)
	AgentConfig      func(i int, c *agent.Config)
}

// Deps are a cluster's collaborators.
type Deps struct {
	// Logger receives every role's logs; nil discards them.
	Logger *slog.Logger
	// HTTPClient is every role's client for the others (the caller owns it and closes its idle
	// connections); nil gives each role its own. A client shared with proxies should set
	// Transport.ExpectContinueTimeout (see proxy.Deps.HTTPClient). It must be nil with
	// Spec.TLS: each role presents its own certificate, which a shared client cannot.
	HTTPClient *http.Client
	// AgentTracker replaces every agent's tracker client (agent.Deps.Tracker): tests inject an
	// in-process tracker, or one that goes down. No tracker then runs unless Spec.Trackers asks.
	AgentTracker scheduler.Tracker
}

// unusedTracker is the tracker address agents are configured with when Deps.AgentTracker
// replaces the client built from it: the config must name one, and nothing dials it.
const unusedTracker = "127.0.0.1:1"

// Cluster is a set of roles built from a Spec. Its methods are safe for concurrent use.
type Cluster struct {
	spec Spec
	deps Deps
	log  *slog.Logger
	hc   *http.Client // readiness probes and Client; an admin's certificate with TLS

	adminTLS pki.Config // the certificate hc presents; zero without TLS

	mu      sync.Mutex
	members map[Role][]*member
	order   []*member // build order
	started bool
	closed  bool

	failed   chan struct{} // closed at the first failure
	failOnce sync.Once
	err      error // the first failure; written before failed is closed
}

// New validates spec, binds every listener and builds every role; nothing runs yet. On error
// everything built or bound so far is closed. The caller must then Start (or Run) the cluster,
// or Close it.
func New(spec Spec, deps Deps) (_ *Cluster, err error) {
	spec.defaults(deps)
	if err := spec.validate(deps); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{spec: spec, deps: deps, log: log, members: map[Role][]*member{}, failed: make(chan struct{})}
	hco := httpserve.ClientOptions{MaxIdleConnsPerHost: 2}
	if spec.TLS != nil {
		cfg, p, err := spec.adminTLS(c.tlsDir())
		if err != nil {
			return nil, err
		}
		c.adminTLS, hco.DialTLS = cfg, p.DialTLS
	}
	c.hc = httpserve.NewClient(hco)
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	// Every origin's address first: each origin's ring names all of them.
	for i := range spec.Origins {
		if _, err := c.bindNew(Origin, i); err != nil {
			return nil, err
		}
	}
	for _, m := range c.members[Origin] {
		if err := c.build(m, c.originOpener(m)); err != nil {
			return nil, err
		}
	}
	steps := []struct {
		role Role
		n    int
		open func(*member) opener
	}{
		{BuildIndex, spec.BuildIndexes, c.buildIndexOpener},
		{Tracker, spec.Trackers, c.trackerOpener},
		{Proxy, spec.Proxies, func(m *member) opener { return c.proxyOpener(m, nil) }},
		{Agent, spec.Agents, func(m *member) opener { return c.agentOpener(m, nil) }},
	}
	for _, s := range steps {
		for i := range s.n {
			m, err := c.bindNew(s.role, i)
			if err != nil {
				return nil, err
			}
			if err := c.build(m, s.open(m)); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// Start runs every role built so far, each in its own goroutine; roles added or restarted
// later run at once. It returns ErrStarted after Start, Run or Close.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.closed {
		return ErrStarted
	}
	c.started = true
	for _, m := range c.order {
		if m.state == built {
			c.runLocked(m)
		}
	}
	return nil
}

// Run starts the cluster and runs it until ctx ends or a role fails, then closes it. It
// returns nil after a clean stop on cancellation, else the failure and any error of stopping.
func (c *Cluster) Run(ctx context.Context) error {
	if err := c.Start(); err != nil {
		return err
	}
	var err error
	select {
	case <-ctx.Done():
	case <-c.failed:
		err = c.Err()
	}
	return errors.Join(err, c.Close())
}

// Failed is closed when a running role stops on its own (Run returned without Stop or Close
// asking it to); Err then says which and why.
func (c *Cluster) Failed() <-chan struct{} { return c.failed }

// Err returns the first failure of a running role, nil while there is none.
func (c *Cluster) Err() error {
	select {
	case <-c.failed:
		return c.err
	default:
		return nil
	}
}

func (c *Cluster) fail(err error) {
	c.failOnce.Do(func() {
		c.err = err
		close(c.failed)
	})
	c.log.Error("cluster role failed", "err", err)
}

// closeTiers is the order in which Close stops the roles: each tier is stopped, and waited
// for, before the next, so that clients go before the servers they call (an agent before its
// tracker, a proxy before the build-index and the origins) and log no errors about servers
// that went away under them. The roles of one tier stop together.
var closeTiers = [][]Role{{Agent, Proxy}, {Tracker}, {BuildIndex}, {Origin}}

// Close stops every running role, tier by tier (agents and proxies, then trackers, then
// build-index nodes, then origins), waiting for each tier before stopping the next; closes
// every role that never ran; and returns what went wrong on the way. Later calls do nothing.
func (c *Cluster) Close() error {
	type runner struct {
		m      *member
		cancel func()
		done   chan struct{}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true // from now on no role is run, restarted or added
	var errs []error
	tiers := make([][]runner, len(closeTiers))
	for _, m := range slices.Backward(c.order) {
		switch m.state {
		case running:
			m.stopping = true // its end, whenever it comes, is no failure
			t := slices.IndexFunc(closeTiers, func(rs []Role) bool { return slices.Contains(rs, m.role) })
			tiers[t] = append(tiers[t], runner{m, m.cancel, m.done})
		case built:
			m.state = stopped
			if err := m.srv.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", m, err))
			}
		}
	}
	for _, m := range c.order {
		if err := m.closeListeners(); err != nil { // bound for a role that was never built
			errs = append(errs, fmt.Errorf("close %s: %w", m, err))
		}
	}
	c.mu.Unlock()
	for _, tier := range tiers {
		for _, r := range tier {
			r.cancel()
		}
		for _, r := range tier {
			<-r.done
			if r.m.runErr != nil { // written before done was closed
				errs = append(errs, fmt.Errorf("stop %s: %w", r.m, r.m.runErr))
			}
		}
	}
	c.hc.CloseIdleConnections()
	return errors.Join(errs...)
}

// Stop stops role r's i-th server gracefully and waits for it; its addresses and state stay
// for Restart. It returns what the server's Run returned; nothing when it was not running.
func (c *Cluster) Stop(r Role, i int) error {
	c.mu.Lock()
	m := c.member(r, i)
	switch m.state {
	case built:
		m.state = stopped
		c.mu.Unlock()
		if err := m.srv.Close(); err != nil {
			return fmt.Errorf("close %s: %w", m, err)
		}
		return nil
	case running:
	default:
		c.mu.Unlock()
		return nil
	}
	m.stopping = true
	m.cancel()
	done := m.done
	c.mu.Unlock()
	<-done
	c.mu.Lock()
	err := m.runErr
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("stop %s: %w", m, err)
	}
	return nil
}

// Restart builds role r's i-th server again, stopped before, on the same addresses, config
// and state, and runs it if the cluster was started. A port the stopped server held may still
// be in use for a moment; Restart retries binding it until ctx ends.
func (c *Cluster) Restart(ctx context.Context, r Role, i int) error {
	c.mu.Lock()
	m := c.member(r, i)
	switch {
	case c.closed:
		c.mu.Unlock()
		return fmt.Errorf("restart %s: %w", m, ErrClosed)
	case m.state != stopped:
		c.mu.Unlock()
		return fmt.Errorf("restart %s: %w", m, ErrRunning)
	}
	m.state = restarting
	c.mu.Unlock()

	lns, err := m.rebind(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && c.closed {
		err = errors.Join(ErrClosed, lns.close())
	}
	if err != nil {
		m.state = stopped
		return fmt.Errorf("restart %s: %w", m, err)
	}
	m.lns = &lns
	if err := c.build(m, m.open); err != nil {
		m.state = stopped
		return fmt.Errorf("restart %s: %w", m, err)
	}
	if c.started {
		c.runLocked(m)
	}
	return nil
}

// AddAgent builds one more agent, configured as Spec.AgentConfig says and then as tweak says
// (nil for nothing more), runs it if the cluster was started, and returns its index. It does
// not wait for the agent to be ready.
func (c *Cluster) AddAgent(tweak func(*agent.Config)) (int, error) {
	if c.spec.NoP2P {
		return 0, fmt.Errorf("add agent: %w: without P2P every agent needs a tracker of its own", ErrInvalidSpec)
	}
	return c.add(Agent, func(m *member) opener { return c.agentOpener(m, tweak) })
}

// AddProxy builds one more proxy, as AddAgent does an agent.
func (c *Cluster) AddProxy(tweak func(*proxy.Config)) (int, error) {
	return c.add(Proxy, func(m *member) opener { return c.proxyOpener(m, tweak) })
}

func (c *Cluster) add(r Role, open func(*member) opener) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := len(c.members[r])
	if c.closed {
		return 0, fmt.Errorf("add %s %d: %w", r, i, ErrClosed)
	}
	m, err := c.bindNew(r, i)
	if err != nil {
		return 0, err
	}
	if err := c.build(m, open(m)); err != nil {
		// Forget it: it holds nothing any more (its role closed its listeners).
		c.members[r] = c.members[r][:i]
		c.order = c.order[:len(c.order)-1]
		return 0, err
	}
	if c.started {
		c.runLocked(m)
	}
	return i, nil
}

// Len returns how many servers of role r the cluster has, running or not.
func (c *Cluster) Len(r Role) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.members[r])
}

// Addr returns the data API address (host:port) of role r's i-th server. Like every accessor
// taking an index, it panics when i is out of range, as indexing a slice does.
func (c *Cluster) Addr(r Role, i int) string { return c.get(r, i).addr }

// AdminAddr returns the admin listener's address of role r's i-th server.
func (c *Cluster) AdminAddr(r Role, i int) string { return c.get(r, i).admin }

// PeerAddr returns the second listener's address of role r's i-th server: the swarm port of an
// origin or agent, the Raft port of a build-index node, "" for trackers and proxies.
func (c *Cluster) PeerAddr(r Role, i int) string { return c.get(r, i).peer }

// Addrs returns the data API addresses of every server of role r, in index order.
func (c *Cluster) Addrs(r Role) []string {
	return c.collect(r, func(m *member) string { return m.addr })
}

// AdminAddrs returns the admin addresses of every server of role r, in index order.
func (c *Cluster) AdminAddrs(r Role) []string {
	return c.collect(r, func(m *member) string { return m.admin })
}

// Registry returns the Prometheus registry of role r's i-th server: its metrics, and what its
// admin listener's /metrics serves. A restarted server has a new one.
func (c *Cluster) Registry(r Role, i int) *prometheus.Registry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.member(r, i).reg
}

// Running reports whether role r's i-th server runs.
func (c *Cluster) Running(r Role, i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.member(r, i).state == running
}

// Origin returns the i-th origin's server (a new one after Restart).
func (c *Cluster) Origin(i int) *origin.Server { return serverOf[*origin.Server](c, Origin, i) }

// BuildIndex returns the i-th build-index node's server.
func (c *Cluster) BuildIndex(i int) *buildindex.Server {
	return serverOf[*buildindex.Server](c, BuildIndex, i)
}

// Tracker returns the i-th tracker's server.
func (c *Cluster) Tracker(i int) *tracker.Server { return serverOf[*tracker.Server](c, Tracker, i) }

// Proxy returns the i-th proxy's server.
func (c *Cluster) Proxy(i int) *proxy.Server { return serverOf[*proxy.Server](c, Proxy, i) }

// Agent returns the i-th agent's server.
func (c *Cluster) Agent(i int) *agent.Server { return serverOf[*agent.Server](c, Agent, i) }

// Client returns the builder's HTTP client, which presents an admin's certificate when the
// cluster runs with TLS (and sends http:// URLs as https://); the cluster owns it and closes its
// idle connections on Close.
func (c *Cluster) Client() *http.Client { return c.hc }

// Replicas returns how many origins hold each blob.
func (c *Cluster) Replicas() int { return c.spec.Replicas }

// Dir returns the directory that holds the cluster's state.
func (c *Cluster) Dir() string { return c.spec.Dir }

func serverOf[T server](c *Cluster, r Role, i int) T {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.member(r, i).srv.(T)
}

func (c *Cluster) get(r Role, i int) *member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.member(r, i)
}

// member returns role r's i-th member; c.mu is held.
func (c *Cluster) member(r Role, i int) *member {
	ms := c.members[r]
	if i < 0 || i >= len(ms) {
		panic(fmt.Sprintf("cluster: %s %d out of range: the cluster has %d", r, i, len(ms)))
	}
	return ms[i]
}

func (c *Cluster) collect(r Role, f func(*member) string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.members[r]))
	for _, m := range c.members[r] {
		out = append(out, f(m))
	}
	return out
}

func (s *Spec) defaults(deps Deps) {
	if s.Replicas == 0 {
		s.Replicas = min(ring.DefaultReplicas, s.Origins)
	}
	if s.Trackers == 0 && s.Agents > 0 && deps.AgentTracker == nil {
		s.Trackers = 1
		if s.NoP2P {
			s.Trackers = s.Agents
		}
	}
}

func (s *Spec) validate(deps Deps) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if s.Dir == "" {
		bad("dir is required")
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"origins", s.Origins}, {"build-index nodes", s.BuildIndexes}, {"trackers", s.Trackers}, {"proxies", s.Proxies}, {"agents", s.Agents}} {
		if n.v < 0 {
			bad("%s must not be negative, got %d", n.name, n.v)
		}
	}
	if s.Replicas < 0 {
		bad("replicas must not be negative, got %d", s.Replicas)
	}
	if s.Backend != nil && s.NoBackend {
		bad("a backend and no backend at once")
	}
	if s.Origins == 0 && (s.Trackers > 0 || s.Proxies > 0) {
		bad("trackers and proxies need origins")
	}
	if s.Proxies > 0 && s.BuildIndexes == 0 {
		bad("proxies need a build-index node")
	}
	if s.Agents > 0 && s.Trackers == 0 && deps.AgentTracker == nil {
		bad("agents need a tracker")
	}
	if s.NoP2P && s.Trackers != s.Agents {
		bad("without P2P every agent has a tracker of its own: want %d trackers, got %d", s.Agents, s.Trackers)
	}
	if s.Rate < 0 {
		bad("rate must not be negative, got %d", s.Rate)
	}
	if s.HealthInterval < 0 {
		bad("health interval must not be negative, got %s", s.HealthInterval)
	}
	if s.TLS != nil && s.TLS.CA == nil {
		bad("tls needs a CA")
	}
	if s.TLS != nil && deps.HTTPClient != nil {
		bad("tls with a shared HTTP client: each role presents its own certificate, so each builds its own client")
	}
	errs = append(errs, s.Ports.check(s)...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	return nil
}
