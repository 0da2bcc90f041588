package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/piece"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// torrent is the swarm state of one blob on this host: downloading (picker set, partial open)
// or seeding (committed). Fields after mu are guarded by it.
type torrent struct {
	s        *Scheduler
	d        digest.Digest
	ns       string
	quit     chan struct{} // closed by stop
	stopOnce sync.Once
	ready    chan struct{} // closed once metainfo and partial are set up, or the torrent failed
	poke     chan struct{} // asks the download loop to announce now
	// writeMu serialises writes to the partial file and guards writers. Lock order: mu, then
	// writeMu.
	writeMu sync.Mutex
	writers map[int]*claim // pieces being received, by the connection receiving each

	mu         sync.Mutex
	mi         metainfo.MetaInfo
	picker     *piece.Picker // nil when seeding a stored blob
	ss         *superSeed    // set when a seed-only scheduler super-seeds this blob
	have       *wire.Bitfield
	partial    *castore.Partial
	committed  bool
	checked    bool // every piece is held and the whole blob's digest matched
	committing bool // Partial.Commit is running: the partial is being closed
	err        error
	conns      map[piece.PeerID]*conn
	dialing    map[string]bool
	next       int   // lowest piece not in the prefix
	prefix     int64 // bytes of verified pieces in order from 0
	progress   chan struct{}
	dirty      bool
	depth      int
	started    time.Time
	downloaded time.Time // when the last missing piece was held
	checkedAt  time.Time // when checked became true
	finished   time.Time
	lastActive time.Time
	tot        totals
}

type totals struct {
	in, inOrigin, out, wasted int64
	bad, resumed              int
}

func newTorrent(s *Scheduler, ns string, d digest.Digest) *torrent {
	now := s.now()
	return &torrent{
		s: s, d: d, ns: ns,
		quit:     make(chan struct{}),
		ready:    make(chan struct{}),
		poke:     make(chan struct{}, 1),
		conns:    map[piece.PeerID]*conn{},
		dialing:  map[string]bool{},
		writers:  map[int]*claim{},
		progress: make(chan struct{}),
		started:  now, lastActive: now,
	}
}

// newSeedTorrent returns a torrent seeding the stored blob of mi; stripe of stripes is the
// super-seeding stripe of an origin (superseed.go).
func newSeedTorrent(s *Scheduler, mi metainfo.MetaInfo, stripe, stripes int) *torrent {
	t := newTorrent(s, "", mi.Digest)
	t.setMetainfo(mi)
	t.have = wire.NewFullBitfield(mi.NumPieces())
	t.next = mi.NumPieces()
	t.prefix = mi.Length
	t.committed = true
	t.finished = t.started
	if s.cfg.SeedOnly && !s.cfg.NoSuperSeed {
		t.ss = newSuperSeed(mi.NumPieces(), s.cfg.window(mi.NumPieces()), stripe, stripes)
	}
	close(t.ready)
	s.event(Event{Kind: EventTorrentSeed, Digest: t.d, Bytes: mi.Length})
	return t
}

func (t *torrent) setMetainfo(mi metainfo.MetaInfo) {
	t.mi = mi
	t.depth = max(2, int(t.s.cfg.PipelineBytes/max(1, mi.PieceLength)))
}

// originDepth bounds the requests outstanding with one origin.
var originDepth = 2

func (t *torrent) pieceLen(i int) int64 { _, n := t.mi.PieceRange(i); return n }

// stop ends the torrent: its connections close, its download loop returns (saving progress),
// readers waiting for bytes get err if the blob is not committed (nil err means ErrClosed).
func (t *torrent) stop(err error) {
	t.stopOnce.Do(func() {
		if err == nil {
			err = ErrClosed
		}
		t.mu.Lock()
		if t.err == nil && !t.committed {
			t.err = err
		}
		conns := make([]*conn, 0, len(t.conns))
		for _, c := range t.conns {
			conns = append(conns, c)
		}
		t.broadcast()
		t.mu.Unlock()
		close(t.quit)
		for _, c := range conns {
			c.close(nil)
		}
		t.s.removeTorrent(t)
	})
}

// fail records a terminal error and stops the torrent, so that the next Open starts afresh.
func (t *torrent) fail(err error) {
	t.s.log.Warn("download failed", "digest", t.d, "err", err)
	t.s.event(Event{Kind: EventTorrentFailed, Digest: t.d, Err: err.Error()})
	t.s.met.failed.Inc()
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
	t.stop(err)
}

// broadcast wakes everyone waiting for progress; t.mu must be held.
func (t *torrent) broadcast() {
	close(t.progress)
	t.progress = make(chan struct{})
}

// released is how many bytes readers may see: the verified prefix, less the last byte until
// the whole blob's digest is checked. The check, not the commit, releases the last byte: the
// commit's sync and rename change no byte a reader sees.
func (t *torrent) released() int64 {
	if t.committed || t.checked {
		return t.mi.Length
	}
	if t.prefix == t.mi.Length {
		return t.prefix - 1
	}
	return t.prefix
}

func (t *torrent) idleSince(now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.committed {
		return 0
	}
	return now.Sub(t.lastActive)
}

func (t *torrent) open(ctx context.Context) (*Download, error) {
	select {
	case <-t.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("open %s: %w", t.d, ctx.Err())
	}
	for {
		t.mu.Lock()
		if t.err != nil {
			err := t.err
			t.mu.Unlock()
			return nil, fmt.Errorf("open %s: %w", t.d, err)
		}
		if t.committing {
			// The partial is being renamed into the store: wait for the outcome.
			ch := t.progress
			t.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("open %s: %w", t.d, ctx.Err())
			}
		}
		if p := t.partial; p != nil && !t.committed {
			f, err := p.OpenFile()
			t.mu.Unlock()
			if err != nil {
				return nil, fmt.Errorf("open %s: %w", t.d, err)
			}
			return &Download{t: t, f: f, size: t.mi.Length}, nil
		}
		t.mu.Unlock()
		break
	}
	b, err := t.s.store.Open(ctx, t.d)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", t.d, err)
	}
	return &Download{blob: b, f: b.File(), size: b.Size()}, nil
}

func (t *torrent) wait(ctx context.Context, off int64) (int64, error) {
	for {
		t.mu.Lock()
		if rel := t.released(); off < rel {
			t.mu.Unlock()
			return rel, nil
		}
		if t.err != nil {
			err := t.err
			t.mu.Unlock()
			return 0, fmt.Errorf("download %s: %w", t.d, err)
		}
		ch := t.progress
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// download is the life of a torrent started by Open: set up, then announce, time out requests
// and save progress until stopped.
func (t *torrent) download() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-t.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	t.s.event(Event{Kind: EventTorrentStart, Digest: t.d})
	if err := t.prepare(ctx); err != nil {
		t.fail(err) // records err and forgets the torrent before anyone waiting sees it
		close(t.ready)
		return
	}
	close(t.ready)
	var hashing sync.WaitGroup
	hashing.Go(func() { t.hashLoop(ctx) })
	defer func() {
		cancel()
		hashing.Wait()
		t.saveState()
		t.mu.Lock()
		p := t.partial
		if !t.committed {
			t.partial = nil
		}
		t.mu.Unlock()
		if p != nil {
			_ = p.Close()
		}
	}()

	announceT := time.NewTimer(0)
	defer announceT.Stop()
	tick := time.NewTicker(min(time.Second, t.s.cfg.RequestTimeout/4))
	defer tick.Stop()
	save := time.NewTicker(t.s.cfg.SaveInterval)
	defer save.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.poke:
			announceT.Reset(0)
		case <-announceT.C:
			announceT.Reset(t.announce(ctx))
		case <-tick.C:
			t.checkTimeouts()
		case <-save.C:
			t.saveState()
		}
	}
}

// prepare fetches the metainfo and opens (or resumes) the partial download.
func (t *torrent) prepare(ctx context.Context) error {
	var mi metainfo.MetaInfo
	var err error
	for attempt := 0; ; attempt++ {
		mi, err = t.s.tracker.Metainfo(ctx, t.ns, t.d)
		// Only "no tracker answered" is worth retrying; a 4xx would be the same next time.
		if err == nil || !errors.Is(err, announce.ErrUnavailable) || attempt == 4 {
			break
		}
		select {
		case <-time.After(time.Duration(250<<attempt) * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return fmt.Errorf("get metainfo: %w", err)
	}
	if mi.Digest != t.d {
		return fmt.Errorf("get metainfo: tracker answered for %s", mi.Digest)
	}
	if err := mi.Validate(); err != nil {
		return fmt.Errorf("get metainfo: %w", err)
	}
	p, err := t.s.store.OpenPartial(t.d, mi.Length)
	if errors.Is(err, castore.ErrExists) {
		t.mu.Lock()
		t.setMetainfo(mi)
		t.have = wire.NewFullBitfield(mi.NumPieces())
		t.committed, t.prefix, t.next = true, mi.Length, mi.NumPieces()
		t.finished = t.s.now()
		t.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("open partial download: %w", err)
	}
	pk, err := piece.New(piece.Config{Pieces: mi.NumPieces(), Window: t.s.cfg.window(mi.NumPieces())})
	if err != nil {
		_ = p.Close()
		return err
	}
	have := wire.NewBitfield(mi.NumPieces())
	t.mu.Lock()
	t.setMetainfo(mi)
	t.mu.Unlock()
	resumed := t.resume(ctx, p, mi, have)
	for i := range have.All() {
		_, _ = pk.Received("", i)
	}
	t.mu.Lock()
	t.picker, t.have, t.partial = pk, have, p
	t.tot.resumed = resumed
	t.advancePrefix()
	t.mu.Unlock()
	if resumed > 0 {
		t.s.log.Info("resumed download", "digest", t.d, "pieces", resumed, "of", mi.NumPieces())
		t.s.event(Event{Kind: EventTorrentResume, Digest: t.d, Pieces: resumed})
	}
	return nil
}

// progressState is what a partial download saves for resume.
type progressState struct {
	PieceLength int64  `json:"piece_length"`
	Length      int64  `json:"length"`
	Have        []byte `json:"have"`
}

// resume marks in have the pieces saved as written, after checking each against its hash.
func (t *torrent) resume(ctx context.Context, p *castore.Partial, mi metainfo.MetaInfo, have *wire.Bitfield) int {
	raw, err := p.State()
	if err != nil || raw == nil {
		return 0
	}
	var st progressState
	if json.Unmarshal(raw, &st) != nil || st.PieceLength != mi.PieceLength || st.Length != mi.Length {
		return 0
	}
	saved, err := wire.ParseBitfield(mi.NumPieces(), st.Have)
	if err != nil {
		return 0
	}
	n := 0
	buf := make([]byte, readBuffer)
	for i := range saved.All() {
		if ctx.Err() != nil {
			break
		}
		off, l := mi.PieceRange(i)
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(p, off, l), buf); err == nil &&
			[sha256.Size]byte(h.Sum(nil)) == mi.PieceSums[i] {
			have.Set(i)
			n++
		}
	}
	return n
}

// saveState makes the pieces written so far durable for resume.
func (t *torrent) saveState() {
	t.mu.Lock()
	if !t.dirty || t.partial == nil || t.committed {
		t.mu.Unlock()
		return
	}
	p := t.partial
	bits, _ := t.have.MarshalBinary()
	t.dirty = false
	st := progressState{PieceLength: t.mi.PieceLength, Length: t.mi.Length, Have: bits}
	t.mu.Unlock()
	raw, _ := json.Marshal(st)
	if err := p.SaveState(raw); err != nil {
		t.s.log.Warn("save download progress", "digest", t.d, "err", err)
		t.mu.Lock()
		t.dirty = true
		t.mu.Unlock()
	}
}

// hashLoop hashes the verified prefix as it grows and commits the blob once it is whole.
func (t *torrent) hashLoop(ctx context.Context) {
	for {
		t.mu.Lock()
		p, target, ch, size, committed := t.partial, t.prefix, t.progress, t.mi.Length, t.committed
		t.mu.Unlock()
		if committed || p == nil {
			return
		}
		if p.Hashed() < target {
			if err := p.HashTo(ctx, target); err != nil {
				if ctx.Err() == nil {
					t.fail(fmt.Errorf("hash download: %w", err))
				}
				return
			}
		}
		if target == size {
			if err := p.Verify(ctx); err != nil {
				if ctx.Err() == nil {
					t.fail(fmt.Errorf("check download: %w", err))
				}
				return
			}
			t.mu.Lock()
			t.checked, t.checkedAt = true, t.s.now()
			t.broadcast()
			t.mu.Unlock()
			t.commit(ctx, p)
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

func (t *torrent) commit(ctx context.Context, p *castore.Partial) {
	t.mu.Lock()
	t.committing = true
	t.mu.Unlock()
	_, err := p.Commit(ctx)
	if err != nil {
		t.mu.Lock()
		t.committing = false
		t.broadcast()
		t.mu.Unlock()
		if ctx.Err() == nil {
			t.fail(fmt.Errorf("commit download: %w", err))
		}
		return
	}
	if data, err := t.mi.Encode(); err == nil {
		if err := t.s.store.PutMeta(t.d, MetainfoKind, data); err != nil {
			t.s.log.Warn("store metainfo", "digest", t.d, "err", err)
		}
	}
	now := t.s.now()
	t.mu.Lock()
	t.committed, t.committing = true, false
	t.partial = nil
	t.finished, t.lastActive = now, now
	elapsed := now.Sub(t.started)
	tot := t.tot
	t.broadcast()
	var seeders []*conn
	for _, c := range t.conns {
		if c.remote.Full() {
			seeders = append(seeders, c)
		} else {
			c.queue(wire.Complete{})
		}
	}
	t.mu.Unlock()
	for _, c := range seeders {
		c.close(nil)
	}
	t.s.met.downloadSeconds.Observe(elapsed.Seconds())
	t.s.event(Event{Kind: EventTorrentDone, Digest: t.d, Bytes: t.mi.Length, Duration: elapsed})
	t.s.log.Info("download complete", "digest", t.d, "bytes", t.mi.Length, "seconds", elapsed.Seconds(),
		"from_origin", tot.inOrigin, "from_peers", tot.in-tot.inOrigin, "wasted", tot.wasted)
	select {
	case t.poke <- struct{}{}:
	default:
	}
}

// announce tells the tracker about this torrent, connects to the peers it hands out and
// returns when to announce next.
func (t *torrent) announce(ctx context.Context) time.Duration {
	t.mu.Lock()
	complete := t.committed
	t.mu.Unlock()
	resp, err := t.s.tracker.Announce(ctx, announce.Request{
		Namespace: t.ns, Digest: t.d, PeerID: t.s.cfg.PeerID.String(), Addr: t.s.cfg.Advertise, Complete: complete,
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

// connect dials handed-out peers while the torrent has room for connections.
func (t *torrent) connect(ctx context.Context, peers []announce.Peer) {
	self := t.s.cfg.PeerID.String()
	for _, p := range peers {
		if p.ID == self || p.Addr == t.s.cfg.Advertise || t.s.banned(addrKey(p.Addr), "id:"+p.ID) {
			continue
		}
		t.mu.Lock()
		full := len(t.conns)+len(t.dialing) >= t.s.cfg.MaxConns
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
		t.s.ban(addrKey(p.Addr), min(5*time.Second, t.s.cfg.BlacklistTime))
		t.s.event(Event{Kind: EventDialFailed, Digest: t.d, Addr: p.Addr, Err: err.Error()})
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
		if violation(err) || errors.Is(err, wire.ErrBadMagic) {
			t.s.ban(addrKey(p.Addr), t.s.cfg.BlacklistTime)
			t.s.met.blacklisted.Inc()
			t.s.event(Event{Kind: EventBlacklist, Digest: t.d, Addr: p.Addr, Err: err.Error()})
		}
		t.s.event(Event{Kind: EventConnRejected, Digest: t.d, Addr: p.Addr, Err: err.Error()})
		return
	}
	_ = nc.SetDeadline(time.Time{})
	t.register(ctx, newConn(t, nc, h, p.Addr, true, p.Origin), count)
}

// accept finishes a connection a peer opened: answer its handshake and register it.
func (t *torrent) accept(ctx context.Context, nc net.Conn, h wire.Handshake) {
	addr := nc.RemoteAddr().String()
	err := t.checkHandshake(h)
	if err == nil {
		t.mu.Lock()
		if len(t.conns) >= t.s.cfg.MaxConns {
			err = errBusy
		}
		t.mu.Unlock()
	}
	if err != nil {
		if errors.Is(err, errBusy) {
			// An honest refusal: a handshake, then the reason (docs/protocol.md §1.2), so the
			// initiator does not take it for a broken peer.
			if mine, _ := t.handshake(); wire.WriteHandshake(nc, mine) == nil {
				_ = wire.WriteMessage(nc, wire.Error{Code: wire.CodeBusy, Message: err.Error()})
			}
		}
		_ = nc.Close()
		if errors.Is(err, ErrProtocol) {
			t.s.ban(idKey(h.PeerID), t.s.cfg.BlacklistTime)
			t.s.met.blacklisted.Inc()
			t.s.event(Event{Kind: EventBlacklist, Digest: t.d, Peer: h.PeerID.String(), Addr: addr, Err: err.Error()})
		}
		t.s.event(Event{Kind: EventConnRejected, Digest: t.d, Peer: h.PeerID.String(), Addr: addr, Err: err.Error()})
		return
	}
	mine, count := t.handshake()
	if err := wire.WriteHandshake(nc, mine); err != nil {
		_ = nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	t.register(ctx, newConn(t, nc, h, addr, false, false), count)
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
	if len(t.conns) >= t.s.cfg.MaxConns {
		t.mu.Unlock()
		// Both handshakes are done, so the reason can follow.
		_ = wire.WriteMessage(c.nc, wire.Error{Code: wire.CodeBusy, Message: errBusy.Error()})
		_ = c.nc.Close()
		return
	}
	t.conns[c.id] = c
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
	t.s.event(Event{Kind: EventConnOpen, Digest: t.d, Peer: string(c.id), Addr: c.addr, Origin: c.origin, Outbound: c.outbound})
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
	if t.conns[c.id] != c {
		return
	}
	delete(t.conns, c.id)
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
	go c.close(nil)
}

// removed is called by a connection when it ends, with the reason.
func (t *torrent) removed(c *conn, err error) {
	t.mu.Lock()
	t.dropLocked(c)
	t.mu.Unlock()
	if violation(err) {
		t.s.ban(idKey(c.pid), t.s.cfg.BlacklistTime)
		if c.outbound {
			t.s.ban(addrKey(c.addr), t.s.cfg.BlacklistTime)
		}
		t.s.met.blacklisted.Inc()
		t.s.event(Event{Kind: EventBlacklist, Digest: t.d, Peer: string(c.id), Addr: c.addr, Err: err.Error()})
	}
	e := Event{Kind: EventConnClose, Digest: t.d, Peer: string(c.id), Addr: c.addr, Bytes: c.in.Load(), Sent: c.out.Load()}
	if err != nil {
		e.Err = err.Error()
	}
	t.s.event(e)
}

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
	for _, i := range t.picker.Next(c.id, want) {
		c.pending[i] = struct{}{}
		l := t.pieceLen(i)
		for off := int64(0); off < l; off += wire.MaxBlockLength {
			c.expect[i]++
			c.queue(wire.Request{Piece: uint32(i), Offset: uint32(off), Length: uint32(min(wire.MaxBlockLength, l-off))})
		}
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
	t.s.event(Event{Kind: EventPieceBad, Digest: t.d, Peer: string(c.id), Addr: c.addr, Piece: i})
}

// served records a block sent to c.
func (t *torrent) served(c *conn, r wire.Request) {
	n := int64(r.Length)
	t.mu.Lock()
	t.tot.out += n
	t.lastActive = t.s.now()
	if t.ss != nil && int64(r.Offset)+n == t.pieceLen(int(r.Piece)) {
		t.ssSent(c, int(r.Piece))
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

func (t *torrent) isCommitted() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.committed
}

func (t *torrent) hasPiece(i int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return i >= 0 && i < t.mi.NumPieces() && t.have.Has(i)
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
