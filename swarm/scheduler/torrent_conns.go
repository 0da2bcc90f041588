package scheduler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/piece"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// announce tells the tracker about this torrent, connects to the peers it hands out and
// returns when to announce next.
func (t *torrent) announce(ctx context.Context) time.Duration {
	t.mu.Lock()
	complete := t.committed
	have, pieces := 0, 0
	if t.have != nil { // nil until the metainfo is known: the announce says no progress
		have, pieces = t.have.Count(), t.mi.NumPieces()
	}
	t.mu.Unlock()
	resp, err := t.s.tracker.Announce(ctx, announce.Request{
		Namespace: t.ns, Digest: t.d, PeerID: t.s.cfg.PeerID.String(), Addr: t.s.cfg.Advertise, Complete: complete,
		Have: have, Pieces: pieces, API: t.s.cfg.API,
	})
	if err != nil {
		if ctx.Err() == nil {
			t.s.log.Warn("announce", "digest", t.d, "err", err)
		}
		return 2 * time.Second
	}
	t.connect(ctx, resp.Peers)
	return min(max(resp.Interval(), time.Second), time.Minute)
}

// TrackerFailover publishes that a tracker request for d failed at tracker (host:port) with
// err and went on to the next tracker (snapshot.EventTrackerFailover): the hook an agent
// gives its announce client (announce.WithFailover), so the event reaches /swarm/events.
func (s *Scheduler) TrackerFailover(d digest.Digest, tracker string, err error) {
	e := Event{Kind: snapshot.EventTrackerFailover, Digest: d, Addr: tracker}
	if err != nil {
		e.Err = err.Error()
	}
	s.event(e)
}

// connect dials handed-out peers while the torrent has room for connections.
func (t *torrent) connect(ctx context.Context, peers []announce.Peer) {
	self := t.s.cfg.PeerID.String()
	for _, p := range peers {
		// Whatever the Tracker, dial only IP literals of dialable kinds: never resolve a name
		// or dial an address a stranger announced (announce.ParseAddr).
		if p.Validate() != nil {
			continue
		}
		if p.ID == self || p.Addr == t.s.cfg.Advertise || t.s.banned(addrKey(p.Addr), "id:"+p.ID) {
			continue
		}
		t.mu.Lock()
		full := len(t.conns)+len(t.dialing) >= t.s.cfg.MaxConns+t.spareLocked()
		_, connected := t.conns[piece.PeerID(p.ID)]
		// A seeder has nothing to gain from other seeders and origins.
		useless := t.committed && (p.Complete || p.Origin)
		if full || connected || useless || t.dialing[p.Addr] {
			t.mu.Unlock()
			continue
		}
		t.dialing[p.Addr] = true
		t.mu.Unlock()
		t.s.wg.Go(func() { t.dial(ctx, p) })
	}
}

func (t *torrent) dial(ctx context.Context, p announce.Peer) {
	defer func() {
		t.mu.Lock()
		delete(t.dialing, p.Addr)
		t.mu.Unlock()
	}()
	dctx, cancel := context.WithTimeout(ctx, t.s.cfg.HandshakeTimeout)
	defer cancel()
	nc, err := t.s.dial(dctx, p.Addr)
	if err != nil {
		t.ban(snapshot.Blacklisted{Addr: p.Addr, Peer: p.ID, Reason: banUnreachable}, min(5*time.Second, t.s.cfg.BlacklistTime), addrKey(p.Addr))
		t.s.event(Event{Kind: snapshot.EventDialFailed, Digest: t.d, Addr: p.Addr, Err: err.Error()})
		return
	}
	stopDeadline := context.AfterFunc(dctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	_ = nc.SetDeadline(t.s.now().Add(t.s.cfg.HandshakeTimeout))
	mine, count := t.handshake()
	err = wire.WriteHandshake(nc, mine)
	var h wire.Handshake
	if err == nil {
		h, err = wire.ReadHandshake(nc)
	}
	if err == nil {
		err = t.checkHandshake(h)
		if err == nil && p.ID != "" && h.PeerID.String() != p.ID {
			err = fmt.Errorf("%w: peer at %s is %s, tracker said %s", ErrProtocol, p.Addr, h.PeerID, p.ID)
		}
		if err == nil {
			_, err = t.s.admit(dctx, nc, h.PeerID)
		}
		if errors.Is(err, ErrProtocol) {
			// Its handshake was readable but wrong: say so before closing (docs/protocol.md §1.2).
			_ = wire.WriteMessage(nc, wire.Error{Code: wire.CodeWrongBlob, Message: err.Error()})
		}
	}
	stopped := stopDeadline()
	if err != nil || !stopped {
		if err == nil {
			err = dctx.Err()
		}
		_ = nc.Close()
		if errors.Is(err, ErrIdentity) {
			t.s.met.refused.WithLabelValues(refusedIdentity).Inc()
		}
		if violation(err) || errors.Is(err, wire.ErrBadMagic) || errors.Is(err, ErrIdentity) {
			t.ban(snapshot.Blacklisted{Addr: p.Addr, Peer: p.ID, Reason: banReason(err)}, t.s.cfg.BlacklistTime, addrKey(p.Addr))
			t.s.met.blacklisted.Inc()
			t.s.event(Event{Kind: snapshot.EventBlacklist, Digest: t.d, Addr: p.Addr, Err: err.Error()})
		}
		t.s.event(Event{Kind: snapshot.EventConnRejected, Digest: t.d, Addr: p.Addr, Err: err.Error()})
		return
	}
	_ = nc.SetDeadline(time.Time{})
	t.register(ctx, newConn(t, nc, h, p.Addr, true, p.Origin), count)
}

// accept finishes a connection a peer opened: answer its handshake and register it.
func (t *torrent) accept(ctx context.Context, nc net.Conn, h wire.Handshake, holder string) {
	addr := nc.RemoteAddr().String()
	err := t.checkHandshake(h)
	if err == nil {
		t.mu.Lock()
		err = t.makeRoomLocked(remoteIP(nc), true)
		t.mu.Unlock()
	}
	if err != nil {
		if errors.Is(err, errBusy) || errors.Is(err, errAddrBusy) {
			// An honest refusal: a handshake, then the reason (docs/protocol.md §1.2), so the
			// initiator does not take it for a broken peer.
			if mine, _ := t.handshake(); wire.WriteHandshake(nc, mine) == nil {
				_ = wire.WriteMessage(nc, wire.Error{Code: wire.CodeBusy, Message: err.Error()})
			}
		}
		_ = nc.Close()
		if errors.Is(err, ErrProtocol) {
			t.ban(snapshot.Blacklisted{Addr: addr, Peer: h.PeerID.String(), Reason: banReason(err)}, t.s.cfg.BlacklistTime, idKey(h.PeerID))
			t.s.met.blacklisted.Inc()
			t.s.event(Event{Kind: snapshot.EventBlacklist, Digest: t.d, Peer: h.PeerID.String(), Addr: addr, Err: err.Error()})
		}
		e := Event{Digest: t.d, Peer: h.PeerID.String(), Addr: addr}
		if errors.Is(err, errBusy) || errors.Is(err, errAddrBusy) {
			t.s.refuseBusy(e, err)
			return
		}
		e.Kind, e.Err = snapshot.EventConnRejected, err.Error()
		t.s.event(e)
		return
	}
	mine, count := t.handshake()
	if err := wire.WriteHandshake(nc, mine); err != nil {
		_ = nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	c := newConn(t, nc, h, addr, false, false)
	c.holder = holder
	t.register(ctx, c, count)
}

var (
	errBusy     = errors.New("torrent is at its connection limit")
	errNotReady = errors.New("torrent is not ready")
)

// handshake returns this host's handshake and the number of pieces it claims.
func (t *torrent) handshake() (wire.Handshake, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	bits := t.have.Clone()
	if t.ss != nil {
		bits = wire.NewBitfield(t.mi.NumPieces()) // pieces are revealed one by one
	}
	return wire.Handshake{
		Digest: t.d, PeerID: t.s.cfg.PeerID, Length: t.mi.Length, PieceLength: t.mi.PieceLength,
		Bitfield: bits,
	}, bits.Count()
}

func (t *torrent) checkHandshake(h wire.Handshake) error {
	select {
	case <-t.ready:
	default:
		return errNotReady
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.have == nil:
		return errNotReady
	case h.Digest != t.d:
		return fmt.Errorf("%w: handshake for %s, expected %s", ErrProtocol, h.Digest, t.d)
	case h.PeerID == t.s.cfg.PeerID:
		return fmt.Errorf("%w: connected to self", ErrProtocol)
	case h.Length != t.mi.Length || h.PieceLength != t.mi.PieceLength:
		return fmt.Errorf("%w: handshake says %d bytes in pieces of %d, metainfo %d in %d",
			ErrProtocol, h.Length, h.PieceLength, t.mi.Length, t.mi.PieceLength)
	case h.Bitfield == nil || h.Bitfield.Len() != t.mi.NumPieces():
		return fmt.Errorf("%w: handshake bitfield has the wrong length", ErrProtocol)
	}
	return nil
}

// register adds a connection whose handshakes are done. count is how many pieces this host's
// handshake claimed; if more arrived since, the peer gets a fresh bitfield.
func (t *torrent) register(ctx context.Context, c *conn, count int) {
	t.mu.Lock()
	select {
	case <-t.quit:
		t.mu.Unlock()
		_ = c.nc.Close()
		return
	default:
	}
	if old := t.conns[c.id]; old != nil {
		// Both sides dialled each other: keep the connection dialled by the smaller id, a rule
		// both sides apply alike.
		if keepFirst(old, c, t.s.cfg.PeerID) {
			t.mu.Unlock()
			_ = c.nc.Close()
			return
		}
		t.dropLocked(old)
	}
	if err := t.makeRoomLocked(c.ip, !c.outbound); err != nil {
		t.mu.Unlock()
		// Both handshakes are done, so the reason can follow.
		_ = wire.WriteMessage(c.nc, wire.Error{Code: wire.CodeBusy, Message: err.Error()})
		_ = c.nc.Close()
		t.s.refuseBusy(Event{Digest: t.d, Peer: string(c.id), Addr: c.addr, Outbound: c.outbound}, err)
		return
	}
	t.conns[c.id] = c
	t.live++ // until removed records it, after c.start
	if !c.outbound {
		t.s.joinedHost(c.nc, c.ip, 1)
	}
	t.lastActive = t.s.now()
	if t.ss != nil {
		t.ssAdd(c)
	} else if t.have.Count() != count {
		c.queue(wire.BitfieldMsg{Bitfield: t.have.Clone()})
	}
	if t.picker != nil {
		if err := t.picker.AddPeer(c.id, c.origin); err == nil {
			w, _ := t.picker.PeerBitfield(c.id, c.remote)
			t.withdraw(w)
			t.fill(c)
		}
	}
	t.s.met.conns.Inc()
	t.mu.Unlock()
	t.s.event(Event{Kind: snapshot.EventConnOpen, Digest: t.d, Peer: string(c.id), Addr: c.addr, Origin: c.origin, Outbound: c.outbound})
	c.start(ctx)
}

func keepFirst(old, c *conn, self wire.PeerID) bool {
	dialer := func(x *conn) string {
		if x.outbound {
			return self.String()
		}
		return string(x.id)
	}
	return dialer(old) <= dialer(c)
}

// dropLocked removes c from the torrent and closes it; t.mu must be held.
func (t *torrent) dropLocked(c *conn) {
	if t.unlinkLocked(c) {
		go c.close(nil)
	}
}

// unlinkLocked removes c from the torrent, freeing its slot, and reports whether it was there;
// the caller closes it. t.mu must be held.
func (t *torrent) unlinkLocked(c *conn) bool {
	if t.conns[c.id] != c {
		return false
	}
	delete(t.conns, c.id)
	if !c.outbound {
		t.s.joinedHost(c.nc, c.ip, -1)
	}
	t.s.met.conns.Dec()
	if t.ss != nil {
		t.ssRemove(c)
	}
	if t.picker != nil {
		released := t.picker.PeerGone(c.id)
		clear(c.pending)
		if len(released) > 0 {
			t.fillAll()
		}
	}
	return true
}

// removed is called by a connection when it ends, with the reason.
func (t *torrent) removed(c *conn, err error) {
	past := t.s.now()
	t.mu.Lock()
	ps := c.statsLocked()
	ps.Closed, ps.CloseReason = &past, "done"
	if err != nil {
		ps.CloseReason = err.Error()
	}
	t.dropLocked(c)
	unused := !c.requested && !c.asked.Load()
	var dropped bool
	if t.past, dropped = keepNewest(t.past, ps); dropped {
		t.pastDropped++
	}
	t.live--
	t.mu.Unlock()
	// The torrent may have been retired while c was open: its history entry is final once its
	// last connection is recorded here, bans included.
	defer t.freezeIfDone()
	t.backOffAfter(c, err, unused)
	if violation(err) {
		keys := []string{idKey(c.pid), ""}
		if c.outbound {
			keys[1] = addrKey(c.addr)
		} else if c.ip.IsValid() && (c.holder != "" || !c.ip.IsLoopback()) {
			// A fresh peer id costs nothing, so a peer that dialled in is blacklisted by
			// what it cannot change at will too: its host and certificate. Not on loopback
			// without certificates, where the address tells no peer from another (a cluster
			// on one host).
			keys[1] = hostKey(c.ip, c.holder)
		}
		t.ban(snapshot.Blacklisted{Addr: c.addr, Peer: string(c.id), Reason: banReason(err)}, t.s.cfg.BlacklistTime, keys...)
		t.s.met.blacklisted.Inc()
		t.s.event(Event{Kind: snapshot.EventBlacklist, Digest: t.d, Peer: string(c.id), Addr: c.addr, Err: err.Error()})
	}
	e := Event{Kind: snapshot.EventConnClose, Digest: t.d, Peer: string(c.id), Addr: c.addr, Bytes: c.in.Load(), Sent: c.out.Load()}
	if err != nil {
		e.Err = err.Error()
	}
	t.s.event(e)
}
