package observe

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// Roles, as snapshot documents name them.
const (
	RoleAgent      = "agent"
	RoleOrigin     = "origin"
	RoleTracker    = "tracker"
	RoleBuildIndex = "build-index"
)

// SwarmNode is the swarm API of an agent or an origin.
type SwarmNode interface {
	// Torrents returns the node's torrents (only d's when d is not empty), the retired ones
	// after the live ones when history is set.
	Torrents(ctx context.Context, d digest.Digest, history bool) ([]snapshot.TorrentStats, error)
	Host(ctx context.Context) (snapshot.HostStats, error)
}

// Ring is an origin's view of the hash ring.
type Ring interface {
	Ring(ctx context.Context, d digest.Digest) (api.RingStatus, error)
}

// Tracker is a tracker's list of swarms.
type Tracker interface {
	Swarms(ctx context.Context, limit int) ([]snapshot.TrackerSwarm, error)
	// Swarm returns one swarm with its members; a swarm the tracker does not know wraps an
	// error for which NotFound reports true.
	Swarm(ctx context.Context, d digest.Digest) (snapshot.TrackerSwarm, error)
}

// BuildIndex is the build-index's Raft status.
type BuildIndex interface {
	ClusterStatus(ctx context.Context) (api.ClusterStatus, error)
}

// Config says where the cluster is and how much to read of it.
type Config struct {
	// Agents, Origins and Trackers are API addresses (host:port or URLs), as in an endpoints
	// file. Trackers are tried in order until one answers.
	Agents, Origins, Trackers []string
	// Timeout bounds each request (default 3s); Parallel the requests in flight (default 16).
	Timeout  time.Duration
	Parallel int
	// Discover is how many members beyond Agents and Origins a snapshot reads through the API
	// address they announced to the tracker (0: none). Swarms is how many member lists of
	// swarms in flight (with leechers) it asks the tracker for, newest first (default 8).
	Discover int
	Swarms   int
	// MaxEvents bounds the events a Watcher keeps between snapshots (default 1000).
	MaxEvents int
}

func (c *Config) defaults() {
	if c.Timeout <= 0 {
		c.Timeout = 3 * time.Second
	}
	if c.Parallel <= 0 {
		c.Parallel = 16
	}
	if c.Swarms <= 0 {
		c.Swarms = 8
	}
	if c.MaxEvents <= 0 {
		c.MaxEvents = 1000
	}
}

// Deps builds the clients. Agent and Origin are required; Tracker and BuildIndex may be nil
// (the snapshot then has no tracker view or no build-index).
type Deps struct {
	Agent  func(addr string) SwarmNode
	Origin func(addr string) interface {
		SwarmNode
		Ring
	}
	Tracker func(addr string) Tracker
	// NotFound reports whether an error of Tracker.Swarm means the tracker knows no such swarm.
	NotFound   func(error) bool
	BuildIndex BuildIndex
	// Replication, when set, reads the replication queues of the build-index node at addr
	// (the leader's: it is the one sending); a node that has no such endpoint answers an error
	// for which NotFound reports true, and the snapshot then shows none.
	Replication func(ctx context.Context, addr string) (api.ReplicationStatus, error)
	// Events, when set, streams an agent's or origin's events of the given kinds
	// (server/client.Agent's EventsOf: both serve the same stream); Watcher uses it.
	Events func(ctx context.Context, addr string, kinds []snapshot.EventKind, fn func(snapshot.Event) error) error
	Now    func() time.Time
}

// Gatherer reads a cluster. It is safe for concurrent use.
type Gatherer struct {
	cfg  Config
	deps Deps
}

// Sentinel errors.
var (
	// ErrNoSource means a Gatherer was given nothing to read.
	ErrNoSource = errors.New("observe: no agents, origins or trackers to read")
	// ErrNoTracker means a tracker's list was asked of a Gatherer given no tracker.
	ErrNoTracker = errors.New("observe: no tracker to read")
)

// New returns a Gatherer of the cluster cfg names.
func New(cfg Config, deps Deps) (*Gatherer, error) {
	cfg.defaults()
	if len(cfg.Agents)+len(cfg.Origins)+len(cfg.Trackers) == 0 {
		return nil, ErrNoSource
	}
	if deps.Agent == nil || deps.Origin == nil {
		return nil, errors.New("observe: Deps.Agent and Deps.Origin are required")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.NotFound == nil {
		deps.NotFound = func(error) bool { return false }
	}
	return &Gatherer{cfg: cfg, deps: deps}, nil
}

// nodeRead is what one agent or origin answered.
type nodeRead struct {
	api, role string
	host      snapshot.HostStats
	torrents  []snapshot.TorrentStats
	err       error
}

// Snapshot reads the whole cluster once. It never fails: what could not be read is named in
// Errors, and the hosts it concerns are marked down. Rates are zero (they need two snapshots:
// Watcher).
func (g *Gatherer) Snapshot(ctx context.Context) snapshot.Cluster {
	return g.gather(ctx, "")
}

// Swarm reads the cluster's view of one blob: every listed agent and origin, and every member
// the tracker names (up to Discover of them through their announced API addresses). The
// boolean is false when no host and no tracker knows d. Errors lists what could not be read.
func (g *Gatherer) Swarm(ctx context.Context, d digest.Digest) (snapshot.Swarm, []snapshot.SourceError, bool) {
	c := g.gather(ctx, d)
	for _, s := range c.Swarms {
		if s.Digest == d {
			return s, c.Errors, true
		}
	}
	return snapshot.Swarm{Digest: d, Peers: []snapshot.SwarmPeer{}, Edges: []snapshot.Edge{}, Seeders: -1, Leechers: -1}, c.Errors, false
}

func (g *Gatherer) gather(ctx context.Context, only digest.Digest) snapshot.Cluster {
	now := g.deps.Now()
	var (
		mu      sync.Mutex
		errs    []snapshot.SourceError
		nodes   []nodeRead
		ring    *api.RingStatus
		tracked []snapshot.TrackerSwarm
		bi      *snapshot.BuildIndexState
	)
	fail := func(role, addr string, err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, snapshot.SourceError{Role: role, Addr: addr, Error: err.Error()})
	}
	sem := make(chan struct{}, g.cfg.Parallel)
	var wg sync.WaitGroup
	spawn := func(fn func(ctx context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
			defer cancel()
			fn(rctx)
		}()
	}
	readNode := func(addr, role string, n SwarmNode) {
		spawn(func(ctx context.Context) {
			r := g.readNode(ctx, addr, role, n, only)
			mu.Lock()
			nodes = append(nodes, r)
			mu.Unlock()
			if r.err != nil {
				fail(role, addr, r.err)
			}
		})
	}
	for _, a := range g.cfg.Agents {
		readNode(a, RoleAgent, g.deps.Agent(a))
	}
	for i, a := range g.cfg.Origins {
		o := g.deps.Origin(a)
		readNode(a, RoleOrigin, o)
		if i == 0 || only == "" {
			// Every origin's ring view is read only in a full snapshot; the first that
			// answers is the one shown.
			spawn(func(ctx context.Context) {
				st, err := o.Ring(ctx, "")
				if err != nil {
					return // the node read reports this origin as down
				}
				mu.Lock()
				defer mu.Unlock()
				if ring == nil {
					ring = &st
				}
			})
		}
	}
	if len(g.cfg.Trackers) > 0 && g.deps.Tracker != nil {
		spawn(func(ctx context.Context) {
			ts := g.readTracker(ctx, only, fail)
			mu.Lock()
			defer mu.Unlock()
			tracked = ts
		})
	}
	if g.deps.BuildIndex != nil {
		spawn(func(ctx context.Context) {
			st, err := g.deps.BuildIndex.ClusterStatus(ctx)
			if err != nil {
				mu.Lock()
				defer mu.Unlock()
				bi = &snapshot.BuildIndexState{Error: err.Error()}
				errs = append(errs, snapshot.SourceError{Role: RoleBuildIndex, Error: err.Error()})
				return
			}
			state := &snapshot.BuildIndexState{Leader: st.LeaderAPIAddr, Term: st.Term, Nodes: len(st.Members)}
			var rerr error
			if g.deps.Replication != nil && st.LeaderAPIAddr != "" {
				var rs api.ReplicationStatus
				if rs, rerr = g.deps.Replication(ctx, st.LeaderAPIAddr); rerr == nil {
					state.Replication = remoteQueues(rs)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			bi = state
			if rerr != nil && (g.deps.NotFound == nil || !g.deps.NotFound(rerr)) {
				errs = append(errs, snapshot.SourceError{Role: RoleBuildIndex, Addr: st.LeaderAPIAddr, Error: "replication status: " + rerr.Error()})
			}
		})
	}
	wg.Wait()

	// Members the tracker names that no listed address covers are read through the API
	// address they announced, up to Discover of them.
	if g.cfg.Discover > 0 && len(tracked) > 0 {
		seen := map[string]bool{}
		for _, n := range nodes {
			seen[n.api] = true
			if n.err == nil {
				seen[n.host.Addr] = true
			}
		}
		left := g.cfg.Discover
		for _, ts := range tracked {
			for _, m := range ts.Members {
				if m.API == "" || seen[m.API] || seen[m.Addr] || left == 0 {
					continue
				}
				if announce.CheckAPI(m.API) != nil {
					// Not an address a tracker keeps (a name, link-local such as a cloud
					// metadata service, unspecified): a tracker that lies is not followed.
					fail(RoleTracker, m.API, fmt.Errorf("member %s: not dialling its api %q: %w", m.PeerID, m.API, announce.CheckAPI(m.API)))
					continue
				}
				seen[m.API] = true
				left--
				// The tracker's word picks the client, and names the host's role in the
				// view: one of the two roles that have a swarm API, nothing else.
				role := RoleAgent
				var n SwarmNode
				if m.Role == RoleOrigin {
					role = RoleOrigin
					n = g.deps.Origin(m.API)
				} else {
					n = g.deps.Agent(m.API)
				}
				readNode(m.API, role, n)
			}
		}
		wg.Wait()
	}
	slices.SortFunc(nodes, func(a, b nodeRead) int {
		return cmp.Or(cmp.Compare(roleRank(a.role), roleRank(b.role)), cmp.Compare(a.api, b.api))
	})
	slices.SortFunc(errs, func(a, b snapshot.SourceError) int {
		return cmp.Or(cmp.Compare(a.Role, b.Role), cmp.Compare(a.Addr, b.Addr))
	})
	c := snapshot.Cluster{
		Time:       now,
		Swarms:     merge(nodes, tracked, only),
		Hosts:      hosts(nodes),
		Ring:       ringEntries(ring, nodes),
		BuildIndex: bi,
		Events:     []snapshot.HostEvent{},
		Errors:     errs,
	}
	makePrintable(&c)
	return c
}

func roleRank(role string) int {
	if role == RoleOrigin {
		return 0
	}
	return 1
}

func (g *Gatherer) readNode(ctx context.Context, addr, role string, n SwarmNode, only digest.Digest) nodeRead {
	r := nodeRead{api: addr, role: role}
	h, err := n.Host(ctx)
	if err != nil {
		r.err = fmt.Errorf("read %s %s: %w", role, addr, err)
		return r
	}
	ts, err := n.Torrents(ctx, only, true)
	if err != nil {
		r.err = fmt.Errorf("read torrents of %s %s: %w", role, addr, err)
		return r
	}
	r.host, r.torrents = h, ts
	return r
}

// readTracker asks the trackers in turn for the swarm list (or the one swarm), and the
// members of the newest Swarms of them; nil when no tracker answered (each failure is passed
// to fail) or the one swarm is unknown.
func (g *Gatherer) readTracker(ctx context.Context, only digest.Digest, fail func(role, addr string, err error)) []snapshot.TrackerSwarm {
	for _, addr := range g.cfg.Trackers {
		t := g.deps.Tracker(addr)
		if only != "" {
			s, err := t.Swarm(ctx, only)
			switch {
			case err == nil:
				return []snapshot.TrackerSwarm{s}
			case g.deps.NotFound(err):
				return nil
			}
			fail(RoleTracker, addr, err)
			continue
		}
		list, err := t.Swarms(ctx, 1000)
		if err != nil {
			fail(RoleTracker, addr, err)
			continue
		}
		// Members only of swarms in flight, newest first: a finished swarm's members change
		// nothing a view shows, and a swarm of thousands is megabytes of JSON.
		read := 0
		for i := range list {
			if read >= g.cfg.Swarms {
				break
			}
			if list[i].Leechers == 0 {
				continue
			}
			read++
			s, err := t.Swarm(ctx, list[i].Digest)
			if err == nil {
				list[i] = s
			}
		}
		return list
	}
	return nil
}

// hosts turns node reads into host rows, down hosts included.
func hosts(nodes []nodeRead) []snapshot.Host {
	out := make([]snapshot.Host, 0, len(nodes))
	for _, n := range nodes {
		h := snapshot.Host{API: n.api, Role: n.role}
		if n.err != nil {
			h.Error = n.err.Error()
			out = append(out, h)
			continue
		}
		h.Up = true
		h.Addr = n.host.Addr
		h.IngressCap, h.EgressCap = n.host.IngressCap, n.host.EgressCap
		h.Conns, h.Torrents = n.host.Conns, n.host.Torrents
		h.BytesIn, h.BytesOut = n.host.BytesIn, n.host.BytesOut
		h.Blacklisted = n.host.Blacklisted
		out = append(out, h)
	}
	return out
}

// ringEntries is the ring as the first origin that answered sees it, with whether this
// gatherer could read each member itself.
func ringEntries(st *api.RingStatus, nodes []nodeRead) []snapshot.RingEntry {
	out := []snapshot.RingEntry{}
	if st == nil {
		return out
	}
	read := map[string]bool{}
	for _, n := range nodes {
		if n.role == RoleOrigin && n.err == nil {
			read[n.api] = true
		}
	}
	for _, m := range st.Members {
		out = append(out, snapshot.RingEntry{Addr: m.Addr, Healthy: m.Healthy, Failures: m.ConsecutiveFailures, Reachable: read[m.Addr]})
	}
	return out
}

// TrackerSwarms asks the trackers in turn for their list of swarms (at most limit, newest
// announce first) and returns the first answer, its strings made printable. It fails only
// when no tracker answers, with every tracker's error.
func (g *Gatherer) TrackerSwarms(ctx context.Context, limit int) ([]snapshot.TrackerSwarm, error) {
	if len(g.cfg.Trackers) == 0 || g.deps.Tracker == nil {
		return nil, ErrNoTracker
	}
	var errs []error
	for _, addr := range g.cfg.Trackers {
		rctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
		list, err := g.deps.Tracker(addr).Swarms(rctx, limit)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("tracker %s: %w", addr, err))
			continue
		}
		for i := range list {
			list[i].Digest, list[i].Namespace = printableDigest(list[i].Digest), printable(list[i].Namespace)
			list[i].Members = nil
		}
		return list, nil
	}
	return nil, fmt.Errorf("no tracker answered: %w", errors.Join(errs...))
}

// remoteQueues is the snapshot's view of a node's replication status.
func remoteQueues(rs api.ReplicationStatus) []snapshot.RemoteQueue {
	out := make([]snapshot.RemoteQueue, 0, len(rs.Remotes))
	for _, r := range rs.Remotes {
		out = append(out, snapshot.RemoteQueue{Name: r.Name, Pending: r.Pending, Parked: r.Parked, OldestPending: r.OldestPending,
			LastError: r.LastError, LastErrorAt: r.LastErrorAt, LastSuccess: r.LastSuccess, Replicated: r.Replicated, BytesPerSecond: r.BytesPerSecond})
	}
	return out
}
