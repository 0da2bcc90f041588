package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/piece"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
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
	// past are the connections that closed and bans the bans this torrent made, oldest first,
	// each at most snapshot.MaxPastPeers; pastDropped counts the closed connections dropped.
	past        []PeerStats
	pastDropped int
	bans        []snapshot.Blacklisted
	// live counts the connections started and not yet recorded by removed.
	live int
	// origin counts the pieces asked of origins by reason (originReasons order), and the
	// ones not yet published in an EventOriginFallback, with when the last was.
	origin    [numOriginReasons]originCount
	retiredAt time.Time // when stop let the torrent go
	hist      *retired  // its history entry, once retired
	frozen    bool      // hist holds the final snapshot, or is being given it
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
	s.event(Event{Kind: snapshot.EventTorrentSeed, Digest: t.d, Bytes: mi.Length})
	return t
}

func (t *torrent) setMetainfo(mi metainfo.MetaInfo) {
	t.mi = mi
	t.depth = max(2, int(t.s.cfg.PipelineBytes/max(1, mi.PieceLength)))
}

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
		t.retiredAt = t.s.now()
		t.hist = &retired{t: t}
		// Closed under t.mu, so that register, which checks quit under it, cannot add a
		// connection that the loop below would miss.
		close(t.quit)
		t.mu.Unlock()
		for _, c := range conns {
			c.close(nil)
		}
		t.s.removeTorrent(t)
		t.s.remember(t.hist)
		t.freezeIfDone()
	})
}

// freezeIfDone gives a retired torrent's history entry its final snapshot once its last
// connection has been recorded (removed), and lets go of the torrent.
func (t *torrent) freezeIfDone() {
	t.mu.Lock()
	e := t.hist
	done := e != nil && t.live == 0 && !t.frozen
	if done {
		t.frozen = true
	}
	t.mu.Unlock()
	if !done {
		return
	}
	st := t.stats()
	t.s.mu.Lock()
	e.st, e.t = st, nil
	t.s.mu.Unlock()
}

// fail records a terminal error and stops the torrent, so that the next Open starts afresh.
func (t *torrent) fail(err error) {
	t.s.log.Warn("download failed", "digest", t.d, "err", err)
	t.s.event(Event{Kind: snapshot.EventTorrentFailed, Digest: t.d, Err: err.Error()})
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
	t.s.event(Event{Kind: snapshot.EventTorrentStart, Digest: t.d})
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
		t.flushFallbacks(true)
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
			t.flushFallbacks(false)
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
		t.s.event(Event{Kind: snapshot.EventTorrentResume, Digest: t.d, Pieces: resumed})
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
	t.flushFallbacks(true)
	t.s.met.downloadSeconds.Observe(elapsed.Seconds())
	t.s.event(Event{Kind: snapshot.EventTorrentDone, Digest: t.d, Bytes: t.mi.Length, Duration: elapsed})
	t.s.log.Info("download complete", "digest", t.d, "bytes", t.mi.Length, "seconds", elapsed.Seconds(),
		"from_origin", tot.inOrigin, "from_peers", tot.in-tot.inOrigin, "wasted", tot.wasted)
	select {
	case t.poke <- struct{}{}:
	default:
	}
}

func (t *torrent) isCommitted() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.committed
}

// mayServe reports whether this host serves piece i to c: it holds the piece and, when
// super-seeding, revealed it to c and is not waiting for c to prove it holds it
// (superseed.go, ssMayServe).
func (t *torrent) mayServe(c *conn, i int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i < 0 || i >= t.mi.NumPieces() || !t.have.Has(i) {
		return false
	}
	return t.ss == nil || t.ssMayServe(c, i)
}
