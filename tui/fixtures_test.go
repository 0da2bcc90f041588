package tui

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// updateGolden says -update was given: rewrite the golden files under testdata. The flag is
// teatest's (charmbracelet/x/exp/golden defines it for its own goldens); ours share it.
func updateGolden() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

const mib = 1 << 20

var t0 = time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)

func testDigest(i int) digest.Digest { return digest.FromString(fmt.Sprintf("blob %d", i)) }

func originAddr(i int) string { return fmt.Sprintf("127.0.1.%d:7001", i+1) }
func agentAddr(i int) string  { return fmt.Sprintf("127.0.0.%d:8000", i+10) }

// nPeerSwarm is a swarm of n members (one origin up to 5, two beyond) downloading a 512 MiB
// blob. Agent k receives from origin k%origins at (k%7+1) MiB/s, from agent k-1 at 3 MiB/s,
// and from agent k/2 (when that is another one) at 1.5 MiB/s over a closed connection. Agent
// k holds k*2 of 128 pieces.
func nPeerSwarm(i, n int) snapshot.Swarm {
	origins := 1
	if n > 5 {
		origins = 2
	}
	agents := n - origins
	sw := snapshot.Swarm{Digest: testDigest(i), Size: 512 * mib, Pieces: 128, Seeders: origins, Leechers: agents}
	for o := range origins {
		sw.Peers = append(sw.Peers, snapshot.SwarmPeer{Addr: originAddr(o), Role: "origin", State: "seeding", Pieces: 128})
	}
	var held float64
	for k := range agents {
		sw.Peers = append(sw.Peers, snapshot.SwarmPeer{Addr: agentAddr(k), Role: "agent", State: "downloading", Pieces: min(k*2, 128)})
		held += float64(min(k*2, 128)) / 128
		sw.Edges = append(sw.Edges, snapshot.Edge{From: originAddr(k % origins), To: agentAddr(k), FromOrigin: true,
			Bytes: int64(k%7+1) * 10 * mib, Rate: float64(k%7+1) * mib, Live: true})
		if k >= 1 {
			sw.Edges = append(sw.Edges, snapshot.Edge{From: agentAddr(k - 1), To: agentAddr(k), Bytes: 30 * mib, Rate: 3 * mib, Live: true})
		}
		if k >= 2 && k/2 != k-1 {
			sw.Edges = append(sw.Edges, snapshot.Edge{From: agentAddr(k / 2), To: agentAddr(k), Bytes: 15 * mib, Rate: 1.5 * mib})
		}
	}
	sw.Progress = held / float64(agents)
	for _, e := range sw.Edges {
		sw.RateIn += e.Rate
	}
	sw.OriginShare = 0.25
	sw.ETA = 95
	return sw
}

// testCluster is a cluster with swarms of 3, 12 and 50 members, a done swarm, hosts (one
// down), a ring with an unhealthy member, a build-index, events of every notable kind and an
// unreachable tracker.
func testCluster() snapshot.Cluster {
	c := snapshot.Cluster{Time: t0}
	c.Swarms = []snapshot.Swarm{nPeerSwarm(1, 3), nPeerSwarm(2, 12), nPeerSwarm(3, 50)}
	done := nPeerSwarm(4, 3)
	done.Done, done.Progress, done.RateIn, done.ETA = true, 1, 0, 0
	c.Swarms = append(c.Swarms, done)
	c.Hosts = []snapshot.Host{
		{API: "127.0.0.10:9000", Addr: agentAddr(0), Role: "agent", Up: true, RateIn: 40 * mib, RateOut: 5 * mib, IngressCap: 50 * mib, EgressCap: 50 * mib, Conns: 4, Torrents: 2},
		{API: "127.0.1.1:9001", Addr: originAddr(0), Role: "origin", Up: true, RateOut: 120 * mib, EgressCap: 125 * mib, Conns: 40, Torrents: 3,
			Blacklisted: []snapshot.Blacklisted{{Addr: agentAddr(7), Reason: "bad piece"}}},
		{API: "127.0.0.11:9000", Addr: agentAddr(1), Role: "agent", Up: true, RateIn: 3 * mib, Conns: 2, Torrents: 1},
		{API: "127.0.0.99:9000", Role: "agent", Up: false, Error: "dial tcp 127.0.0.99:9000: connection refused"},
	}
	c.Ring = []snapshot.RingEntry{
		{Addr: "127.0.1.1:9001", Healthy: true, Reachable: true},
		{Addr: "127.0.1.2:9001", Healthy: false, Failures: 3},
	}
	c.BuildIndex = &snapshot.BuildIndexState{Leader: "127.0.2.1:9100", Term: 4, Nodes: 3}
	c.Events = testEvents(t0, testDigest(2))
	c.Errors = []snapshot.SourceError{{Role: "tracker", Addr: "127.0.0.1:5000", Error: "connection refused"}}
	return c
}

func testEvents(at time.Time, d digest.Digest) []snapshot.HostEvent {
	ev := func(sec int, host string, e snapshot.Event) snapshot.HostEvent {
		e.Time = at.Add(time.Duration(sec) * time.Second)
		if e.Digest == "" && e.Kind != snapshot.EventTrackerFailover {
			e.Digest = d
		}
		return snapshot.HostEvent{Host: host, Role: "agent", Event: e}
	}
	return []snapshot.HostEvent{
		ev(-9, "127.0.0.10:9000", snapshot.Event{Kind: snapshot.EventPieceReceived, Piece: 3}),
		ev(-8, "127.0.0.10:9000", snapshot.Event{Kind: snapshot.EventBlacklist, Addr: agentAddr(7), Err: "bad piece 12"}),
		ev(-7, "127.0.0.11:9000", snapshot.Event{Kind: snapshot.EventOriginFallback, Err: string(snapshot.ReasonPeersLackPiece), Pieces: 12}),
		ev(-6, "127.0.0.11:9000", snapshot.Event{Kind: snapshot.EventTrackerFailover, Addr: "127.0.0.1:5000", Err: "connection refused"}),
		ev(-5, "127.0.0.10:9000", snapshot.Event{Kind: snapshot.EventTorrentDone, Bytes: 512 * mib, Duration: 42 * time.Second}),
		ev(-4, "127.0.0.12:9000", snapshot.Event{Kind: snapshot.EventTorrentFailed, Err: "digest mismatch"}),
	}
}

// asciiRenderer renders no colour, as in the golden tests; colorRenderer renders true colour
// on a dark background whatever the test's terminal, to test that escape codes do appear.
// Neither writes to nor queries a terminal (the background is set, not detected).
func asciiRenderer() *lipgloss.Renderer {
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.Ascii)
	r.SetHasDarkBackground(true)
	return r
}

func colorRenderer() *lipgloss.Renderer {
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.TrueColor)
	r.SetHasDarkBackground(true)
	return r
}

// golden compares got with testdata/name.golden, rewriting it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if updateGolden() {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./tui -update to create it")
	require.Equal(t, string(want), got, "golden %s differs (run with -update if the change is meant)", path)
}

func sizeMsg(w, h int) tea.WindowSizeMsg { return tea.WindowSizeMsg{Width: w, Height: h} }
