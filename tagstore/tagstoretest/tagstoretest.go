// Package tagstoretest runs in-process tagstore clusters for tests: N nodes, each a real
// tagstore.Store with its own directory, talking over real TCP on 127.0.0.1 (Network TCP),
// over mutual TLS on 127.0.0.1 with certificates from a throwaway CA (Network MutualTLS), or
// over raft.InmemTransport (Network Inmem), which can also cut a node off from the others.
// Nodes can be killed and restarted on the same directory and address.
//
// Every method that waits is bounded by Options.Timeout and fails the test (t.Fatalf) when
// the wait runs out, so call them from the test's goroutine.
package tagstoretest

import (
	"go.uber.org/goleak"

	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/krakenctl/krakenctl/tagstore"
)

// Network selects how the nodes of a Cluster talk to each other.
type Network int

const (
	// TCP gives every node a NetworkTransport on its own 127.0.0.1 listener.
	TCP Network = iota
	// Inmem connects nodes with raft.InmemTransport; Isolate and Heal need it.
	Inmem
	// MutualTLS is TCP with mutual TLS: each node has a certificate from Cluster.CA naming
	// its ID in group tagstore.GroupBuildIndex.
	MutualTLS
)

// Options configure a Cluster. The zero value is a three-node TCP cluster.
type Options struct {
	// Nodes is the number of nodes (default 3).
	Nodes int
	// Network is TCP (default) or Inmem.
	Network Network
	// Configure, when set, adjusts each node's configuration after the test defaults of
	// Config are applied (for example a low SnapshotThreshold).
	Configure func(cfg *tagstore.Config)
	// TLSConfigs, on the MutualTLS network, turns a node's certificate into the TLS
	// configurations its store gets (default: CA.ServerConfig and CA.ClientConfig).
	TLSConfigs func(ca *CA, cert tls.Certificate) (server, client *tls.Config)
	// Logger receives every node's logs (default: discarded).
	Logger *slog.Logger
	// Timeout bounds each wait (default 30s).
	Timeout time.Duration
}

// Config returns the configuration tests use for node id in dir: timeouts short enough that
// a new leader is elected in about a second even under the race detector on a busy machine.
func Config(id, dir string) tagstore.Config {
	cfg := tagstore.Config{
		NodeID:             id,
		Dir:                dir,
		APIAddr:            id + ".api.test:8080",
		HeartbeatTimeout:   400 * time.Millisecond,
		ElectionTimeout:    400 * time.Millisecond,
		LeaderLeaseTimeout: 400 * time.Millisecond,
		CommitTimeout:      10 * time.Millisecond,
		ApplyTimeout:       5 * time.Second,
	}
	cfg.Defaults()
	return cfg
}

// Node is one member of a Cluster.
type Node struct {
	ID       string
	Dir      string
	RaftAddr string
	APIAddr  string

	bootstrap bool
	mu        sync.Mutex
	store     *tagstore.Store
	trans     *raft.InmemTransport
	// joined is set once the node is in the configuration: before that it knows no leader.
	joined bool
}

// Store returns the node's Store, or nil while the node is down.
func (n *Node) Store() *tagstore.Store {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.store
}

// Member describes the node for tagstore.Store.Join.
func (n *Node) Member() tagstore.Member {
	return tagstore.Member{ID: n.ID, RaftAddr: n.RaftAddr, APIAddr: n.APIAddr}
}

func (n *Node) String() string { return n.ID }

// Cluster is a set of in-process tagstore nodes.
type Cluster struct {
	t    testing.TB
	opts Options

	ca *CA // MutualTLS only

	mu       sync.Mutex
	nodes    []*Node
	isolated map[*Node]bool
}

// CA is the CA of a MutualTLS cluster's certificates (nil on other networks).
func (c *Cluster) CA() *CA { return c.ca }

// Start builds a cluster: the first node bootstraps, the others join through it, and Start
// returns once every node has a leader, every member and the state so far. The cluster is
// closed when the test ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	c := &Cluster{t: t, opts: opts, isolated: map[*Node]bool{}}
	if opts.Network == MutualTLS {
		c.ca = NewCA(t, "tagstoretest cluster CA")
	}
	t.Cleanup(c.Close)
	first := c.newNode(true)
	c.start(first)
	c.Leader()
	for range opts.Nodes - 1 {
		c.AddNode()
	}
	c.WaitConverged()
	return c
}

// Nodes returns every node, up or down, in creation order.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

func (c *Cluster) newNode(bootstrap bool) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := fmt.Sprintf("node%d", len(c.nodes))
	n := &Node{ID: id, Dir: filepath.Join(c.t.TempDir(), id), bootstrap: bootstrap, joined: bootstrap}
	n.APIAddr = Config(id, n.Dir).APIAddr
	if c.opts.Network == Inmem {
		n.RaftAddr = id + ".inmem:7000"
	}
	c.nodes = append(c.nodes, n)
	return n
}

// AddNode starts a new, empty node and joins it through the leader.
func (c *Cluster) AddNode() *Node {
	c.t.Helper()
	c.Leader()
	n := c.newNode(false)
	c.start(n)
	c.OnLeader("join "+n.ID, func(s *tagstore.Store) error { return s.Join(context.Background(), n.Member()) })
	n.mu.Lock()
	n.joined = true
	n.mu.Unlock()
	return n
}

// OnLeader calls f with the current leader's Store until it returns nil, for at most
// Options.Timeout, and fails the test with the last error otherwise. An error wrapping
// tagstore.ErrInvalid or tagstore.ErrExists fails the test at once; any other (the leader
// changed, the outcome is unknown) is retried on whichever node leads next, so f must be safe
// to repeat (a put of the same value, a join with the same details).
func (c *Cluster) OnLeader(what string, f func(*tagstore.Store) error) {
	c.t.Helper()
	var last error
	deadline := time.Now().Add(c.opts.Timeout)
	for {
		last = f(c.Leader().Store())
		switch {
		case last == nil:
			return
		case errors.Is(last, tagstore.ErrInvalid), errors.Is(last, tagstore.ErrExists):
			c.t.Fatalf("%s: %v", what, last)
		case time.Now().After(deadline):
			c.t.Fatalf("%s: still failing after %s: %v", what, c.opts.Timeout, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// start opens n's Store on its directory and address.
func (c *Cluster) start(n *Node) {
	c.t.Helper()
	cfg := Config(n.ID, n.Dir)
	cfg.Bootstrap = n.bootstrap
	if c.opts.Configure != nil {
		c.opts.Configure(&cfg)
	}
	deps := tagstore.Deps{Logger: c.opts.Logger}
	if c.opts.Network == Inmem {
		_, trans := raft.NewInmemTransport(raft.ServerAddress(n.RaftAddr))
		deps.Transport = trans
		c.mu.Lock()
		for _, o := range c.nodes {
			if o != n && o.trans != nil && !c.isolated[o] && !c.isolated[n] {
				o.trans.Connect(raft.ServerAddress(n.RaftAddr), trans)
				trans.Connect(raft.ServerAddress(o.RaftAddr), o.trans)
			}
		}
		n.mu.Lock()
		n.trans = trans
		n.mu.Unlock()
		c.mu.Unlock()
	} else {
		addr := n.RaftAddr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		ln := c.listen(addr)
		n.RaftAddr = ln.Addr().String()
		deps.Listener = ln
		if c.ca != nil {
			cert := c.ca.Issue(n.ID, tagstore.GroupBuildIndex)
			deps.ServerTLS, deps.ClientTLS = c.ca.ServerConfig(cert), c.ca.ClientConfig(cert)
			if c.opts.TLSConfigs != nil {
				deps.ServerTLS, deps.ClientTLS = c.opts.TLSConfigs(c.ca, cert)
			}
		}
	}
	s, err := tagstore.Open(cfg, deps)
	if err != nil {
		c.t.Fatalf("open %s: %v", n, err)
	}
	n.mu.Lock()
	n.store = s
	n.mu.Unlock()
}

// listen binds addr, retrying briefly while a just-closed listener's port is still held.
func (c *Cluster) listen(addr string) net.Listener {
	c.t.Helper()
	deadline := time.Now().Add(c.opts.Timeout)
	for {
		ln, err := new(net.ListenConfig).Listen(c.t.Context(), "tcp", addr)
		if err == nil {
			return ln
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			c.t.Fatalf("listen on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops n abruptly (its Store is closed without handing over leadership) and cuts its
// transport. Its directory stays for Restart.
func (c *Cluster) Kill(n *Node) {
	c.t.Helper()
	c.mu.Lock()
	n.mu.Lock()
	s, trans := n.store, n.trans
	n.store, n.trans = nil, nil
	n.mu.Unlock()
	if trans != nil {
		for _, o := range c.nodes {
			if o.trans != nil {
				o.trans.Disconnect(raft.ServerAddress(n.RaftAddr))
			}
		}
	}
	c.mu.Unlock()
	if s == nil {
		c.t.Fatalf("kill %s: already down", n)
	}
	if err := s.Close(); err != nil {
		c.t.Errorf("close %s: %v", n, err)
	}
	if trans != nil {
		if err := trans.Close(); err != nil {
			c.t.Errorf("close transport of %s: %v", n, err)
		}
	}
}

// Restart opens a killed node again on the same directory and Raft address.
func (c *Cluster) Restart(n *Node) {
	c.t.Helper()
	if n.Store() != nil {
		c.t.Fatalf("restart %s: still up", n)
	}
	c.start(n)
}

// Isolate cuts n off from every other node in both directions (Inmem only). A leader cut off
// keeps believing it leads until its lease runs out, then steps down; the others elect a new
// leader if they are a majority.
func (c *Cluster) Isolate(n *Node) {
	c.t.Helper()
	if c.opts.Network != Inmem {
		c.t.Fatalf("isolate %s: needs the Inmem network", n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.isolated[n] = true
	for _, o := range c.nodes {
		if o == n || o.trans == nil || n.trans == nil {
			continue
		}
		o.trans.Disconnect(raft.ServerAddress(n.RaftAddr))
		n.trans.Disconnect(raft.ServerAddress(o.RaftAddr))
	}
}

// Heal reconnects every running node with every other.
func (c *Cluster) Heal() {
	c.t.Helper()
	if c.opts.Network != Inmem {
		c.t.Fatalf("heal: needs the Inmem network")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.isolated)
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			if a != b && a.trans != nil && b.trans != nil {
				a.trans.Connect(raft.ServerAddress(b.RaftAddr), b.trans)
			}
		}
	}
}

// reachable returns the running nodes that are not isolated and have joined the cluster.
func (c *Cluster) reachable() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var up []*Node
	for _, n := range c.nodes {
		n.mu.Lock()
		ok := n.store != nil && n.joined && !c.isolated[n]
		n.mu.Unlock()
		if ok {
			up = append(up, n)
		}
	}
	return up
}

// Leader waits until the running, non-isolated nodes that have joined agree on a leader
// among them, and returns it.
func (c *Cluster) Leader() *Node {
	c.t.Helper()
	var leader *Node
	c.waitFor("a leader", func() bool {
		leader = nil
		up := c.reachable()
		for _, n := range up {
			if s := n.Store(); s != nil && s.IsLeader() {
				if leader != nil {
					return false
				}
				leader = n
			}
		}
		if leader == nil {
			return false
		}
		for _, n := range up {
			s := n.Store()
			if s == nil {
				return false
			}
			if l, ok := s.Leader(); !ok || l.ID != leader.ID {
				return false
			}
		}
		return true
	})
	return leader
}

// Followers returns the running, non-isolated nodes other than the current leader.
func (c *Cluster) Followers() []*Node {
	c.t.Helper()
	leader := c.Leader()
	var fs []*Node
	for _, n := range c.reachable() {
		if n != leader {
			fs = append(fs, n)
		}
	}
	return fs
}

// WaitConverged waits until every running, non-isolated node has applied every write
// acknowledged before the call, and lists every member of the configuration.
func (c *Cluster) WaitConverged() {
	c.t.Helper()
	var target uint64
	var want int
	c.waitFor("the leader to confirm its read index", func() bool {
		leader := c.Leader()
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
		defer cancel()
		index, err := leader.Store().ReadIndex(ctx)
		if err != nil {
			return false
		}
		target, want = index, len(leader.Store().Status().Members)
		return true
	})
	c.waitFor(fmt.Sprintf("every node to apply index %d", target), func() bool {
		for _, n := range c.reachable() {
			s := n.Store()
			if s == nil || s.AppliedIndex() < target || len(s.Status().Members) != want {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond until it holds or Options.Timeout passes.
func (c *Cluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(c.opts.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("waited %s for %s", c.opts.Timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close stops every running node. It runs when the test ends.
func (c *Cluster) Close() {
	for _, n := range c.Nodes() {
		if n.Store() != nil {
			c.Kill(n)
		}
	}
}

// IgnoreLeftovers is the goleak option for test binaries that run tag stores (directly, or in
// a build-index): a call in flight when a Store closes may leave its awaitFuture goroutine
// blocked on a Raft future that raft never answers after shutdown (documented on awaitFuture).
// Anything else that outlives the tests is still a leak.
func IgnoreLeftovers() goleak.Option {
	return goleak.IgnoreAnyFunction("github.com/krakenctl/krakenctl/tagstore.awaitFuture")
}
