package scheduler_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// These tests check what a node reports about itself for the operator's view (issue 14): why
// it asked origins, the connections and bans of its torrents, the torrents it retired, and its
// host totals.

// sumReasons totals a torrent's origin reasons.
func sumReasons(st scheduler.TorrentStats) int64 {
	var n int64
	for _, v := range st.OriginReasons {
		n += v
	}
	return n
}

// fallbackPieces totals the pieces of the origin fallback events recorded for reason ("" for
// every reason).
func fallbackPieces(rec *recorder, reason snapshot.OriginReason) int64 {
	var n int64
	for _, e := range rec.all(func(e scheduler.Event) bool {
		return e.Kind == snapshot.EventOriginFallback && (reason == "" || e.Err == string(reason))
	}) {
		n += int64(e.Pieces)
	}
	return n
}

// requireOriginAccounting checks that the pieces counted by reason cover every piece the
// origins sent (BytesInOrigin; more only where endgame asked twice or a request was withdrawn)
// and that the fallback events add up to the counts.
func requireOriginAccounting(t *testing.T, rec *recorder, st scheduler.TorrentStats) {
	t.Helper()
	fromOrigin := (st.BytesInOrigin + st.PieceLength - 1) / st.PieceLength
	t.Logf("%d of %d pieces from origins; asked by reason: %v", fromOrigin, st.Pieces, st.OriginReasons)
	require.GreaterOrEqual(t, sumReasons(st), fromOrigin, "every piece an origin sent was counted: %+v", st.OriginReasons)
	require.Eventually(t, func() bool { return fallbackPieces(rec, "") == sumReasons(st) }, 20*time.Second, 5*time.Millisecond,
		"the fallback events add up to the counts %v (events say %d)", st.OriginReasons, fallbackPieces(rec, ""))
	for r, n := range st.OriginReasons {
		require.Equal(t, n, fallbackPieces(rec, r), "reason %s", r)
	}
}

// A lone agent gets everything from the origin because there is nobody else: no_peers (the
// last pieces perhaps endgame). Once it has seeded long enough the torrent goes to the history
// with the origin among its past connections, and the host totals survive it.
func TestLoneAgentReportsNoPeers(t *testing.T) {
	t.Parallel()
	ft := announcetest.New()
	blob := randomBlob(t, advBlobSize)
	origin, d := startOrigin(t, ft, blob, scheduler.Config{})
	agent := startNode(t, t.TempDir(), scheduler.Config{SeedTime: time.Millisecond, IngressRate: 1 << 40}, ft)
	rec := record(t, agent.s)
	got, err := pull(t.Context(), agent.s, d)
	require.NoError(t, err)
	require.Equal(t, blob, got)

	var h []scheduler.TorrentStats
	require.Eventually(t, func() bool { h = agent.s.History(); return len(h) == 1 }, 30*time.Second, 10*time.Millisecond,
		"the agent retires the torrent once it seeded SeedTime")
	require.Empty(t, agent.s.Stats())
	st := h[0]
	require.Equal(t, d, st.Digest)
	require.Equal(t, "seeding", st.State)
	require.NotNil(t, st.Retired)
	require.NotNil(t, st.Finished)
	require.False(t, st.Retired.Before(*st.Finished))
	require.Equal(t, int64(len(blob)), st.BytesInOrigin, "everything came from the origin")
	for r := range st.OriginReasons {
		require.Contains(t, []snapshot.OriginReason{snapshot.ReasonNoPeers, snapshot.ReasonEndgame}, r)
	}
	require.Positive(t, st.OriginReasons[snapshot.ReasonNoPeers])
	requireOriginAccounting(t, rec, st)

	require.Len(t, st.PastPeers, 1, "the origin, closed when the agent finished")
	p := st.PastPeers[0]
	require.Equal(t, origin.s.PeerID().String(), p.ID)
	require.Equal(t, origin.s.Addr(), p.Addr)
	require.True(t, p.Origin)
	require.Equal(t, "done", p.CloseReason)
	require.NotNil(t, p.Closed)
	require.Equal(t, int64(len(blob)), p.BytesIn, "piece bytes and nothing else")
	require.Empty(t, st.Peers)
	require.Empty(t, st.Blacklisted)

	ah := agent.s.HostStats()
	require.Equal(t, "agent", ah.Role)
	require.Equal(t, agent.s.PeerID().String(), ah.PeerID)
	require.Equal(t, agent.s.Addr(), ah.Addr)
	require.Equal(t, int64(1<<40), ah.IngressCap)
	require.Zero(t, ah.EgressCap)
	require.Zero(t, ah.Torrents)
	require.Zero(t, ah.Conns)
	require.Equal(t, int64(len(blob)), ah.BytesIn, "the retired torrent's bytes still count")
	require.Empty(t, ah.Blacklisted)

	oh := origin.s.HostStats()
	require.Equal(t, "origin", oh.Role)
	require.Equal(t, 1, oh.Torrents)
	require.GreaterOrEqual(t, oh.BytesOut, int64(len(blob)))
	// The origin keeps the agent's connection among its torrent's past ones once it closes.
	require.Eventually(t, func() bool {
		os := origin.s.Stats()
		return len(os) == 1 && len(os[0].PastPeers) == 1 && os[0].PastPeers[0].ID == agent.s.PeerID().String()
	}, 20*time.Second, 10*time.Millisecond)
}

// An agent whose only other peer has nothing asks the origin because the peers lack the
// pieces.
func TestEmptyPeerMeansPeersLackPiece(t *testing.T) {
	t.Parallel()
	sw := newAdvSwarm(t)
	agent := startNode(t, t.TempDir(), scheduler.Config{}, sw.gt)
	rec := record(t, agent.s)
	adv := newAdversary(t, sw.mi)
	adv.hello = modified(func(h *wire.Handshake) { h.Bitfield = wire.NewBitfield(sw.mi.NumPieces()) })
	adv.script = keepAliveUntilClosed
	sw.handOut(adv)
	got := sw.pullAsync(t, agent.s)
	rec.waitFor(t, "connection to the empty peer", adv.kind(snapshot.EventConnOpen))
	sw.gt.open()
	sw.finished(t, agent, got)

	st := agent.s.Stats()
	require.Len(t, st, 1)
	for r := range st[0].OriginReasons {
		require.Contains(t, []snapshot.OriginReason{snapshot.ReasonPeersLackPiece, snapshot.ReasonEndgame}, r)
	}
	require.Positive(t, st[0].OriginReasons[snapshot.ReasonPeersLackPiece])
	requireOriginAccounting(t, rec, st[0])
	connected := false
	for _, p := range st[0].Peers {
		connected = connected || (p.ID == adv.id.String() && p.Have == 0)
	}
	require.True(t, connected, "the empty peer is still connected: %+v", st[0].Peers)
}

// An agent that banned its only peer asks the origin because of the ban; the ban is listed
// with why, on the torrent and on the host, and the closed connection among the past ones.
func TestBannedPeerMeansBlacklisted(t *testing.T) {
	t.Parallel()
	sw := newAdvSwarm(t)
	agent := startNode(t, t.TempDir(), scheduler.Config{}, sw.gt)
	rec := record(t, agent.s)
	adv := newAdversary(t, sw.mi)
	adv.script = answerWithBadPiece
	sw.handOut(adv)
	got := sw.pullAsync(t, agent.s)
	rec.waitFor(t, "blacklist", adv.kind(snapshot.EventBlacklist))
	sw.gt.open()
	sw.finished(t, agent, got)

	st := agent.s.Stats()
	require.Len(t, st, 1)
	for r := range st[0].OriginReasons {
		require.Contains(t, []snapshot.OriginReason{snapshot.ReasonBlacklisted, snapshot.ReasonEndgame}, r)
	}
	require.Positive(t, st[0].OriginReasons[snapshot.ReasonBlacklisted])
	requireOriginAccounting(t, rec, st[0])

	require.Len(t, st[0].Blacklisted, 1)
	b := st[0].Blacklisted[0]
	require.Equal(t, adv.id.String(), b.Peer)
	require.Equal(t, adv.addr, b.Addr)
	require.Equal(t, sw.d, b.Digest)
	require.Equal(t, "bad_piece", b.Reason)
	require.True(t, b.Until.After(b.Since))
	require.Equal(t, []snapshot.Blacklisted{b}, agent.s.HostStats().Blacklisted, "listed once, though banned by id and address")

	var past *snapshot.PeerStats
	for _, p := range st[0].PastPeers {
		if p.ID == adv.id.String() {
			past = &p
		}
	}
	require.NotNil(t, past, "the adversary's connection is among the past ones: %+v", st[0].PastPeers)
	require.Contains(t, past.CloseReason, scheduler.ErrBadPiece.Error())
}

// keepAliveUntilClosed keeps an adversary's connection open, saying nothing but keep-alives,
// until the agent or the test closes it.
func keepAliveUntilClosed(c *advConn) error {
	_ = c.nc.SetDeadline(time.Time{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if c.send(wire.KeepAlive{}) != nil {
					return
				}
			}
		}
	})
	for {
		if _, err := c.nextRequest(); err != nil {
			return errHangUp
		}
	}
}
