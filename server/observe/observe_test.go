package observe_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/observe"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

var errNotFound = errors.New("not found")

// fakeNode is an agent or origin in memory.
type fakeNode struct {
	mu       sync.Mutex
	host     snapshot.HostStats
	torrents []snapshot.TorrentStats
	err      error
	block    bool // never answers (until ctx ends)
	ring     *api.RingStatus
}

func (f *fakeNode) Torrents(ctx context.Context, d digest.Digest, history bool) ([]snapshot.TorrentStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []snapshot.TorrentStats
	for _, t := range f.torrents {
		if (d == "" || t.Digest == d) && (history || t.Retired == nil) {
			out = append(out, t)
		}
	}
	return out, nil
}

func (f *fakeNode) Host(ctx context.Context) (snapshot.HostStats, error) {
	if f.block {
		<-ctx.Done()
		return snapshot.HostStats{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.host, f.err
}

func (f *fakeNode) Ring(ctx context.Context, d digest.Digest) (api.RingStatus, error) {
	if f.ring == nil {
		return api.RingStatus{}, errors.New("no ring")
	}
	return *f.ring, nil
}

type fakeTracker struct {
	swarms map[digest.Digest]snapshot.TrackerSwarm
	err    error
	mu     sync.Mutex
	asked  []digest.Digest // Swarm calls
}

func (f *fakeTracker) Swarms(ctx context.Context, limit int) ([]snapshot.TrackerSwarm, error) {
	if f.err != nil {
		return nil, f.err
	}
	var out []snapshot.TrackerSwarm
	for _, s := range f.swarms {
		s.Members = nil
		out = append(out, s)
	}
	return out, nil
}

func (f *fakeTracker) Swarm(ctx context.Context, d digest.Digest) (snapshot.TrackerSwarm, error) {
	f.mu.Lock()
	f.asked = append(f.asked, d)
	f.mu.Unlock()
	if f.err != nil {
		return snapshot.TrackerSwarm{}, f.err
	}
	s, ok := f.swarms[d]
	if !ok {
		return s, fmt.Errorf("swarm %s: %w", d, errNotFound)
	}
	return s, nil
}

type fakeBI struct{}

func (fakeBI) ClusterStatus(context.Context) (api.ClusterStatus, error) {
	return api.ClusterStatus{LeaderAPIAddr: "127.0.0.1:15100", Term: 7, Members: make([]api.Member, 3)}, nil
}

const mib = 1 << 20

var blob = digest.FromString("blob")

// cluster is one origin (o), two agents (a1 read, a2 down) and a third agent (a3) that only
// the tracker names, with its API address. o sent a1 3 MiB; a1 received 1 MiB from a3.
func cluster(t *testing.T) (map[string]*fakeNode, *fakeTracker, observe.Deps) {
	t.Helper()
	start := time.Unix(1000, 0)
	done := start.Add(2 * time.Second)
	nodes := map[string]*fakeNode{
		"o:1": {host: snapshot.HostStats{Role: "origin", PeerID: "0o", Addr: "127.0.0.1:7000", EgressCap: 100 * mib},
			torrents: []snapshot.TorrentStats{{Digest: blob, State: "seeding", Size: 4 * mib, PieceLength: mib, Pieces: 4, Have: 4,
				BytesOut: 3 * mib, Peers: []snapshot.PeerStats{{ID: "0a1", Addr: "127.0.0.1:40001", BytesOut: 3 * mib}}}},
			ring: &api.RingStatus{Members: []api.RingMember{{Addr: "o:1", Healthy: true}, {Addr: "o:2", ConsecutiveFailures: 3}}}},
		"a1:1": {host: snapshot.HostStats{Role: "agent", PeerID: "0a1", Addr: "127.0.0.1:8001", IngressCap: 2 * mib, BytesIn: 4 * mib},
			torrents: []snapshot.TorrentStats{{Digest: blob, State: "seeding", Size: 4 * mib, PieceLength: mib, Pieces: 4, Have: 4,
				BytesIn: 4 * mib, BytesInOrigin: 3 * mib, Started: start, Downloaded: &done,
				OriginReasons: map[snapshot.OriginReason]int64{snapshot.ReasonNoPeers: 2, snapshot.ReasonPeersLackPiece: 1},
				Peers:         []snapshot.PeerStats{{ID: "0o", Addr: "127.0.0.1:7000", Origin: true, BytesIn: 3 * mib}},
				PastPeers:     []snapshot.PeerStats{{ID: "0a3", Addr: "127.0.0.1:51234", BytesIn: mib}}}}},
		"a2:1": {err: errors.New("connection refused")},
		"127.0.0.3:1": {host: snapshot.HostStats{Role: "agent", PeerID: "0a3", Addr: "127.0.0.1:8003"},
			torrents: []snapshot.TorrentStats{{Digest: blob, State: "downloading", Size: 4 * mib, PieceLength: mib, Pieces: 4, Have: 1,
				BytesOut: mib, Started: start}}},
	}
	tr := &fakeTracker{swarms: map[digest.Digest]snapshot.TrackerSwarm{blob: {Digest: blob, Seeders: 1, Leechers: 1, Members: []snapshot.TrackerMember{
		{PeerID: "0a1", Addr: "127.0.0.1:8001", Role: "agent", Complete: true, LastAnnounce: start},
		{PeerID: "0a3", Addr: "127.0.0.1:8003", API: "127.0.0.3:1", Role: "agent", Have: 1, Pieces: 4},
		{PeerID: "0a9", Addr: "127.0.0.1:8009", Role: "agent", Have: 2, Pieces: 4},
	}}}}
	deps := observe.Deps{
		Agent: func(addr string) observe.SwarmNode { return nodes[addr] },
		Origin: func(addr string) interface {
			observe.SwarmNode
			observe.Ring
		} {
			return nodes[addr]
		},
		Tracker:    func(string) observe.Tracker { return tr },
		NotFound:   func(err error) bool { return errors.Is(err, errNotFound) },
		BuildIndex: fakeBI{},
		Now:        func() time.Time { return start.Add(10 * time.Second) },
	}
	return nodes, tr, deps
}

func TestSnapshotMergesTheCluster(t *testing.T) {
	_, _, deps := cluster(t)
	g, err := observe.New(observe.Config{Agents: []string{"a1:1", "a2:1"}, Origins: []string{"o:1"}, Trackers: []string{"t:1"}, Discover: 10}, deps)
	require.NoError(t, err)
	c := g.Snapshot(context.Background())

	require.Len(t, c.Swarms, 1)
	s := c.Swarms[0]
	assert.Equal(t, blob, s.Digest)
	assert.InDelta(t, 0.75, s.OriginCopies, 1e-9, "the origin sent 3 MiB of a 4 MiB blob")
	// a1 took 3 of its 4 MiB from the origin; a3 nothing yet.
	assert.InDelta(t, 0.75, s.OriginShare, 1e-9)
	assert.Equal(t, 1, s.Seeders)
	assert.False(t, s.Done)
	// Agents a1 (4/4), a3 (1/4, read through its announced API), a9 (2/4, tracker only).
	assert.InDelta(t, (1+0.25+0.5)/3, s.Progress, 1e-9)
	// a1 finished in 2s at a 2 MiB/s cap: 4 MiB / 2 MiB/s / 2 s.
	assert.InDelta(t, 1.0, s.Efficiency, 1e-9)

	byAddr := map[string]snapshot.SwarmPeer{}
	for _, p := range s.Peers {
		byAddr[p.Addr] = p
	}
	require.Len(t, byAddr, 4)
	assert.Equal(t, "origin", s.Peers[0].Role, "origins come first")
	a1 := byAddr["127.0.0.1:8001"]
	assert.Equal(t, int64(3*mib), a1.BytesFromOrigins)
	assert.Equal(t, int64(mib), a1.BytesFromPeers)
	assert.Equal(t, int64(2), a1.OriginReasons[snapshot.ReasonNoPeers])
	require.NotNil(t, a1.LastAnnounce)
	assert.Equal(t, "announced", byAddr["127.0.0.1:8009"].State)
	assert.Equal(t, 2, byAddr["127.0.0.1:8009"].Pieces)
	assert.Equal(t, "downloading", byAddr["127.0.0.1:8003"].State)

	// Edges by swarm address: the past inbound connection from a3 (an ephemeral port) is named
	// by a3's swarm address through its peer id; the receiver's count is used.
	edges := map[string]snapshot.Edge{}
	for _, e := range s.Edges {
		edges[e.From+">"+e.To] = e
	}
	require.Len(t, edges, 2, "%+v", s.Edges)
	oe := edges["127.0.0.1:7000>127.0.0.1:8001"]
	assert.True(t, oe.FromOrigin)
	assert.True(t, oe.Live)
	assert.Equal(t, int64(3*mib), oe.Bytes)
	pe := edges["127.0.0.1:8003>127.0.0.1:8001"]
	assert.False(t, pe.FromOrigin)
	assert.False(t, pe.Live)
	assert.Equal(t, int64(mib), pe.Bytes)

	// Hosts: the down agent is a row with its error, and a source error.
	var down *snapshot.Host
	for i := range c.Hosts {
		if c.Hosts[i].API == "a2:1" {
			down = &c.Hosts[i]
		}
	}
	require.NotNil(t, down)
	assert.False(t, down.Up)
	assert.Contains(t, down.Error, "connection refused")
	require.Len(t, c.Errors, 1)
	assert.Equal(t, "agent", c.Errors[0].Role)

	require.Len(t, c.Ring, 2)
	assert.True(t, c.Ring[0].Reachable)
	assert.False(t, c.Ring[1].Healthy)
	assert.Equal(t, 3, c.Ring[1].Failures)
	require.NotNil(t, c.BuildIndex)
	assert.Equal(t, uint64(7), c.BuildIndex.Term)
	assert.Equal(t, "127.0.0.1:15100", c.BuildIndex.Leader)
}

// TestMembersOnlyOfSwarmsInFlight: a finished swarm's member list (megabytes at thousands of
// members) is not read for a snapshot.
func TestMembersOnlyOfSwarmsInFlight(t *testing.T) {
	_, tr, deps := cluster(t)
	done := digest.FromString("done")
	tr.swarms[done] = snapshot.TrackerSwarm{Digest: done, Seeders: 5000}
	g, err := observe.New(observe.Config{Trackers: []string{"t:1"}}, deps)
	require.NoError(t, err)
	c := g.Snapshot(context.Background())
	assert.Equal(t, []digest.Digest{blob}, tr.asked)
	require.Len(t, c.Swarms, 2, "both swarms are listed")
}

func TestSwarmOfUnknownDigest(t *testing.T) {
	_, _, deps := cluster(t)
	g, err := observe.New(observe.Config{Agents: []string{"a1:1"}, Origins: []string{"o:1"}, Trackers: []string{"t:1"}}, deps)
	require.NoError(t, err)
	_, errs, ok := g.Swarm(context.Background(), digest.FromString("nobody"))
	assert.False(t, ok)
	assert.Empty(t, errs, "a tracker that does not know the swarm is not an error")

	s, _, ok := g.Swarm(context.Background(), blob)
	require.True(t, ok)
	assert.Equal(t, blob, s.Digest)
}

func TestSlowAndBrokenSourcesDegrade(t *testing.T) {
	nodes, tr, deps := cluster(t)
	nodes["a1:1"].block = true
	tr.err = errors.New("tracker answered garbage: invalid character '<'")
	g, err := observe.New(observe.Config{Agents: []string{"a1:1"}, Origins: []string{"o:1"}, Trackers: []string{"t:1"}, Timeout: 50 * time.Millisecond}, deps)
	require.NoError(t, err)
	c := g.Snapshot(context.Background())
	roles := map[string]string{}
	for _, e := range c.Errors {
		roles[e.Role] = e.Error
	}
	assert.Contains(t, roles["agent"], "deadline exceeded")
	assert.Contains(t, roles["tracker"], "garbage")
	// What could be read still is: the origin's swarm and the ring.
	require.Len(t, c.Swarms, 1)
	assert.Equal(t, -1, c.Swarms[0].Seeders, "no tracker count")
	assert.Len(t, c.Ring, 2)
}

func TestWatcherRatesAndEvents(t *testing.T) {
	nodes, _, deps := cluster(t)
	now := time.Unix(2000, 0)
	deps.Now = func() time.Time { return now }
	events := map[string]chan snapshot.Event{"a1:1": make(chan snapshot.Event, 1), "o:1": make(chan snapshot.Event, 1)}
	deps.Events = func(ctx context.Context, addr string, kinds []snapshot.EventKind, fn func(snapshot.Event) error) error {
		assert.Contains(t, kinds, snapshot.EventOriginFallback)
		select {
		case e := <-events[addr]:
			_ = fn(e)
		case <-ctx.Done():
		}
		<-ctx.Done()
		return nil
	}
	g, err := observe.New(observe.Config{Agents: []string{"a1:1"}, Origins: []string{"o:1"}}, deps)
	require.NoError(t, err)
	w := observe.NewWatcher(g, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Start(ctx)

	first, err := w.Next(ctx)
	require.NoError(t, err)
	assert.Zero(t, first.Hosts[0].RateIn)

	// One second later a1 has received 2 MiB more, 1 MiB of it from the origin's live edge.
	a1 := nodes["a1:1"]
	a1.mu.Lock()
	a1.host.BytesIn += 2 * mib
	a1.torrents[0].BytesIn += 2 * mib
	a1.torrents[0].BytesInOrigin += mib
	a1.torrents[0].Have = 3 // pretend it is still downloading
	a1.torrents[0].Peers[0].BytesIn += mib
	a1.mu.Unlock()
	events["a1:1"] <- snapshot.Event{Kind: snapshot.EventOriginFallback, Digest: blob, Err: string(snapshot.ReasonNoPeers), Pieces: 2}
	events["o:1"] <- snapshot.Event{Kind: snapshot.EventDemoted, Digest: blob, Err: "claimed piece 3"}
	require.Eventually(t, func() bool { return observe.PendingEvents(w) == 2 }, 5*time.Second, 10*time.Millisecond)
	now = now.Add(time.Second)

	second, err := w.Next(ctx)
	require.NoError(t, err)
	var agent snapshot.Host
	for _, h := range second.Hosts {
		if h.Role == "agent" {
			agent = h
		}
	}
	assert.InDelta(t, 2*mib, agent.RateIn, 1)
	s := second.Swarms[0]
	assert.InDelta(t, 2*mib, s.RateIn, 1)
	for _, e := range s.Edges {
		if e.FromOrigin {
			assert.InDelta(t, mib, e.Rate, 1)
		}
	}
	// One of four pieces left at 2 MiB/s: half a second.
	assert.InDelta(t, 0.5, s.ETA, 1e-9)
	require.Len(t, second.Events, 2, "the agent's and the origin's")
	byHost := map[string]snapshot.HostEvent{}
	for _, e := range second.Events {
		byHost[e.Host] = e
	}
	assert.Equal(t, snapshot.EventOriginFallback, byHost["a1:1"].Kind)
	assert.Equal(t, "agent", byHost["a1:1"].Role)
	assert.Equal(t, snapshot.EventDemoted, byHost["o:1"].Kind)
	assert.Equal(t, "origin", byHost["o:1"].Role)

	third, err := w.Next(ctx)
	require.NoError(t, err)
	assert.Empty(t, third.Events, "each event is delivered once")
}

// TestTrackerSwarms: the trackers are asked in turn, and what the one that answers says is
// made printable.
func TestTrackerSwarms(t *testing.T) {
	_, tr, deps := cluster(t)
	tr.swarms[blob] = snapshot.TrackerSwarm{Digest: blob, Namespace: "evil\x1b]0;pwned\x07", Seeders: 2}
	down := &fakeTracker{err: errors.New("connection refused")}
	deps.Tracker = func(addr string) observe.Tracker {
		if addr == "down:1" {
			return down
		}
		return tr
	}
	g, err := observe.New(observe.Config{Trackers: []string{"down:1", "t:1"}}, deps)
	require.NoError(t, err)
	list, err := g.TrackerSwarms(context.Background(), 10)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, `evil\x1b]0;pwned\x07`, list[0].Namespace)

	g, err = observe.New(observe.Config{Trackers: []string{"down:1"}}, deps)
	require.NoError(t, err)
	_, err = g.TrackerSwarms(context.Background(), 10)
	require.ErrorContains(t, err, "tracker down:1: connection refused")

	g, err = observe.New(observe.Config{Agents: []string{"a1:1"}}, deps)
	require.NoError(t, err)
	_, err = g.TrackerSwarms(context.Background(), 10)
	require.ErrorIs(t, err, observe.ErrNoTracker)
}

// The build-index's replication queues are read from its leader, made printable, and a
// build-index without the endpoint (an older node: 404) shows none without an error.
func TestSnapshotReadsReplicationFromTheLeader(t *testing.T) {
	_, _, deps := cluster(t)
	var asked []string
	deps.Replication = func(_ context.Context, addr string) (api.ReplicationStatus, error) {
		asked = append(asked, addr)
		return api.ReplicationStatus{Remotes: []api.RemoteStatus{{Name: "dc2\x1b[31m", Pending: 2, Parked: 1, LastError: "refused\x07"}}}, nil
	}
	g, err := observe.New(observe.Config{Origins: []string{"o:1"}}, deps)
	require.NoError(t, err)
	c := g.Snapshot(t.Context())
	assert.Equal(t, []string{"127.0.0.1:15100"}, asked, "the leader is asked")
	require.Len(t, c.BuildIndex.Replication, 1)
	q := c.BuildIndex.Replication[0]
	assert.Equal(t, 2, q.Pending)
	assert.Equal(t, 1, q.Parked)
	assert.NotContains(t, q.Name+q.LastError, "\x1b")
	assert.NotContains(t, q.LastError, "\x07")

	deps.Replication = func(context.Context, string) (api.ReplicationStatus, error) {
		return api.ReplicationStatus{}, fmt.Errorf("get replication status: %w", errNotFound)
	}
	g, err = observe.New(observe.Config{Origins: []string{"o:1"}}, deps)
	require.NoError(t, err)
	c = g.Snapshot(t.Context())
	assert.Empty(t, c.BuildIndex.Replication)
	assert.Empty(t, c.Errors)
}
