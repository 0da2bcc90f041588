package scheduler

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/piece"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// clock is a test clock that moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// newIdleScheduler returns a scheduler that is not running, on clock.
func newIdleScheduler(t *testing.T, cfg Config, clk *clock) *Scheduler {
	t.Helper()
	st, err := castore.Open(t.TempDir(), castore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	cfg.SeedOnly = true
	s, err := New(cfg, Deps{Store: st, Listener: ln, Now: clk.Now})
	require.NoError(t, err)
	return s
}

// fakeConn is a connection of t that was never opened on the wire (removed records it as if
// it had closed).
func fakeConn(t *torrent, n int, origin bool) *conn {
	id := wire.RandomPeerID()
	return &conn{
		t: t, pid: id, id: piece.PeerID(id.String()), addr: fmt.Sprintf("127.0.0.%d:4000", n%250+1),
		origin: origin, outbound: true, pending: map[int]struct{}{}, expect: map[int]int{},
		remote: wire.NewBitfield(4), opened: t.s.now(),
	}
}

// A torrent keeps the newest MaxPastPeers closed connections and bans, newest first, and counts
// the connections it forgot.
func TestPastPeersAndBansAreBounded(t *testing.T) {
	t.Parallel()
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := newIdleScheduler(t, Config{BlacklistTime: time.Hour}, clk)
	tr := newTorrent(s, "ns", digest.FromString("blob"))
	const n = snapshot.MaxPastPeers + 6
	var last *conn
	for i := range n {
		c := fakeConn(tr, i, false)
		tr.live++
		var err error
		if i%2 == 1 {
			err = fmt.Errorf("%w: 3 requests timed out", ErrStalled)
		}
		clk.advance(time.Second)
		tr.removed(c, err)
		last = c
	}
	st := tr.stats()
	require.Len(t, st.PastPeers, snapshot.MaxPastPeers)
	require.Equal(t, 6, st.PastPeersDropped)
	newest := st.PastPeers[0]
	require.Equal(t, last.addr, newest.Addr, "newest first")
	require.Equal(t, string(last.id), newest.ID)
	require.NotNil(t, newest.Closed)
	require.Equal(t, clk.Now(), *newest.Closed)
	require.Contains(t, newest.CloseReason, ErrStalled.Error())
	require.Equal(t, "done", st.PastPeers[1].CloseReason, "a connection that closed without error")
	require.True(t, st.PastPeers[1].Closed.Before(*newest.Closed))

	require.Len(t, st.Blacklisted, n/2, "one ban per stalled peer (fewer than the bound)")
	b := st.Blacklisted[0]
	require.Equal(t, snapshot.Blacklisted{
		Addr: last.addr, Peer: string(last.id), Digest: tr.d, Reason: banStalled,
		Since: clk.Now(), Until: clk.Now().Add(time.Hour),
	}, b)
	for i := range n {
		tr.ban(snapshot.Blacklisted{Addr: fmt.Sprintf("127.0.1.%d:1", i+1), Reason: banProtocol}, time.Minute, fmt.Sprintf("addr:%d", i))
	}
	st = tr.stats()
	require.Len(t, st.Blacklisted, snapshot.MaxPastPeers)
	require.Equal(t, fmt.Sprintf("127.0.1.%d:1", n), st.Blacklisted[0].Addr)

	// The host lists each ban in force once, though a stalled peer is banned by id and address.
	h := s.HostStats()
	require.Len(t, h.Blacklisted, n/2+n)
	require.Equal(t, "origin", h.Role)
	require.Equal(t, s.PeerID().String(), h.PeerID)
	require.Equal(t, s.Addr(), h.Addr)
	require.Equal(t, clk.Now(), h.Time)
	clk.advance(time.Hour)
	require.Empty(t, s.HostStats().Blacklisted, "expired bans are not listed")
}

// Retired torrents are kept, newest first, up to maxHistory; one retired while a connection
// was still open gets its final snapshot (with that connection) once the connection is gone.
func TestHistoryIsBounded(t *testing.T) {
	t.Parallel()
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := newIdleScheduler(t, Config{}, clk)
	const n = maxHistory + 44
	ds := make([]digest.Digest, n)
	for i := range n {
		ds[i] = digest.FromString(fmt.Sprint(i))
		tr := newTorrent(s, "ns", ds[i])
		s.mu.Lock()
		s.torrents[ds[i]] = tr
		s.mu.Unlock()
		clk.advance(time.Second)
		tr.stop(nil)
	}
	require.Empty(t, s.Stats(), "a retired torrent is not live")
	h := s.History()
	require.Len(t, h, maxHistory)
	for k, st := range h {
		require.Equal(t, ds[n-1-k], st.Digest, "newest first")
		require.NotNil(t, st.Retired)
		require.Equal(t, "failed", st.State, "stopped before it had the blob")
	}
	require.Equal(t, clk.Now(), *h[0].Retired)

	// A torrent retired with a connection open.
	tr := newTorrent(s, "ns", digest.FromString("open"))
	c := fakeConn(tr, 1, true)
	tr.live++
	tr.stop(nil)
	h = s.History()
	require.Equal(t, tr.d, h[0].Digest)
	require.Empty(t, h[0].PastPeers)
	tr.removed(c, nil)
	h = s.History()
	require.Len(t, h, maxHistory)
	require.Len(t, h[0].PastPeers, 1, "the final snapshot has the connection that closed last")
	require.True(t, h[0].PastPeers[0].Origin)
	s.mu.Lock()
	require.Nil(t, s.history[len(s.history)-1].t, "the history let go of the torrent")
	s.mu.Unlock()
}

// originReasonLocked says why a piece went to an origin, in the order the snapshot documents.
func TestOriginReason(t *testing.T) {
	t.Parallel()
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := newIdleScheduler(t, Config{}, clk)
	tr := newTorrent(s, "ns", digest.FromString("blob"))
	origin := fakeConn(tr, 1, true)
	origin.remote = wire.NewFullBitfield(4)
	tr.conns[origin.id] = origin
	reason := func(i int, endgame bool) snapshot.OriginReason {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return originReasons[tr.originReasonLocked(i, endgame)]
	}
	require.Equal(t, snapshot.ReasonNoPeers, reason(0, false), "only the origin is connected")
	require.Equal(t, snapshot.ReasonEndgame, reason(0, true))

	tr.ban(snapshot.Blacklisted{Addr: "127.0.0.9:1", Reason: banUnreachable}, time.Minute, "addr:x")
	require.Equal(t, snapshot.ReasonNoPeers, reason(0, false), "a peer that could not be reached is not a ban")
	tr.ban(snapshot.Blacklisted{Addr: "127.0.0.9:2", Reason: banBadPiece}, time.Minute, "addr:y")
	require.Equal(t, snapshot.ReasonBlacklisted, reason(0, false))
	clk.advance(2 * time.Minute)
	require.Equal(t, snapshot.ReasonNoPeers, reason(0, false), "the ban expired")

	peer := fakeConn(tr, 2, false)
	peer.remote.Set(1)
	tr.conns[peer.id] = peer
	require.Equal(t, snapshot.ReasonPeersLackPiece, reason(0, false))
	require.Equal(t, snapshot.ReasonPeersSaturated, reason(1, false), "the peer has it but was not asked")
	require.Equal(t, snapshot.ReasonEndgame, reason(1, true))
}

// Pieces asked of origins are published at most once a second per reason, as counts, and the
// rest when the download ends.
func TestOriginFallbackEventsTrickle(t *testing.T) {
	t.Parallel()
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := newIdleScheduler(t, Config{}, clk)
	events, stop := s.Subscribe(64)
	defer stop()
	tr := newTorrent(s, "ns", digest.FromString("blob"))
	ask := func(reason, n int) {
		tr.mu.Lock()
		tr.origin[reason].total += int64(n)
		tr.origin[reason].unsent += n
		tr.mu.Unlock()
	}
	next := func() snapshot.Event {
		select {
		case e := <-events:
			return e
		default:
			return snapshot.Event{}
		}
	}
	ask(reasonNoPeers, 3)
	tr.flushFallbacks(false)
	require.Equal(t, snapshot.Event{Time: clk.Now(), Kind: snapshot.EventOriginFallback, Digest: tr.d,
		Err: string(snapshot.ReasonNoPeers), Pieces: 3}, next())
	ask(reasonNoPeers, 2)
	ask(reasonEndgame, 1)
	clk.advance(999 * time.Millisecond)
	tr.flushFallbacks(false)
	e := next()
	require.Equal(t, string(snapshot.ReasonEndgame), e.Err, "a reason not published before goes out at once")
	require.Equal(t, 1, e.Pieces)
	require.Zero(t, next(), "no_peers was published less than a second ago")
	clk.advance(time.Millisecond)
	tr.flushFallbacks(false)
	e = next()
	require.Equal(t, string(snapshot.ReasonNoPeers), e.Err)
	require.Equal(t, 2, e.Pieces, "the pieces since the last event")
	ask(reasonNoPeers, 4)
	tr.flushFallbacks(true)
	require.Equal(t, 4, next().Pieces, "the end of a download flushes the rest")
	require.Equal(t, map[snapshot.OriginReason]int64{snapshot.ReasonNoPeers: 9, snapshot.ReasonEndgame: 1}, tr.stats().OriginReasons)
}
