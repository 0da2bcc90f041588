package scheduler_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// These tests are issue 13's "idle peers can hold every slot" (P7, P9, P10) in one process:
// idle peers dial from their own 127.x.y.z source addresses, the honest ones from 127.0.0.1.

// idler is a peer that handshakes for a blob, claims nothing, requests nothing and sends a
// keepalive now and then: it holds a slot and nothing else.
type idler struct {
	nc      net.Conn
	done    chan struct{}
	mu      sync.Mutex
	errs    []wire.Error // error messages the other side sent
	hsErr   error        // why its handshake was not answered, if it was not
	stopped bool
}

// dialIdler connects from local (an IP on loopback) to addr and handshakes for mi's blob. It
// returns once the other side answered or refused.
func dialIdler(t *testing.T, local, addr string, mi metainfo.MetaInfo) *idler {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	nc, err := d.DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err)
	i := &idler{nc: nc, done: make(chan struct{})}
	t.Cleanup(i.stop)
	h := wire.Handshake{
		Digest: mi.Digest, PeerID: wire.RandomPeerID(), Length: mi.Length, PieceLength: mi.PieceLength,
		Bitfield: wire.NewBitfield(mi.NumPieces()),
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := wire.WriteHandshake(nc, h); err != nil {
		i.hsErr = err
		close(i.done)
		return i
	}
	if _, err := wire.ReadHandshake(nc); err != nil {
		i.hsErr = err
		close(i.done)
		return i
	}
	_ = nc.SetDeadline(time.Time{})
	go i.keepAlive()
	go i.read()
	return i
}

func (i *idler) keepAlive() {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-i.done:
			return
		case <-tick.C:
			if wire.WriteMessage(i.nc, wire.KeepAlive{}) != nil {
				return
			}
		}
	}
}

func (i *idler) read() {
	defer close(i.done)
	dec := wire.NewDecoder(i.nc)
	for {
		m, err := dec.ReadMessage()
		if err != nil {
			return
		}
		if e, ok := m.(wire.Error); ok {
			i.mu.Lock()
			i.errs = append(i.errs, e)
			i.mu.Unlock()
		}
	}
}

func (i *idler) stop() {
	i.mu.Lock()
	i.stopped = true
	i.mu.Unlock()
	_ = i.nc.Close()
	<-i.done
}

// closedBusy reports whether the other side closed the connection after a CodeBusy error.
func (i *idler) closedBusy() bool {
	select {
	case <-i.done:
	default:
		return false
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, e := range i.errs {
		if e.Code == wire.CodeBusy {
			return !i.stopped
		}
	}
	return false
}

func (i *idler) open() bool {
	select {
	case <-i.done:
		return false
	default:
		return true
	}
}

// counter returns the value of a counter of reg with the given reason label (0 if absent).
func counter(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// waitPeers waits until s's only torrent has n connections: an idler's handshake is answered
// before its connection joins the torrent.
func waitPeers(t *testing.T, s *scheduler.Scheduler, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		st := s.Stats()
		return len(st) == 1 && len(st[0].Peers) == n
	}, 10*time.Second, 5*time.Millisecond, "%d connections", n)
}

const (
	evictedTotal = "krakenctl_swarm_connections_evicted_total"
	refusedTotal = "krakenctl_swarm_handshakes_refused_total"
)

// clock is time.Now moved forward by the test, so that a grace period passes when the test
// says, not when a loaded machine gets round to it.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

// slotOrigin is an origin with few slots, its metrics registry and events; c is its clock
// (nil: time.Now).
func slotOrigin(t *testing.T, cfg scheduler.Config, c *clock) (*announcetest.Tracker, *node, metainfo.MetaInfo, []byte, *prometheus.Registry, *recorder) {
	t.Helper()
	ft := announcetest.New()
	blob := randomBlob(t, 2<<20+77)
	reg := prometheus.NewRegistry()
	deps := scheduler.Deps{Registerer: reg}
	if c != nil {
		deps.Now = c.now
	}
	origin, d := startOriginDeps(t, ft, blob, cfg, deps)
	rec := record(t, origin.s)
	mi, err := ft.Metainfo(t.Context(), "library/test", d)
	require.NoError(t, err)
	return ft, origin, mi, blob, reg, rec
}

// TestIdlePeersYieldToAnAgent: an origin whose every slot is held by an idle peer still serves
// a fresh agent; the idle peer that made room is told CodeBusy, counted and published.
func TestIdlePeersYieldToAnAgent(t *testing.T) {
	t.Parallel()
	const slots = 6
	var c clock
	ft, origin, mi, blob, reg, rec := slotOrigin(t, scheduler.Config{MaxConns: slots, NoRequestTimeout: -1}, &c)
	idlers := make([]*idler, slots)
	for k := range idlers {
		// Each from its own address, so that only the torrent's bound is in play.
		idlers[k] = dialIdler(t, "127.0.0."+string(rune('2'+k)), origin.s.Addr(), mi)
		require.NoError(t, idlers[k].hsErr)
		waitPeers(t, origin.s, k+1)
	}
	late := dialIdler(t, "127.0.1.1", origin.s.Addr(), mi)
	require.NoError(t, late.hsErr, "an idle newcomer gets the handshake, then the refusal")
	require.Eventually(t, late.closedBusy, 10*time.Second, 5*time.Millisecond,
		"a newcomer within the idle peers' grace is refused with CodeBusy")
	c.advance(scheduler.DefaultIdleGrace + time.Second)

	agent := startNode(t, t.TempDir(), scheduler.Config{}, ft)
	got, err := pull(t.Context(), agent.s, mi.Digest)
	require.NoError(t, err)
	require.Equal(t, blob, got)

	n := counter(t, reg, evictedTotal, "idle")
	require.Positive(t, n, "an idle peer made room")
	require.Eventually(t, func() bool {
		evicted := 0
		for _, i := range idlers {
			if i.closedBusy() {
				evicted++
			}
		}
		return float64(evicted) == n
	}, 10*time.Second, 5*time.Millisecond, "each evicted peer was told CodeBusy")
	require.GreaterOrEqual(t, counter(t, reg, refusedTotal, "busy"), 1.0)
	e := rec.waitFor(t, "eviction", func(e scheduler.Event) bool { return e.Kind == snapshot.EventEvicted })
	require.Equal(t, "idle", e.Err)
	require.Equal(t, mi.Digest, e.Digest)
}

// TestPeerInUseKeepsItsSlot: a newcomer does not take the slot of an agent that is downloading,
// however long it has been connected; it is refused.
func TestPeerInUseKeepsItsSlot(t *testing.T) {
	t.Parallel()
	// A slow origin (the 2 MiB blob takes 8 s) with one slot and a grace shorter than the
	// download, yet 8 times the gap between two pieces (64 KiB at 256 KiB/s), so that a machine
	// slowed down by the race detector and other tests does not make the agent look idle.
	const grace = 2 * time.Second
	ft, origin, mi, blob, reg, _ := slotOrigin(t, scheduler.Config{
		MaxConns: 1, IdleGrace: grace, EgressRate: 256 << 10,
	}, nil)
	agent := startNode(t, t.TempDir(), scheduler.Config{}, ft)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() { b, err := pull(ctx, agent.s, mi.Digest); ch <- result{b, err} }()
	require.Eventually(t, func() bool {
		st := agent.s.Stats()
		return len(st) == 1 && st[0].Have > 0
	}, 30*time.Second, 5*time.Millisecond, "the agent is downloading")
	// Connected for longer than the grace: only its use keeps its slot now.
	time.Sleep(grace + grace/4)
	var refused int
	for k := range 5 {
		st := agent.s.Stats()
		if len(st) == 1 && st[0].Have == st[0].Pieces {
			break // done: the agent's slot is no longer in use
		}
		i := dialIdler(t, "127.0.2."+string(rune('1'+k)), origin.s.Addr(), mi)
		require.Eventually(t, func() bool { return !i.open() }, 10*time.Second, 5*time.Millisecond)
		require.True(t, i.closedBusy(), "refused with CodeBusy")
		refused++
	}
	r := <-ch
	require.NoError(t, r.err)
	require.Equal(t, blob, r.b)
	require.Positive(t, refused, "a newcomer came while the agent downloaded")
	require.Zero(t, counter(t, reg, evictedTotal, "idle"), "the downloading agent kept its slot")
	require.GreaterOrEqual(t, counter(t, reg, refusedTotal, "busy"), float64(refused))
}

// TestRequestlessPeersAreDropped: a connection over which nothing is requested is closed after
// NoRequestTimeout with CodeBusy, though no newcomer wants its slot.
func TestRequestlessPeersAreDropped(t *testing.T) {
	t.Parallel()
	_, origin, mi, _, reg, rec := slotOrigin(t, scheduler.Config{NoRequestTimeout: 200 * time.Millisecond}, nil)
	i := dialIdler(t, "127.0.3.1", origin.s.Addr(), mi)
	require.NoError(t, i.hsErr)
	require.Eventually(t, i.closedBusy, 20*time.Second, 5*time.Millisecond, "the idle peer is dropped with CodeBusy")
	require.Equal(t, 1.0, counter(t, reg, evictedTotal, "no_requests"))
	e := rec.waitFor(t, "eviction", func(e scheduler.Event) bool { return e.Kind == snapshot.EventEvicted })
	require.Equal(t, "no_requests", e.Err)
}

// TestPerAddressCap: peers at one address get MaxConnsPerAddr connections of a torrent; the
// next is refused while those are in their grace, takes the slot of the one unused longest
// after, and another address is not affected.
func TestPerAddressCap(t *testing.T) {
	t.Parallel()
	var c clock
	_, origin, mi, _, reg, _ := slotOrigin(t, scheduler.Config{MaxConnsPerAddr: 2, NoRequestTimeout: -1}, &c)
	first := dialIdler(t, "127.0.4.1", origin.s.Addr(), mi)
	waitPeers(t, origin.s, 1)
	second := dialIdler(t, "127.0.4.1", origin.s.Addr(), mi)
	waitPeers(t, origin.s, 2)
	third := dialIdler(t, "127.0.4.1", origin.s.Addr(), mi)
	require.Eventually(t, third.closedBusy, 10*time.Second, 5*time.Millisecond, "the third from one address is refused")
	require.Equal(t, 1.0, counter(t, reg, refusedTotal, "per_address"))
	other := dialIdler(t, "127.0.4.2", origin.s.Addr(), mi)
	require.NoError(t, other.hsErr)

	// Past the grace, a newcomer from the full address replaces the one idle longest: the first.
	c.advance(scheduler.DefaultIdleGrace + time.Second)
	fourth := dialIdler(t, "127.0.4.1", origin.s.Addr(), mi)
	require.Eventually(t, first.closedBusy, 10*time.Second, 5*time.Millisecond, "the first made room")
	require.True(t, fourth.open(), "the newcomer has the slot")
	require.True(t, second.open(), "the second connection keeps its slot")
	require.True(t, other.open(), "the other address keeps its slot")
	require.GreaterOrEqual(t, counter(t, reg, evictedTotal, "per_address"), 1.0)
	require.Zero(t, counter(t, reg, evictedTotal, "idle"))
}

// TestSilentSocketsAreBounded is P7: sockets that never send a handshake are held at most
// MaxHandshakes at a time (newcomers displace the oldest), one address holds at most
// MaxConnsPerHost, and a real handshake is still answered.
func TestSilentSocketsAreBounded(t *testing.T) {
	t.Parallel()
	_, origin, mi, _, reg, _ := slotOrigin(t, scheduler.Config{MaxHandshakes: 8, MaxConnsPerHost: 30}, nil)
	var socks []net.Conn
	defer func() {
		for _, s := range socks {
			_ = s.Close()
		}
	}()
	silent := func(local string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		nc, err := d.DialContext(t.Context(), "tcp", origin.s.Addr())
		require.NoError(t, err)
		socks = append(socks, nc)
		return nc
	}
	for k := range 40 {
		silent("127.0.5." + string(rune('1'+k%4)))
	}
	// Every socket beyond the eight waiting is closed: by displacement or by the address cap.
	closed := func(nc net.Conn) bool {
		_ = nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := nc.Read(make([]byte, 1))
		return err != nil && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err)
	}
	require.Eventually(t, func() bool {
		n := 0
		for _, s := range socks {
			if closed(s) {
				n++
			}
		}
		return n >= len(socks)-8
	}, 20*time.Second, 10*time.Millisecond, "at most eight sockets wait for their handshake")
	require.Eventually(t, func() bool { return counter(t, reg, evictedTotal, "handshake") >= 40-8 }, 10*time.Second, 5*time.Millisecond,
		"each displaced socket is counted (just after it is closed)")

	// One address may hold MaxConnsPerHost: 30 waiting from one address, then the 31st is
	// refused (the handshake bound is out of the way: they send theirs).
	for k := range 30 {
		i := dialIdler(t, "127.0.5.9", origin.s.Addr(), mi)
		require.NoError(t, i.hsErr, "idler %d", k)
		require.True(t, i.open())
	}
	over := silent("127.0.5.9")
	require.Eventually(t, func() bool { return closed(over) }, 10*time.Second, 5*time.Millisecond)
	// The refusal is counted just after the socket is closed.
	require.Eventually(t, func() bool { return counter(t, reg, refusedTotal, "per_address") >= 1 }, 10*time.Second, 5*time.Millisecond)

	// An honest handshake meanwhile is answered.
	honest := dialIdler(t, "127.0.0.1", origin.s.Addr(), mi)
	require.NoError(t, honest.hsErr)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestIdlePeersYieldOnASeedingAgent is P9: an agent seeding a blob, its slots held by idle
// peers, still serves a downloader it is the only source for, once their grace is over.
func TestIdlePeersYieldOnASeedingAgent(t *testing.T) {
	t.Parallel()
	ft, _, mi, blob, _, _ := slotOrigin(t, scheduler.Config{}, nil)
	const slots = 4
	var c clock
	reg := prometheus.NewRegistry()
	seeder := startNodeDeps(t, t.TempDir(), scheduler.Config{MaxConns: slots, NoRequestTimeout: -1},
		scheduler.Deps{Tracker: ft, Registerer: reg, Now: c.now})
	got, err := pull(t.Context(), seeder.s, mi.Digest)
	require.NoError(t, err)
	require.Equal(t, blob, got)

	// Committed, the seeder has closed its connection to the origin, which had nothing more for it.
	require.Eventually(t, func() bool {
		_, err := seeder.store.Stat(mi.Digest)
		st := seeder.s.Stats()
		return err == nil && len(st) == 1 && len(st[0].Peers) == 0
	}, 20*time.Second, 5*time.Millisecond, "the seeder has committed the blob and closed its connections")

	var idlers []*idler
	for k := 0; ; k++ {
		i := dialIdler(t, "127.0.6."+string(rune('1'+k)), seeder.s.Addr(), mi)
		require.NoError(t, i.hsErr)
		require.Eventually(t, func() bool {
			st := seeder.s.Stats()
			return !i.open() || len(st[0].Peers) == k+1
		}, 10*time.Second, 5*time.Millisecond)
		if !i.open() {
			require.True(t, i.closedBusy(), "the seeder, full, refused the idle peer with CodeBusy")
			break
		}
		idlers = append(idlers, i)
	}
	require.Len(t, idlers, slots)

	// The downloader knows only the seeder: no origin.
	ft2 := announcetest.New()
	ft2.AddMetainfo(mi)
	ft2.AddPeers(announce.Peer{ID: seeder.s.PeerID().String(), Addr: seeder.s.Addr(), Complete: true})
	c.advance(scheduler.DefaultIdleGrace + time.Second)
	leech := startNode(t, t.TempDir(), scheduler.Config{}, ft2)
	got, err = pull(t.Context(), leech.s, mi.Digest)
	require.NoError(t, err)
	require.Equal(t, blob, got)
	n := counter(t, reg, evictedTotal, "idle")
	require.Positive(t, n, "an idle peer made room for the downloader")
	require.Eventually(t, func() bool {
		evicted := 0
		for _, i := range idlers {
			if i.closedBusy() {
				evicted++
			}
		}
		return float64(evicted) == n
	}, 10*time.Second, 5*time.Millisecond, "each evicted peer was told CodeBusy")
}

// TestDownloadDialsPastIdlePeers: a downloading agent whose slots idle peers took before it
// knew of any source still dials the origin the tracker hands out, evicting one of them.
func TestDownloadDialsPastIdlePeers(t *testing.T) {
	t.Parallel()
	ft, _, mi, blob, _, _ := slotOrigin(t, scheduler.Config{}, nil)
	gt := newGatedTracker(ft) // the origin stays hidden until open
	const slots = 3
	var c clock
	reg := prometheus.NewRegistry()
	agent := startNodeDeps(t, t.TempDir(), scheduler.Config{MaxConns: slots, NoRequestTimeout: -1},
		scheduler.Deps{Tracker: gt, Registerer: reg, Now: c.now})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() { b, err := pull(ctx, agent.s, mi.Digest); ch <- result{b, err} }()

	for k := 0; ; k++ {
		var i *idler
		require.Eventually(t, func() bool {
			// The agent answers once its torrent has the metainfo.
			i = dialIdler(t, "127.0.7."+string(rune('1'+k)), agent.s.Addr(), mi)
			return i.hsErr == nil
		}, 10*time.Second, 10*time.Millisecond)
		require.Eventually(t, func() bool {
			st := agent.s.Stats()
			return !i.open() || len(st[0].Peers) == k+1
		}, 10*time.Second, 5*time.Millisecond)
		if !i.open() {
			require.True(t, i.closedBusy())
			require.Equal(t, slots, k, "the idle peers hold every slot")
			break
		}
	}
	c.advance(scheduler.DefaultIdleGrace + time.Second)
	gt.open()
	r := <-ch
	require.NoError(t, r.err)
	require.Equal(t, blob, r.b)
	require.Positive(t, counter(t, reg, evictedTotal, "idle"), "an idle peer made room for the origin")
}

// A handshake still in progress (say over TLS, from a peer some round trips away) is not
// displaced by a flood of silent sockets from another address: at the bound, a newcomer
// displaces the oldest waiting of the address with the most waiting, the flood's own.
func TestSilentFloodDisplacesItsOwn(t *testing.T) {
	t.Parallel()
	_, origin, mi, _, reg, _ := slotOrigin(t, scheduler.Config{MaxHandshakes: 8}, nil)
	dial := func(local string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		nc, err := d.DialContext(t.Context(), "tcp", origin.s.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { _ = nc.Close() })
		return nc
	}
	slow := dial("127.0.7.1") // waits longest: oldest overall
	for range 27 {
		dial("127.0.7.2")
	}
	require.Eventually(t, func() bool { return counter(t, reg, evictedTotal, "handshake") >= 20 },
		10*time.Second, 5*time.Millisecond, "the flood beyond the bound is displaced")
	// The slow peer's handshake, sent only now, is answered.
	h := wire.Handshake{
		Digest: mi.Digest, PeerID: wire.RandomPeerID(), Length: mi.Length, PieceLength: mi.PieceLength,
		Bitfield: wire.NewBitfield(mi.NumPieces()),
	}
	_ = slow.SetDeadline(time.Now().Add(10 * time.Second))
	require.NoError(t, wire.WriteHandshake(slow, h))
	_, err := wire.ReadHandshake(slow)
	require.NoError(t, err, "the flood displaced a handshake from another address")
	// A displaced socket is counted once, as evicted, not also as a refused handshake: the
	// flood's sockets fail their handshake read as soon as they are displaced, long before the
	// slow one's round trip, and the seven still waiting are within the handshake timeout.
	require.Zero(t, counter(t, reg, refusedTotal, "protocol"), "displaced sockets counted as protocol errors")
}

// A peer that asks a super-seeding origin for one byte now and then makes no progress and
// must not keep its slot for it: only pieces sent in full, and new pieces announced, are use.
// Two such sippers hold an origin's two slots; past the grace, a fresh agent evicts them.
func TestSippersDoNotHoldSlots(t *testing.T) {
	t.Parallel()
	var c clock
	ft, origin, mi, blob, reg, _ := slotOrigin(t, scheduler.Config{MaxConns: 2, NoRequestTimeout: -1}, &c)
	type sipper struct {
		nc    net.Conn
		sips  chan struct{} // a sip answered
		piece uint32
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var sippers []*sipper
	for k := range 2 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.8." + string(rune('1'+k)))}}
		nc, err := d.DialContext(ctx, "tcp", origin.s.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { _ = nc.Close() })
		require.NoError(t, wire.WriteHandshake(nc, wire.Handshake{Digest: mi.Digest, PeerID: wire.RandomPeerID(),
			Length: mi.Length, PieceLength: mi.PieceLength, Bitfield: wire.NewBitfield(mi.NumPieces())}))
		_, err = wire.ReadHandshake(nc)
		require.NoError(t, err)
		sp := &sipper{nc: nc, sips: make(chan struct{}, 64)}
		dec := wire.NewDecoder(nc)
		for {
			m, err := dec.ReadMessage()
			require.NoError(t, err)
			if h, ok := m.(wire.Have); ok {
				sp.piece = h.Piece
				break
			}
		}
		go func() {
			for {
				m, err := dec.ReadMessage()
				if err != nil {
					return
				}
				if _, ok := m.(wire.Piece); ok {
					sp.sips <- struct{}{}
				}
			}
		}()
		go func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if wire.WriteMessage(nc, wire.Request{Piece: sp.piece, Length: 1}) != nil {
						return
					}
				}
			}
		}()
		sippers = append(sippers, sp)
	}
	waitPeers(t, origin.s, 2)
	c.advance(scheduler.DefaultIdleGrace + time.Second)
	for _, sp := range sippers { // each sipped since the grace passed
		for range 2 {
			<-sp.sips
		}
	}
	agent := startNode(t, t.TempDir(), scheduler.Config{}, ft)
	pctx, pcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer pcancel()
	got, err := pull(pctx, agent.s, mi.Digest)
	require.NoError(t, err, "the sippers kept the agent out")
	require.Equal(t, blob, got)
	require.Positive(t, counter(t, reg, evictedTotal, "idle"), "a sipper made room")
}
