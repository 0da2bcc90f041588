package scheduler

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// Connection slots: who may hold one, and who loses it (docs/protocol.md, "Connection slots").
//
// A slot costs a descriptor, buffers and, on a super-seeding origin, a share of the reveals, so
// a peer that holds one without using it takes it from a peer that would. First come, first
// served let 1,024 idle connections per origin stop every download of a blob. So:
//
//   - The scheduler accepts at most Config.MaxHandshakes connections whose handshake has not
//     arrived. At the bound a newcomer displaces the one that has waited longest from the
//     address with the most waiting: an honest initiator sends its handshake at once, so the
//     oldest waiting is the least likely to be honest, a flood of silent sockets cannot lock
//     honest peers out, and a flood from a few addresses displaces its own sockets, not the
//     handshakes of peers elsewhere.
//   - Peers at one IP address may hold Config.MaxConnsPerHost connections they opened, waiting
//     or joined, over all torrents, and Config.MaxConnsPerAddr per torrent. Connections this
//     host dialled are not counted: their addresses came from the tracker, not the peer.
//   - A connection is in use while something is requested of it, and for Config.IdleGrace after
//     it last served or received a request or a piece, or announced a new piece (progress).
//     On a super-seeding origin a request is use only once it completes a piece not sent to
//     the peer before (ssSent): asking for a byte now and then held a slot for nothing.
//     When a torrent is full, a newcomer takes the slot of the connection unused for longest,
//     if one is unused beyond the grace; a newcomer from an address at its cap takes the slot
//     of that address's connection unused longest. Otherwise the newcomer is refused.
//   - A connection over which neither side has requested anything for Config.NoRequestTimeout
//     is closed whether or not a newcomer waits.
//   - A connection this host dialled to an origin is never evicted: the download depends on it.
//
// An evicted peer gets an error message with wire.CodeBusy, like a refused one.

// Reasons in the evicted and refused metrics and in the events' Err.
const (
	reasonIdle       = "idle"        // evicted: a newcomer needed the slot
	reasonNoRequests = "no_requests" // evicted: nothing requested either way for NoRequestTimeout
	reasonPerAddress = "per_address" // evicted for, or refused as, one more connection from a full address
	reasonHandshake  = "handshake"   // evicted: displaced while waiting for its handshake
	reasonBusy       = "busy"        // refused: the torrent is full of connections in use
)

var (
	errAddrBusy = errors.New("too many connections from this address")
	errEvicted  = errors.New("evicted")
	// errPeerBusy: the peer closed the connection with CodeBusy (refused, or evicted).
	errPeerBusy = errors.New("peer has no slot (busy)")
)

// markUsed records that the connection was of use now.
func (c *conn) markUsed() { c.used.Store(c.t.s.now().UnixNano()) }

// idleFor is how long the connection has gone unused: 0 while a request is outstanding either
// way. t.mu must be held (lock order: t.mu, then c.wmu).
func (c *conn) idleFor(now time.Time) time.Duration {
	if len(c.pending) > 0 || c.sending.Load() {
		return 0
	}
	c.wmu.Lock()
	serving := len(c.serve) > 0
	c.wmu.Unlock()
	if serving {
		return 0
	}
	last := c.opened
	if u := c.used.Load(); u > last.UnixNano() {
		last = time.Unix(0, u)
	}
	return now.Sub(last)
}

// protected reports whether the torrent depends on c whatever its use: a connection this host
// dialled to an origin.
func (c *conn) protected() bool { return c.outbound && c.origin }

// remoteIP is nc's remote IP address, unmapped; invalid when nc is not on IP.
func remoteIP(nc net.Conn) netip.Addr {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// gate holds the scheduler-wide bounds on the connections peers open.
type gate struct {
	mu      sync.Mutex
	waiting map[net.Conn]waiter     // accepted, handshake not yet read
	entered map[net.Conn]netip.Addr // in incoming, not yet registered with a torrent
	// displaced: closed by enter while waiting (counted as evicted), until its incoming leaves
	displaced map[net.Conn]struct{}
	pending   map[netip.Addr]int // entered, by address
	joined    map[netip.Addr]int // registered with a torrent, by address (inbound only)
}

type waiter struct {
	ip    netip.Addr
	since time.Time
}

func newGate() *gate {
	return &gate{
		waiting: map[net.Conn]waiter{}, entered: map[net.Conn]netip.Addr{}, displaced: map[net.Conn]struct{}{},
		pending: map[netip.Addr]int{}, joined: map[netip.Addr]int{},
	}
}

// enter admits a connection just accepted, or returns why not. displaced is a connection that
// waited longest for its handshake, closed to make room (nil if none).
func (s *Scheduler) enter(nc net.Conn, ip netip.Addr, now time.Time) (displaced net.Conn, refused error) {
	g := s.gate
	g.mu.Lock()
	if ip.IsValid() && g.pending[ip]+g.joined[ip] >= s.cfg.MaxConnsPerHost {
		g.mu.Unlock()
		return nil, errAddrBusy
	}
	if len(g.waiting) >= s.cfg.MaxHandshakes {
		displaced = g.displaceLocked(ip)
		delete(g.waiting, displaced) // its incoming's leave still releases its pending count
		g.displaced[displaced] = struct{}{}
	}
	g.waiting[nc] = waiter{ip: ip, since: now}
	g.entered[nc] = ip
	g.pending[ip]++
	g.mu.Unlock()
	if displaced != nil {
		// Outside the lock: closing a TLS connection whose handshake finished writes an
		// alert, and every accept waits for this lock.
		_ = displaced.Close()
	}
	return displaced, nil
}

// displaceLocked returns the waiting connection a newcomer from ip displaces: the one waiting
// longest among those of the address with the most waiting, the newcomer counted. Oldest
// overall let a flood of silent sockets from one address displace every other address's
// handshakes in progress, which over TLS take round trips and a signature (MaxHandshakes
// connects within that time were enough); now a flood displaces its own.
// g.mu held.
func (g *gate) displaceLocked(ip netip.Addr) net.Conn {
	per := map[netip.Addr]int{ip: 1}
	for _, w := range g.waiting {
		per[w.ip]++
	}
	var victim net.Conn
	var vw waiter
	for wc, w := range g.waiting {
		if victim == nil || per[w.ip] > per[vw.ip] || per[w.ip] == per[vw.ip] && w.since.Before(vw.since) {
			victim, vw = wc, w
		}
	}
	return victim
}

// unpendLocked moves nc out of the entered connections; g.mu held.
func (g *gate) unpendLocked(nc net.Conn) {
	ip, ok := g.entered[nc]
	if !ok {
		return
	}
	delete(g.entered, nc)
	if g.pending[ip]--; g.pending[ip] <= 0 {
		delete(g.pending, ip)
	}
}

// handshook records that nc's handshake arrived: it no longer waits.
func (s *Scheduler) handshook(nc net.Conn) {
	s.gate.mu.Lock()
	delete(s.gate.waiting, nc)
	s.gate.mu.Unlock()
}

// leave ends what enter began: nc left incoming, registered with a torrent or not.
func (s *Scheduler) leave(nc net.Conn) {
	g := s.gate
	g.mu.Lock()
	delete(g.waiting, nc)
	delete(g.displaced, nc)
	g.unpendLocked(nc)
	g.mu.Unlock()
}

// wasDisplaced reports whether enter closed nc to make room: its handshake fails because of
// that, is counted as evicted already, and is not a refusal.
func (s *Scheduler) wasDisplaced(nc net.Conn) bool {
	s.gate.mu.Lock()
	defer s.gate.mu.Unlock()
	_, ok := s.gate.displaced[nc]
	return ok
}

// joinedHost counts (delta +1) an inbound connection registered with a torrent, which stops
// counting as entered, or uncounts it (-1) when it leaves the torrent.
func (s *Scheduler) joinedHost(nc net.Conn, ip netip.Addr, delta int) {
	g := s.gate
	g.mu.Lock()
	g.unpendLocked(nc)
	if g.joined[ip] += delta; g.joined[ip] <= 0 {
		delete(g.joined, ip)
	}
	g.mu.Unlock()
}

// makeRoomLocked finds a slot for a newcomer at ip (inbound: the peer dialled this host),
// evicting the connection unused longest if it must; it returns the error to refuse the
// newcomer with, errBusy or errAddrBusy, when there is no slot. t.mu must be held.
func (t *torrent) makeRoomLocked(ip netip.Addr, inbound bool) error {
	now := t.s.now()
	if inbound && ip.IsValid() {
		n := 0
		for _, c := range t.conns {
			if !c.outbound && c.ip == ip {
				n++
			}
		}
		if n >= t.s.cfg.MaxConnsPerAddr {
			v := t.victimLocked(now, func(c *conn) bool { return !c.outbound && c.ip == ip })
			if v == nil {
				return errAddrBusy
			}
			t.evictLocked(v, reasonPerAddress)
		}
	}
	if len(t.conns) < t.s.cfg.MaxConns {
		return nil
	}
	v := t.victimLocked(now, nil)
	if v == nil {
		return errBusy
	}
	t.evictLocked(v, reasonIdle)
	return nil
}

// victimLocked returns the connection to evict for a newcomer: among those that match (nil
// matches all), are not protected and have been unused for longer than the grace, the one
// unused longest; between equals, one from the address holding most connections. t.mu held.
func (t *torrent) victimLocked(now time.Time, match func(*conn) bool) *conn {
	var best *conn
	var bestIdle time.Duration
	var perIP map[netip.Addr]int
	for _, c := range t.conns {
		if c.protected() || (match != nil && !match(c)) {
			continue
		}
		idle := c.idleFor(now)
		if idle < t.s.cfg.IdleGrace {
			continue
		}
		if best == nil || idle > bestIdle {
			best, bestIdle = c, idle
			continue
		}
		if idle == bestIdle {
			if perIP == nil {
				perIP = map[netip.Addr]int{}
				for _, o := range t.conns {
					perIP[o.ip]++
				}
			}
			if perIP[c.ip] > perIP[best.ip] {
				best = c
			}
		}
	}
	return best
}

// evictLocked frees c's slot at once and closes c with a CodeBusy error message, counted and
// published with reason. t.mu must be held.
func (t *torrent) evictLocked(c *conn, reason string) {
	if !t.unlinkLocked(c) {
		return
	}
	t.s.met.evicted.WithLabelValues(reason).Inc()
	err := fmt.Errorf("%w (%s)", errEvicted, reason)
	go func() {
		c.farewell(wire.CodeBusy, "connection slot taken back: "+reason)
		c.close(err)
		t.s.event(Event{Kind: snapshot.EventEvicted, Digest: t.d, Peer: string(c.id), Addr: c.addr, Err: reason})
	}()
}

// sweepIdle closes connections over which nothing was requested either way for
// Config.NoRequestTimeout; housekeeping calls it every second.
func (t *torrent) sweepIdle(now time.Time) {
	limit := t.s.cfg.NoRequestTimeout
	if limit < 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.conns {
		if !c.protected() && !c.requested && !c.asked.Load() && now.Sub(c.opened) >= limit {
			t.evictLocked(c, reasonNoRequests)
		}
	}
}

// refuseBusy counts and publishes a newcomer refused for want of a slot.
func (s *Scheduler) refuseBusy(e Event, err error) {
	reason := reasonBusy
	if errors.Is(err, errAddrBusy) {
		reason = reasonPerAddress
	}
	s.met.refused.WithLabelValues(reason).Inc()
	e.Kind, e.Err = snapshot.EventConnRejected, err.Error()
	s.event(e)
}

// spareLocked counts the slots of a full torrent held by connections peers opened and left
// unused beyond the grace, so that a download whose slots idle peers hold still dials the peers
// the tracker hands out (which then evict them). Connections this host dialled do not count:
// evicting one to dial another would only trade idle peers. t.mu held.
func (t *torrent) spareLocked() int {
	if len(t.conns) < t.s.cfg.MaxConns {
		return 0
	}
	now, n := t.s.now(), 0
	for _, c := range t.conns {
		if !c.outbound && c.idleFor(now) >= t.s.cfg.IdleGrace {
			n++
		}
	}
	return n
}

// backOffAfter keeps this host from dialling a peer again at once after it said it has no slot
// (for IdleGrace: by then its connections may be evictable), or after this host dropped the
// connection for going without requests (for NoRequestTimeout): dialling again would only
// churn. Origins are exempt: a download depends on them. unused: nothing was requested over
// the connection either way.
func (t *torrent) backOffAfter(c *conn, err error, unused bool) {
	if !c.outbound || c.origin {
		return
	}
	var d time.Duration
	switch {
	case errors.Is(err, errPeerBusy):
		d = t.s.cfg.IdleGrace
	case errors.Is(err, errEvicted) && unused:
		d = t.s.cfg.NoRequestTimeout
	}
	if d <= 0 {
		return
	}
	reason := banBusy
	if !errors.Is(err, errPeerBusy) {
		reason = banUnused
	}
	t.s.backOff(c.addr, reason, d)
}
