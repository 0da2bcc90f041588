package observe_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/observe"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// evil would set the terminal's title, clear the screen, forge a line and reverse what
// follows, if it reached a terminal raw.
const evil = "\x1b]0;PWNED\x07\x1b[2J\nFAKE\r\u202eevil\xff"

// Every string a host or the tracker sends reaches the snapshot spelled out, never as the
// control and format runes a terminal acts on; a role the tracker names is one of the two.
func TestHostileStringsArePrintable(t *testing.T) {
	nodes, tr, deps := cluster(t)
	nodes["a1:1"].host.Addr = "127.0.0.1:8001" + evil
	nodes["a1:1"].torrents[0].Error = evil
	nodes["a1:1"].torrents[0].Namespace = "lib" + evil
	nodes["a1:1"].torrents[0].OriginReasons = map[snapshot.OriginReason]int64{snapshot.OriginReason("no_peers" + evil): 1}
	nodes["a1:1"].torrents[0].Peers[0].CloseReason = evil
	nodes["a1:1"].host.Blacklisted = []snapshot.Blacklisted{{Addr: evil, Reason: evil}}
	nodes["a2:1"].err = &stringError{evil}
	sw := tr.swarms[blob]
	sw.Members[1].Role = "agent" + evil
	tr.swarms[blob] = sw
	g, err := observe.New(observe.Config{Agents: []string{"a1:1", "a2:1"}, Origins: []string{"o:1"}, Trackers: []string{"t:1"}, Discover: 8}, deps)
	require.NoError(t, err)
	c := g.Snapshot(context.Background())
	data, err := json.Marshal(c)
	require.NoError(t, err)
	for _, bad := range []string{`\u001b`, `\u0007`, `\n`, `\r`, "\u202e", `\ufffd\ufffd`} {
		assert.NotContains(t, string(data), bad)
	}
	assert.Contains(t, string(data), `\\x1b]0;PWNED\\x07\\x1b[2J\\x0aFAKE\\x0d\\u202eevil`)
	for _, h := range c.Hosts {
		assert.Contains(t, []string{"agent", "origin"}, h.Role)
	}

	// The events a Watcher streams as well.
	deps.Events = func(ctx context.Context, addr string, kinds []snapshot.EventKind, fn func(snapshot.Event) error) error {
		_ = fn(snapshot.Event{Kind: snapshot.EventOriginFallback, Addr: evil, Err: evil})
		<-ctx.Done()
		return nil
	}
	g, err = observe.New(observe.Config{Agents: []string{"a1:1"}}, deps)
	require.NoError(t, err)
	w := observe.NewWatcher(g, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Start(ctx)
	require.Eventually(t, func() bool { return observe.PendingEvents(w) > 0 }, 5*time.Second, 10*time.Millisecond)
	c, err = w.Next(ctx)
	require.NoError(t, err)
	require.Len(t, c.Events, 1)
	assert.False(t, strings.ContainsAny(c.Events[0].Addr+c.Events[0].Err, "\x1b\n\r\u202e"))
}

type stringError struct{ s string }

func (e *stringError) Error() string { return e.s }

// A flood of events keeps the newest MaxEvents for the next snapshot, in order.
func TestWatcherKeepsNewestEvents(t *testing.T) {
	_, _, deps := cluster(t)
	const n = 2500
	deps.Events = func(ctx context.Context, addr string, kinds []snapshot.EventKind, fn func(snapshot.Event) error) error {
		for i := range n {
			_ = fn(snapshot.Event{Kind: snapshot.EventPieceBad, Piece: i})
		}
		<-ctx.Done()
		return nil
	}
	g, err := observe.New(observe.Config{Agents: []string{"a1:1"}, MaxEvents: 100}, deps)
	require.NoError(t, err)
	w := observe.NewWatcher(g, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Start(ctx)
	require.Eventually(t, func() bool {
		_, last := observe.LastPending(w)
		return last == n-1
	}, 5*time.Second, 10*time.Millisecond)
	assert.LessOrEqual(t, observe.PendingEvents(w), 200, "held events are bounded")
	c, err := w.Next(ctx)
	require.NoError(t, err)
	require.Len(t, c.Events, 100)
	for i, e := range c.Events {
		assert.Equal(t, n-100+i, e.Piece)
	}
}

// A member that was only announced (or down) in the snapshot before has no counters there:
// what it reports now is everything it ever moved, not a rate, and so are its edges.
func TestRatesOfMemberFirstRead(t *testing.T) {
	d := blob
	t0 := time.Unix(1000, 0)
	prev := snapshot.Cluster{Time: t0, Swarms: []snapshot.Swarm{{Digest: d, Peers: []snapshot.SwarmPeer{
		{Addr: "a:1", Role: "agent", State: "announced"},
		{Addr: "b:1", Role: "agent", State: "downloading", BytesFromPeers: 10},
	}}}}
	cur := snapshot.Cluster{Time: t0.Add(time.Second), Swarms: []snapshot.Swarm{{Digest: d, Size: 1000, Pieces: 10, Peers: []snapshot.SwarmPeer{
		{Addr: "a:1", Role: "agent", State: "downloading", BytesFromPeers: 900 * mib, Pieces: 5},
		{Addr: "b:1", Role: "agent", State: "downloading", BytesFromPeers: 30, Pieces: 5},
	}, Edges: []snapshot.Edge{
		{From: "c:1", To: "a:1", Bytes: 900 * mib, Live: true},
		{From: "c:1", To: "b:1", Bytes: 20, Live: true},
	}}}}
	observe.Rates(&prev, &cur)
	s := cur.Swarms[0]
	assert.Zero(t, s.Peers[0].RateIn)
	assert.InDelta(t, 20, s.Peers[1].RateIn, 1e-9)
	assert.InDelta(t, 20, s.RateIn, 1e-9)
	assert.Zero(t, s.Edges[0].Rate, "an edge no host read last time reported")
	assert.InDelta(t, 20, s.Edges[1].Rate, 1e-9, "a new edge of a host read last time")
}

// A member's api that no tracker keeps (link-local: a cloud metadata service) is not dialled.
func TestDiscoverSkipsBadAPI(t *testing.T) {
	_, tr, deps := cluster(t)
	sw := tr.swarms[blob]
	sw.Members[1].API = "169.254.169.254:80"
	tr.swarms[blob] = sw
	agent := deps.Agent
	deps.Agent = func(addr string) observe.SwarmNode {
		assert.NotEqual(t, "169.254.169.254:80", addr)
		return agent(addr)
	}
	g, err := observe.New(observe.Config{Agents: []string{"a1:1"}, Trackers: []string{"t:1"}, Discover: 8}, deps)
	require.NoError(t, err)
	c := g.Snapshot(context.Background())
	require.NotEmpty(t, c.Errors)
	assert.Contains(t, c.Errors[0].Error, "not dialling")
}
