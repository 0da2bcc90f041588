package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"time"

	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/piece"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// originDepth bounds the requests outstanding with one origin.
var originDepth = 2

// fill tops up c's outstanding requests; t.mu must be held.
func (t *torrent) fill(c *conn) {
	if t.picker == nil || t.committed || t.picker.Complete() {
		return
	}
	depth := t.depth
	if c.origin {
		// Origin requests are kept few: every one outstanding is a piece other agents cannot
		// see yet and may ask the origin for too.
		depth = min(depth, originDepth)
	}
	want := depth - len(c.pending)
	if want <= 0 {
		return
	}
	// Before Next, which may be the call that starts the endgame.
	endgame := c.origin && t.picker.Endgame()
	for _, i := range t.picker.Next(c.id, want) {
		if c.origin {
			o := &t.origin[t.originReasonLocked(i, endgame)]
			o.total++
			o.unsent++
		}
		c.requested = true
		c.markUsed()
		c.pending[i] = struct{}{}
		l := t.pieceLen(i)
		for off := int64(0); off < l; off += wire.MaxBlockLength {
			c.expect[i]++
			c.queue(wire.Request{Piece: uint32(i), Offset: uint32(off), Length: uint32(min(wire.MaxBlockLength, l-off))})
		}
	}
}

// Why a piece was asked of an origin: indexes of torrent.origin and originReasons.
const (
	reasonEndgame = iota
	reasonSaturated
	reasonBlacklisted
	reasonNoPeers
	reasonLackPiece
)

// originReasons names torrent.origin's counts.
var originReasons = [...]snapshot.OriginReason{
	reasonEndgame:     snapshot.ReasonEndgame,
	reasonSaturated:   snapshot.ReasonPeersSaturated,
	reasonBlacklisted: snapshot.ReasonBlacklisted,
	reasonNoPeers:     snapshot.ReasonNoPeers,
	reasonLackPiece:   snapshot.ReasonPeersLackPiece,
}

const numOriginReasons = len(originReasons)

// originCount is the pieces asked of origins for one reason: in all, and since the last
// EventOriginFallback, sent at sent.
type originCount struct {
	total  int64
	unsent int
	sent   time.Time
}

// originReasonLocked says why piece i is being asked of an origin rather than a peer; endgame
// is whether the picker was in endgame when it chose the piece. t.mu must be held.
func (t *torrent) originReasonLocked(i int, endgame bool) int {
	if endgame {
		return reasonEndgame
	}
	peers := false
	for _, oc := range t.conns {
		if oc.origin {
			continue
		}
		if oc.remote.Has(i) {
			// It has the piece, yet it was not asked: its pipeline is full, or the piece timed
			// out with it.
			return reasonSaturated
		}
		peers = true
	}
	switch {
	case peers:
		return reasonLackPiece
	case t.bannedSomeoneLocked():
		return reasonBlacklisted
	}
	return reasonNoPeers
}

// bannedSomeoneLocked reports whether a ban this torrent made for misbehaving is still in
// force; t.mu held. A peer that could not be dialled does not count: not reaching anyone is
// ReasonNoPeers.
func (t *torrent) bannedSomeoneLocked() bool {
	if len(t.bans) == 0 {
		return false
	}
	now := t.s.now()
	for _, b := range t.bans {
		if b.Reason != banUnreachable && now.Before(b.Until) {
			return true
		}
	}
	return false
}

// flushFallbacks publishes an EventOriginFallback for each reason with pieces asked of origins
// since its last one, if that was a second ago or more (or at once when force), so the events
// stay a trickle however many pieces origins serve. The download loop calls it on its tick and
// when the download ends.
func (t *torrent) flushFallbacks(force bool) {
	now := t.s.now()
	var es []Event
	t.mu.Lock()
	for k := range t.origin {
		o := &t.origin[k]
		if o.unsent > 0 && (force || now.Sub(o.sent) >= time.Second) {
			es = append(es, Event{Kind: snapshot.EventOriginFallback, Digest: t.d, Err: string(originReasons[k]), Pieces: o.unsent})
			o.unsent, o.sent = 0, now
		}
	}
	t.mu.Unlock()
	for _, e := range es {
		t.s.event(e)
	}
}

// fillAll tops up every connection, in random order so no peer is always served first.
func (t *torrent) fillAll() {
	cs := make([]*conn, 0, len(t.conns))
	for _, c := range t.conns {
		cs = append(cs, c)
	}
	rand.Shuffle(len(cs), func(a, b int) { cs[a], cs[b] = cs[b], cs[a] })
	for _, c := range cs {
		t.fill(c)
	}
}

// cancelRequest withdraws the request of piece i from c; t.mu must be held.
func (t *torrent) cancelRequest(c *conn, i int) {
	delete(c.pending, i)
	l := t.pieceLen(i)
	for off := int64(0); off < l; off += wire.MaxBlockLength {
		c.queue(wire.Cancel{Piece: uint32(i), Offset: uint32(off), Length: uint32(min(wire.MaxBlockLength, l-off))})
	}
}

// withdraw sends cancels for origin requests the picker withdrew and refills those origins.
func (t *torrent) withdraw(reqs []piece.Request) {
	for _, r := range reqs {
		if oc := t.conns[r.Peer]; oc != nil {
			t.cancelRequest(oc, r.Piece)
			t.fill(oc)
		}
	}
}

func (t *torrent) checkTimeouts() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.picker == nil || t.committed {
		return
	}
	timed := t.picker.Timeout(t.s.now(), t.s.cfg.RequestTimeout)
	for _, r := range timed {
		c := t.conns[r.Peer]
		if c == nil {
			continue
		}
		t.cancelRequest(c, r.Piece)
		c.strikes++
		if c.strikes >= 3 {
			err := fmt.Errorf("%w: %d requests timed out", ErrStalled, c.strikes)
			go func() { c.goodbye(err); c.fail(err) }()
		}
	}
	if len(timed) > 0 {
		t.fillAll()
	}
}

// onHave records that c has piece i.
func (t *torrent) onHave(c *conn, i int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i < 0 || i >= t.mi.NumPieces() {
		return fmt.Errorf("%w: have of piece %d of %d", ErrProtocol, i, t.mi.NumPieces())
	}
	if !c.remote.Has(i) {
		c.remote.Set(i)
		c.markUsed() // progress: a peer that gains pieces is downloading, not idling
		if t.ss != nil {
			t.ssHave(c, i)
		}
	}
	if t.picker != nil {
		w, _ := t.picker.PeerHas(c.id, i)
		t.withdraw(w)
		t.fill(c)
	}
	return nil
}

func (t *torrent) onBitfield(c *conn, bits *wire.Bitfield) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if bits.Len() != t.mi.NumPieces() {
		return fmt.Errorf("%w: bitfield of %d pieces, blob has %d", ErrProtocol, bits.Len(), t.mi.NumPieces())
	}
	old := c.remote
	c.remote = bits.Clone()
	if t.ss != nil {
		t.ssBitfield(c, old)
	}
	if t.picker != nil {
		w, _ := t.picker.PeerBitfield(c.id, c.remote)
		t.withdraw(w)
		t.fill(c)
	}
	return nil
}

// wants reports whether a piece arriving from c should be kept (a request to c is
// outstanding, or the piece is still missing). Every block requested of c may arrive once,
// even after a cancel (the messages cross); any other block is a protocol error, since it
// could only waste this host's ingress.
func (t *torrent) wants(c *conn, i int) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i < 0 || i >= t.mi.NumPieces() {
		return false, fmt.Errorf("%w: piece %d of %d", ErrProtocol, i, t.mi.NumPieces())
	}
	if c.expect[i] <= 0 {
		return false, fmt.Errorf("%w: piece %d was not requested", ErrProtocol, i)
	}
	if c.expect[i]--; c.expect[i] == 0 {
		delete(c.expect, i)
	}
	_, pending := c.pending[i]
	return pending || (t.picker != nil && !t.committed && !t.have.Has(i)), nil
}

// gotPieceWritten records piece i, verified and written by c, and drops c's claim in the same
// critical section that marks the piece held.
func (t *torrent) gotPieceWritten(c *conn, i int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gotPieceLocked(c, i)
	// Held now, so nobody claims it again; only then may the claim go.
	t.unclaim(c, i)
}

// gotPieceLocked records piece i as received from c; t.mu must be held.
func (t *torrent) gotPieceLocked(c *conn, i int) {
	delete(c.pending, i)
	c.markUsed()
	l := t.pieceLen(i)
	if t.picker == nil || t.committed {
		t.tot.wasted += l
		return
	}
	cancels, err := t.picker.Received(c.id, i)
	if err != nil {
		t.tot.wasted += l
		t.s.met.pieces.WithLabelValues("duplicate").Inc()
		t.fill(c)
		return
	}
	t.have.Set(i)
	t.dirty = true
	t.tot.in += l
	t.s.bytesIn.Add(l)
	kind := "peer"
	if c.origin {
		t.tot.inOrigin += l
		kind = "origin"
	}
	t.s.met.bytes.WithLabelValues("in", kind).Add(float64(l))
	t.s.met.pieces.WithLabelValues("ok").Inc()
	for _, id := range cancels {
		if oc := t.conns[id]; oc != nil {
			t.cancelRequest(oc, i)
		}
	}
	for _, oc := range t.conns {
		if oc != c && !oc.remote.Has(i) {
			oc.queue(wire.Have{Piece: uint32(i)})
		}
	}
	if t.advancePrefix() || t.picker.Complete() {
		t.broadcast()
	}
	if t.picker.Complete() && t.downloaded.IsZero() {
		t.downloaded = t.s.now()
	}
	if t.picker.Endgame() || len(cancels) > 0 {
		t.fillAll()
	} else {
		t.fill(c)
	}
}

// advancePrefix extends the verified prefix over the pieces held; t.mu must be held.
func (t *torrent) advancePrefix() bool {
	moved := false
	for t.next < t.mi.NumPieces() && t.have.Has(t.next) {
		t.prefix += t.pieceLen(t.next)
		t.next++
		moved = true
	}
	return moved
}

// badPiece records that c sent piece i with the wrong hash.
func (t *torrent) badPiece(c *conn, i int) {
	t.mu.Lock()
	t.tot.bad++
	delete(c.pending, i)
	if t.picker != nil {
		t.picker.Release(c.id, i)
	}
	t.mu.Unlock()
	t.s.met.pieces.WithLabelValues("bad").Inc()
	t.s.event(Event{Kind: snapshot.EventPieceBad, Digest: t.d, Peer: string(c.id), Addr: c.addr, Piece: i})
}

// served records a block sent to c.
func (t *torrent) served(c *conn, r wire.Request) {
	n := int64(r.Length)
	if t.ss == nil {
		c.markUsed()
	}
	t.mu.Lock()
	t.tot.out += n
	t.s.bytesOut.Add(n)
	t.lastActive = t.s.now()
	if t.ss != nil {
		t.ssServed(c, r)
	}
	t.mu.Unlock()
	kind := "peer"
	if t.s.cfg.SeedOnly {
		kind = "origin"
	}
	t.s.met.bytes.WithLabelValues("out", kind).Add(float64(n))
}

// source opens a descriptor to serve pieces from: the partial file while downloading, the
// stored blob after.
func (t *torrent) source(ctx context.Context) (*fileSource, error) {
	for {
		t.mu.Lock()
		p, committing, ch := t.partial, t.committing, t.progress
		t.mu.Unlock()
		if committing {
			// The partial is being renamed into the store: wait for the outcome.
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if p != nil {
			if f, err := p.OpenFile(); err == nil {
				return &fileSource{f: f}, nil
			}
		}
		b, err := t.s.store.Open(ctx, t.d)
		if err != nil {
			return nil, err
		}
		return &fileSource{f: b.File(), blob: b}, nil
	}
}

// claim is a connection's right to write a piece it is receiving.
type claim struct {
	c    *conn
	last time.Time // the claimant's last write
}

// claimStale is how long a claim survives without a write before another connection that
// receives the same piece may take it over.
func (t *torrent) claimStale() time.Duration { return max(2*time.Second, t.s.cfg.RequestTimeout/4) }

// claim gives c the right to write piece i, unless another connection is receiving it and
// wrote recently.
func (t *torrent) claim(c *conn, i int) bool {
	now := t.s.now()
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	if cl := t.writers[i]; cl != nil && cl.c != c && now.Sub(cl.last) < t.claimStale() {
		return false
	}
	t.writers[i] = &claim{c: c, last: now}
	return true
}

// unclaim drops c's claim of piece i, if it still holds it.
func (t *torrent) unclaim(c *conn, i int) {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	if cl := t.writers[i]; cl != nil && cl.c == c {
		delete(t.writers, i)
	}
}

// writeBlock writes bytes of piece i received by c at off in the blob, if c still holds the
// claim (owned reports whether it did). A write into the part of the file already hashed means
// the piece is held after all: the bytes are dropped.
func (t *torrent) writeBlock(c *conn, i int, off int64, b []byte) (owned bool, err error) {
	t.mu.Lock()
	p := t.partial
	t.mu.Unlock()
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	cl := t.writers[i]
	if cl == nil || cl.c != c || p == nil {
		return false, nil
	}
	cl.last = t.s.now()
	if _, err := p.WriteAt(b, off); err != nil {
		delete(t.writers, i)
		if errors.Is(err, castore.ErrClosed) || errors.Is(err, castore.ErrRangeFrozen) || errors.Is(err, fs.ErrClosed) {
			return false, nil
		}
		go t.fail(fmt.Errorf("write piece %d: %w", i, err))
		return false, err
	}
	return true, nil
}

func (t *torrent) addWasted(n int64) {
	t.mu.Lock()
	t.tot.wasted += n
	t.mu.Unlock()
}
