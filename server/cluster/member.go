package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/server/tracker"
)

// server is what the cluster does with a role's Server.
type server interface {
	Run(ctx context.Context) error
	Close() error
}

// listeners are one server's: the data API, the swarm or Raft port (nil for trackers and
// proxies) and the admin listener.
type listeners struct {
	data, peer, admin net.Listener
}

// close closes the listeners that are set and returns their errors, joined.
func (l listeners) close() error {
	var errs []error
	for _, ln := range []net.Listener{l.data, l.peer, l.admin} {
		if ln != nil {
			errs = append(errs, ln.Close())
		}
	}
	return errors.Join(errs...)
}

// opener builds a role's server on its listeners, with its own registry. The role owns the
// listeners from then on, even when it fails.
type opener func(l listeners, reg *prometheus.Registry) (server, error)

type state int

const (
	bound      state = iota // listeners bound, no server yet
	built                   // built, never run
	running                 // Run was called and has not returned
	stopped                 // ran and returned, or was closed; Restart may build it again
	restarting              // Restart is binding its listeners
)

// member is one server of the cluster. Its addresses are fixed once bound, so that a restart
// comes back on them; the rest is guarded by Cluster.mu.
type member struct {
	role              Role
	index             int
	addr, peer, admin string
	open              opener // kept for Restart: the same config, new listeners
	nodeID            string // build-index nodes: the Raft server id
	srv               server
	reg               *prometheus.Registry
	lns               *listeners // bound but not yet handed to a role
	state             state
	stopping          bool // Stop or Close asked it to stop: its end is no failure
	cancel            func()
	done              chan struct{} // closed when Run returned; runErr is set before
	runErr            error
}

func (m *member) String() string { return string(m.role) + " " + strconv.Itoa(m.index) }

func (m *member) hasPeer() bool { return m.role == Origin || m.role == Agent || m.role == BuildIndex }

// closeListeners closes the listeners m holds, if any, and returns their errors.
func (m *member) closeListeners() error {
	if m.lns == nil {
		return nil
	}
	err := m.lns.close()
	m.lns = nil
	return err
}

// bindNew binds the listeners of role r's i-th server where the port plan says, and adds the
// server to the cluster as bound. c.mu is held, or the cluster is not shared yet.
func (c *Cluster) bindNew(r Role, i int) (*member, error) {
	m := &member{role: r, index: i}
	var lns listeners
	bind := func(k kind) (net.Listener, error) {
		port, err := c.spec.Ports.port(r, i, k)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidSpec, m, err)
		}
		addr := net.JoinHostPort(Host, strconv.Itoa(port))
		// New, AddAgent and AddProxy take no context to pass on: a bind on loopback does not
		// block, so there is nothing to cancel.
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s for the %s of %s: %w", addr, k, m, err)
		}
		return ln, nil
	}
	var err error
	if lns.data, err = bind(dataPort); err == nil && m.hasPeer() {
		lns.peer, err = bind(peerPort)
	}
	if err == nil {
		lns.admin, err = bind(adminPort)
	}
	if err != nil {
		return nil, errors.Join(err, lns.close())
	}
	m.addr, m.admin = lns.data.Addr().String(), lns.admin.Addr().String()
	if lns.peer != nil {
		m.peer = lns.peer.Addr().String()
	}
	m.lns = &lns
	c.members[r] = append(c.members[r], m)
	c.order = append(c.order, m)
	return m, nil
}

// rebind binds m's addresses again for a restart, retrying while a port is still held (by the
// stopped server's lingering sockets, or briefly by someone else) until ctx ends.
func (m *member) rebind(ctx context.Context) (listeners, error) {
	var lns listeners
	for _, b := range []struct {
		ln   *net.Listener
		addr string
	}{{&lns.data, m.addr}, {&lns.peer, m.peer}, {&lns.admin, m.admin}} {
		if b.addr == "" {
			continue
		}
		for {
			ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", b.addr)
			if err == nil {
				*b.ln = ln
				break
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				return listeners{}, errors.Join(fmt.Errorf("listen on %s: %w", b.addr, err), lns.close())
			}
			select {
			case <-ctx.Done():
				return listeners{}, errors.Join(fmt.Errorf("listen on %s: %w (%w)", b.addr, err, ctx.Err()), lns.close())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return lns, nil
}

// build builds m's server with open on the listeners m holds; c.mu is held, or the cluster is
// not shared yet.
func (c *Cluster) build(m *member, open opener) error {
	lns := *m.lns
	m.lns = nil // the role owns them now, even if it fails
	reg := admin.NewRegistry()
	srv, err := open(lns, reg)
	if err != nil {
		return fmt.Errorf("start %s: %w", m, err)
	}
	m.open, m.srv, m.reg, m.state = open, srv, reg, built
	m.stopping, m.runErr = false, nil
	return nil
}

// runLocked runs m's server in a goroutine of its own; c.mu is held.
func (c *Cluster) runLocked(m *member) {
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done, m.state = cancel, make(chan struct{}), running
	srv, done := m.srv, m.done
	go func() {
		err := srv.Run(ctx)
		cancel()
		c.mu.Lock()
		m.runErr, m.state = err, stopped
		failed := !m.stopping
		close(done)
		c.mu.Unlock()
		if failed {
			if err == nil {
				err = errors.New("stopped on its own")
			}
			c.fail(fmt.Errorf("%s: %w", m, err))
		}
	}()
}

// backends routes every namespace to the shared filesystem backend in Dir/backend, unless a
// backend is injected or there is none.
func (c *Cluster) backends() []backends.Config {
	if c.spec.Backend != nil || c.spec.NoBackend {
		return nil
	}
	return []backends.Config{{Namespace: ".*", Name: "shared-fs", FS: &fs.Config{Root: filepath.Join(c.spec.Dir, "backend")}}}
}

func (c *Cluster) stateDir(m *member) string {
	return filepath.Join(c.spec.Dir, fmt.Sprintf("%s-%d", m.role, m.index))
}

// addrs returns the data addresses of role r; c.mu is held, or the cluster is not shared yet.
func (c *Cluster) addrs(r Role) []string {
	var out []string
	for _, m := range c.members[r] {
		out = append(out, m.addr)
	}
	return out
}

// roleDeps is what every member takes, whatever its role: its data and admin listeners, the
// cluster's logger and HTTP client, the member's own registry and, with TLS, its certificate,
// issued now under name and loaded from tc (the tls section of its config). On error it has
// closed the listeners, which are the role's to close from the opener on.
func (c *Cluster) roleDeps(m *member, name string, tc pki.Config, l listeners, reg *prometheus.Registry) (role.Deps, error) {
	p, err := c.provider(m, name, tc)
	if err != nil {
		return role.Deps{}, errors.Join(err, l.close())
	}
	return role.Deps{
		Listener: l.data, AdminListener: l.admin,
		Logger: c.log, Registerer: reg, Gatherer: reg, HTTPClient: c.deps.HTTPClient, TLS: p,
	}, nil
}

func (c *Cluster) originOpener(m *member) opener {
	cfg := origin.Config{
		Listen:      m.addr,
		AdminListen: m.admin,
		Advertise:   m.addr,
		Store:       origin.StoreConfig{Dir: c.stateDir(m)},
		Ring:        ring.Config{Members: c.addrs(Origin), Replicas: c.spec.Replicas},
		Backends:    c.backends(),
		Peer:        origin.PeerConfig{Listen: m.peer, EgressRate: c.spec.Rate},
		TLS:         c.tlsConfig(m),
	}
	if hi := c.spec.HealthInterval; hi > 0 {
		cfg.Ring.HealthInterval, cfg.Ring.HealthTimeout = hi, min(ring.DefaultHealthTimeout, hi)
	}
	if c.spec.OriginConfig != nil {
		c.spec.OriginConfig(m.index, &cfg)
	}
	return func(l listeners, reg *prometheus.Registry) (server, error) {
		d, err := c.roleDeps(m, m.fileBase(), cfg.TLS, l, reg)
		if err != nil {
			return nil, err
		}
		return origin.New(cfg, origin.Deps{Deps: d, PeerListener: l.peer, Backend: c.spec.Backend})
	}
}

func (c *Cluster) buildIndexOpener(m *member) opener {
	cfg := buildindex.Config{
		Listen:      m.addr,
		AdminListen: m.admin,
		RaftListen:  m.peer,
		Dir:         c.stateDir(m),
		Origins:     c.addrs(Origin),
		Backends:    c.backends(),
		TLS:         c.tlsConfig(m),
	}
	if len(cfg.Origins) == 0 {
		off := false // no origins to check content on
		cfg.VerifyContent = &off
	}
	cfg.Raft.NodeID = fmt.Sprintf("bi-%d", m.index)
	cfg.Raft.Bootstrap = m.index == 0
	if m.index > 0 {
		cfg.Join = []string{c.members[BuildIndex][0].addr}
	}
	if c.spec.BuildIndexConfig != nil {
		c.spec.BuildIndexConfig(m.index, &cfg)
	}
	m.nodeID = cfg.Raft.NodeID
	return func(l listeners, reg *prometheus.Registry) (server, error) {
		// A node's certificate names its Raft server id: that is who it is to its peers.
		d, err := c.roleDeps(m, cfg.Raft.NodeID, cfg.TLS, l, reg)
		if err != nil {
			return nil, err
		}
		return buildindex.New(cfg, buildindex.Deps{Deps: d, RaftListener: l.peer, Backend: c.spec.Backend})
	}
}

func (c *Cluster) trackerOpener(m *member) opener {
	cfg := tracker.Config{Listen: m.addr, AdminListen: m.admin, Origins: c.addrs(Origin), Replicas: c.spec.Replicas, TLS: c.tlsConfig(m),
		// Every member runs on this host: its peers announce loopback addresses.
		Announce: tracker.AnnounceConfig{AllowLoopback: true}}
	if c.spec.TrackerConfig != nil {
		c.spec.TrackerConfig(m.index, &cfg)
	}
	return func(l listeners, reg *prometheus.Registry) (server, error) {
		d, err := c.roleDeps(m, m.fileBase(), cfg.TLS, l, reg)
		if err != nil {
			return nil, err
		}
		return tracker.New(cfg, tracker.Deps{Deps: d})
	}
}

func (c *Cluster) proxyOpener(m *member, tweak func(*proxy.Config)) opener {
	cfg := proxy.Config{Listen: m.addr, AdminListen: m.admin, Origins: c.addrs(Origin), BuildIndex: c.addrs(BuildIndex), TLS: c.tlsConfig(m)}
	if hi := c.spec.HealthInterval; hi > 0 {
		cfg.OriginHealth.Interval, cfg.OriginHealth.Timeout = hi, min(ring.DefaultHealthTimeout, hi)
	}
	if c.spec.ProxyConfig != nil {
		c.spec.ProxyConfig(m.index, &cfg)
	}
	if tweak != nil {
		tweak(&cfg)
	}
	return func(l listeners, reg *prometheus.Registry) (server, error) {
		d, err := c.roleDeps(m, m.fileBase(), cfg.TLS, l, reg)
		if err != nil {
			return nil, err
		}
		return proxy.New(cfg, proxy.Deps{Deps: d})
	}
}

func (c *Cluster) agentOpener(m *member, tweak func(*agent.Config)) opener {
	cfg := agent.Config{
		Listen:      m.addr,
		AdminListen: m.admin,
		PeerListen:  m.peer,
		Trackers:    c.addrs(Tracker),
		StoreDir:    c.stateDir(m),
		BuildIndex:  c.addrs(BuildIndex),
		EgressRate:  c.spec.Rate,
		IngressRate: c.spec.Rate,
		TLS:         c.tlsConfig(m),
	}
	switch {
	case c.spec.NoP2P && m.index < len(cfg.Trackers):
		cfg.Trackers = cfg.Trackers[m.index : m.index+1]
	case len(cfg.Trackers) == 0 && c.deps.AgentTracker != nil:
		cfg.Trackers = []string{unusedTracker}
	}
	if c.spec.AgentConfig != nil {
		c.spec.AgentConfig(m.index, &cfg)
	}
	if tweak != nil {
		tweak(&cfg)
	}
	return func(l listeners, reg *prometheus.Registry) (server, error) {
		d, err := c.roleDeps(m, m.fileBase(), cfg.TLS, l, reg)
		if err != nil {
			return nil, err
		}
		return agent.New(cfg, agent.Deps{Deps: d, PeerListener: l.peer, Tracker: c.deps.AgentTracker})
	}
}
