package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/bandwidth"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// Scheduler runs the torrents of one host. Create it with New, start it with Run; Open and
// Stats may be called from any goroutine while it runs.
type Scheduler struct {
	cfg     Config
	store   *castore.Store
	ln      net.Listener
	tracker Tracker
	mi      func(ctx context.Context, d digest.Digest) (metainfo.MetaInfo, error)
	stripe  func(d digest.Digest) (index, count int)
	dial    func(ctx context.Context, addr string) (net.Conn, error)
	auth    func(ctx context.Context, nc net.Conn, id wire.PeerID) (string, error)
	log     *slog.Logger
	now     func() time.Time
	lim     *bandwidth.Limiter
	met     *metrics
	events  *hub
	gate    *gate

	// bytesIn and bytesOut total the piece bytes received (verified) and sent since New,
	// whatever became of the torrents (HostStats).
	bytesIn, bytesOut atomic.Int64

	mu        sync.Mutex
	torrents  map[digest.Digest]*torrent
	blacklist map[string]banEntry // "addr:host:port", "id:<hex>" or "host:ip/holder" → the ban
	// history holds the newest retired torrents, oldest first (at most maxHistory).
	history []*retired
	closed  bool
	running bool
	wg      sync.WaitGroup // torrent and connection goroutines
}

// maxHistory bounds the retired torrents a scheduler remembers (History).
const maxHistory = 256

// banEntry is one key of a ban. The keys one ban sets (a peer's id, address and host) share
// info, so HostStats lists the ban once.
type banEntry struct {
	until time.Time
	info  *snapshot.Blacklisted
}

// Ban reasons (snapshot.Blacklisted.Reason). A peer that broke the protocol is banned for
// what it did (banReason); a peer that could not be dialled or said it was busy is kept from
// being dialled again at once, which HostStats lists among the bans too.
const (
	banStalled     = "stalled"
	banBadPiece    = "bad_piece"
	banFalseClaim  = "false_claim"
	banIdentity    = "identity"
	banProtocol    = "protocol"
	banUnreachable = "unreachable"
	banBusy        = "busy"
	banUnused      = "unused"
)

// banReason names why a peer that broke the protocol (violation) or was refused is banned.
func banReason(err error) string {
	switch {
	case errors.Is(err, ErrStalled):
		return banStalled
	case errors.Is(err, ErrBadPiece):
		return banBadPiece
	case errors.Is(err, ErrFalseClaim):
		return banFalseClaim
	case errors.Is(err, ErrIdentity):
		return banIdentity
	}
	return banProtocol
}

// New validates cfg and returns a scheduler that is not yet running.
func New(cfg Config, deps Deps) (*Scheduler, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, fmt.Errorf("new scheduler: %w", err)
	}
	switch {
	case deps.Store == nil:
		return nil, errors.New("new scheduler: no store")
	case deps.Listener == nil:
		return nil, errors.New("new scheduler: no listener")
	case deps.Tracker == nil && !cfg.SeedOnly:
		return nil, errors.New("new scheduler: no tracker")
	}
	if cfg.Advertise == "" {
		cfg.Advertise = deps.Listener.Addr().String()
	}
	if _, _, err := net.SplitHostPort(cfg.Advertise); err != nil {
		return nil, fmt.Errorf("new scheduler: advertise address %q: %w", cfg.Advertise, err)
	}
	if err := announce.CheckAPI(cfg.API); err != nil {
		return nil, fmt.Errorf("new scheduler: %w", err) // every announce would be refused
	}
	lim, err := bandwidth.New(cfg.EgressRate, cfg.IngressRate)
	if err != nil {
		return nil, fmt.Errorf("new scheduler: %w", err)
	}
	s := &Scheduler{
		cfg:       cfg,
		store:     deps.Store,
		ln:        deps.Listener,
		tracker:   deps.Tracker,
		mi:        deps.Metainfo,
		stripe:    deps.SeedStripe,
		dial:      deps.Dial,
		auth:      deps.Authenticate,
		log:       deps.Logger,
		now:       deps.Now,
		lim:       lim,
		events:    newHub(),
		gate:      newGate(),
		torrents:  map[digest.Digest]*torrent{},
		blacklist: map[string]banEntry{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.dial == nil {
		d := &net.Dialer{Timeout: cfg.HandshakeTimeout}
		s.dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	if s.mi == nil {
		s.mi = s.storedMetainfo
	}
	s.met = newMetrics(deps.Registerer, s)
	return s, nil
}

// PeerID returns this host's peer id.
func (s *Scheduler) PeerID() wire.PeerID { return s.cfg.PeerID }

// Addr returns the address announced to peers.
func (s *Scheduler) Addr() string { return s.cfg.Advertise }

// Run accepts peer connections and runs the torrents until ctx ends, then closes every
// connection, stops every torrent (partial downloads stay on disk for resume) and returns
// nil. It returns ErrClosed if called twice.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running || s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.running = true
	s.mu.Unlock()

	stop := context.AfterFunc(ctx, func() { _ = s.ln.Close() })
	defer stop()
	var accept sync.WaitGroup
	accept.Go(func() {
		for {
			nc, err := s.ln.Accept()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
					s.log.Warn("accept peer connection", "err", err)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				return
			}
			s.wg.Go(func() { s.incoming(ctx, nc) })
		}
	})
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
			s.housekeeping()
		}
	}
	_ = s.ln.Close()
	accept.Wait()
	s.mu.Lock()
	s.closed = true
	ts := make([]*torrent, 0, len(s.torrents))
	for _, t := range s.torrents {
		ts = append(ts, t)
	}
	s.mu.Unlock()
	for _, t := range ts {
		t.stop(ErrClosed)
	}
	s.wg.Wait()
	s.events.close()
	s.met.unregister()
	return nil
}

// housekeeping expires blacklist entries and retires torrents that seeded long enough.
func (s *Scheduler) housekeeping() {
	now := s.now()
	s.mu.Lock()
	for k, b := range s.blacklist {
		if now.After(b.until) {
			delete(s.blacklist, k)
		}
	}
	var retire, all []*torrent
	for _, t := range s.torrents {
		all = append(all, t)
	}
	s.mu.Unlock()
	for _, t := range all {
		if t.idleSince(now) > s.cfg.SeedTime {
			retire = append(retire, t)
		}
		t.unstick(now)
		t.sweepIdle(now)
	}
	for _, t := range retire {
		t.stop(nil)
	}
}

// ban refuses the peer named by keys for d, and returns b (who and why) with its Since and
// Until set; HostStats lists it until it expires. Empty keys are skipped.
func (s *Scheduler) ban(b snapshot.Blacklisted, d time.Duration, keys ...string) snapshot.Blacklisted {
	now := s.now()
	b.Since, b.Until = now, now.Add(d)
	info := &b
	s.mu.Lock()
	for _, k := range keys {
		if k != "" {
			s.blacklist[k] = banEntry{until: b.Until, info: info}
		}
	}
	s.mu.Unlock()
	return b
}

// backOff keeps this host from dialling addr again until d from now, unless a longer ban
// already does; reason says why (HostStats).
func (s *Scheduler) backOff(addr, reason string, d time.Duration) {
	key, now := addrKey(addr), s.now()
	until := now.Add(d)
	s.mu.Lock()
	if cur, ok := s.blacklist[key]; !ok || cur.until.Before(until) {
		s.blacklist[key] = banEntry{until: until, info: &snapshot.Blacklisted{Addr: addr, Reason: reason, Since: now, Until: until}}
	}
	s.mu.Unlock()
}

func (s *Scheduler) banned(keys ...string) bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if b, ok := s.blacklist[k]; ok && now.Before(b.until) {
			return true
		}
	}
	return false
}

func addrKey(addr string) string  { return "addr:" + addr }
func idKey(id wire.PeerID) string { return "id:" + id.String() }

// hostKey names a peer that dialled in by what it cannot change at will: its IP address and
// the holder of its certificate ("" in plain P2P, where the address alone names it).
func hostKey(ip netip.Addr, holder string) string { return "host:" + ip.String() + "/" + holder }

// Open returns a Download of blob d in namespace ns: at once if the blob is in the store,
// else joining the running download of d or starting one (one download per blob however many
// callers ask). The download continues in the background when the caller goes away; ctx
// bounds only this call. Close the Download when done with it.
func (s *Scheduler) Open(ctx context.Context, ns string, d digest.Digest) (*Download, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("open %s: %w", d, err)
	}
	if b, err := s.store.Open(ctx, d); err == nil {
		return &Download{blob: b, f: b.File(), size: b.Size()}, nil
	} else if !errors.Is(err, castore.ErrNotFound) {
		return nil, fmt.Errorf("open %s: %w", d, err)
	}
	if s.cfg.SeedOnly {
		return nil, fmt.Errorf("open %s: %w", d, castore.ErrNotFound)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	t := s.torrents[d]
	if t == nil {
		t = newTorrent(s, ns, d)
		s.torrents[d] = t
		s.wg.Go(t.download)
	}
	s.mu.Unlock()
	return t.open(ctx)
}

// Active reports whether the scheduler runs a torrent of d: one downloading it, or seeding it
// to peers. A store's cleanup keeps such blobs (castore.CleanupOptions.Keep); it is called
// with the store's lock held, and takes only the scheduler's own.
func (s *Scheduler) Active(d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.torrents[d] != nil
}

// Stats returns a snapshot of every torrent, sorted by digest.
func (s *Scheduler) Stats() []TorrentStats {
	s.mu.Lock()
	ts := make([]*torrent, 0, len(s.torrents))
	for _, t := range s.torrents {
		ts = append(ts, t)
	}
	s.mu.Unlock()
	out := make([]TorrentStats, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.stats())
	}
	slices.SortFunc(out, func(a, b TorrentStats) int {
		switch {
		case a.Digest < b.Digest:
			return -1
		case a.Digest > b.Digest:
			return 1
		}
		return 0
	})
	return out
}

// Subscribe returns a channel of events (connections opened and closed, pieces received,
// sent and rejected, peers blacklisted, torrents started and finished) and a function that
// ends the subscription. Events are dropped, not queued, when the subscriber falls more than
// buf events behind. The channel is closed when the subscription ends or the scheduler stops.
func (s *Scheduler) Subscribe(buf int) (<-chan Event, func()) { return s.events.subscribe(buf) }

// retired is a torrent the scheduler let go, in its history: t until the torrent's last
// connection closed, then st, its final snapshot. Guarded by Scheduler.mu.
type retired struct {
	t  *torrent
	st TorrentStats
}

// remember adds a retired torrent's entry to the history, forgetting the oldest beyond
// maxHistory.
func (s *Scheduler) remember(e *retired) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.history) == maxHistory {
		copy(s.history, s.history[1:])
		s.history = s.history[:maxHistory-1]
	}
	s.history = append(s.history, e)
}

// History returns snapshots of the torrents the scheduler retired (seeded long enough,
// failed, or stopped with the scheduler), newest first, at most 256, each with Retired set.
// A torrent whose connections are still closing is snapshotted as it is now.
func (s *Scheduler) History() []TorrentStats {
	s.mu.Lock()
	es := make([]retired, len(s.history))
	for i, e := range s.history {
		es[len(es)-1-i] = *e
	}
	s.mu.Unlock()
	out := make([]TorrentStats, len(es))
	for i, e := range es {
		if e.t != nil {
			out[i] = e.t.stats()
		} else {
			out[i] = e.st
		}
	}
	return out
}

// HostStats returns what this host reports about its swarm engine as a whole: identity, caps,
// connections, byte totals since New and the bans in force, newest first. Role is "origin"
// for a seed-only scheduler, else "agent".
func (s *Scheduler) HostStats() snapshot.HostStats {
	now := s.now()
	h := snapshot.HostStats{
		Role: "agent", PeerID: s.cfg.PeerID.String(), Addr: s.cfg.Advertise,
		EgressCap: s.cfg.EgressRate, IngressCap: s.cfg.IngressRate,
		BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(),
		Blacklisted: []snapshot.Blacklisted{}, Time: now,
	}
	if s.cfg.SeedOnly {
		h.Role = "origin"
	}
	s.mu.Lock()
	ts := make([]*torrent, 0, len(s.torrents))
	for _, t := range s.torrents {
		ts = append(ts, t)
	}
	seen := map[*snapshot.Blacklisted]bool{}
	for _, b := range s.blacklist {
		if now.Before(b.until) && !seen[b.info] {
			seen[b.info] = true
			h.Blacklisted = append(h.Blacklisted, *b.info)
		}
	}
	s.mu.Unlock()
	h.Torrents = len(ts)
	for _, t := range ts {
		t.mu.Lock()
		h.Conns += len(t.conns)
		t.mu.Unlock()
	}
	slices.SortFunc(h.Blacklisted, func(a, b snapshot.Blacklisted) int {
		if c := b.Since.Compare(a.Since); c != 0 {
			return c
		}
		return strings.Compare(a.Addr, b.Addr)
	})
	return h
}

func (s *Scheduler) removeTorrent(t *torrent) {
	s.mu.Lock()
	if s.torrents[t.d] == t {
		delete(s.torrents, t.d)
	}
	s.mu.Unlock()
}

// seedTorrent returns the torrent serving d to a peer that dialled in: the running one, or a
// new seeding torrent when the blob is in the store.
func (s *Scheduler) seedTorrent(ctx context.Context, d digest.Digest) (*torrent, error) {
	s.mu.Lock()
	t := s.torrents[d]
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if t != nil {
		return t, nil
	}
	if _, err := s.store.Stat(d); err != nil {
		return nil, err
	}
	mi, err := s.mi(ctx, d)
	if err != nil {
		return nil, err
	}
	if mi.Digest != d {
		return nil, fmt.Errorf("metainfo of %s names %s", d, mi.Digest)
	}
	stripe, stripes := 0, 1
	if s.stripe != nil && s.cfg.SeedOnly {
		stripe, stripes = s.stripe(d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if t := s.torrents[d]; t != nil {
		return t, nil
	}
	t = newSeedTorrent(s, mi, stripe, stripes)
	s.torrents[d] = t
	return t, nil
}

func (s *Scheduler) storedMetainfo(_ context.Context, d digest.Digest) (metainfo.MetaInfo, error) {
	data, err := s.store.GetMeta(d, MetainfoKind)
	if err != nil {
		return metainfo.MetaInfo{}, err
	}
	return metainfo.Decode(data)
}

// incoming runs the accepting side of a connection: the TLS handshake if any, read the swarm
// handshake, admit the peer, find the torrent, answer, then hand the connection to the torrent.
func (s *Scheduler) incoming(ctx context.Context, nc net.Conn) {
	remote := nc.RemoteAddr().String()
	ip := remoteIP(nc)
	displaced, err := s.enter(nc, ip, s.now())
	if displaced != nil {
		s.met.evicted.WithLabelValues(reasonHandshake).Inc()
		s.event(Event{Kind: snapshot.EventEvicted, Addr: displaced.RemoteAddr().String(), Err: reasonHandshake})
	}
	if err != nil {
		// Before the handshake there is no blob to answer for: just close (docs/protocol.md §1.2).
		_ = nc.Close()
		s.refuseBusy(Event{Addr: remote}, err)
		return
	}
	defer s.leave(nc)
	_ = nc.SetDeadline(s.now().Add(s.cfg.HandshakeTimeout))
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	if hs, ok := nc.(handshaker); ok {
		if err := hs.HandshakeContext(hctx); err != nil {
			if !s.wasDisplaced(nc) { // else counted as evicted, not refused too
				s.refuse(nc, refusedTLS, Event{Addr: remote, Err: "tls handshake: " + err.Error()})
			}
			return
		}
	}
	h, err := wire.ReadHandshake(nc)
	s.handshook(nc)
	if err != nil {
		if !s.wasDisplaced(nc) {
			s.refuse(nc, refusedProtocol, Event{Addr: remote, Err: err.Error()})
		}
		return
	}
	if h.PeerID == s.cfg.PeerID {
		_ = nc.Close()
		return
	}
	if s.banned(idKey(h.PeerID)) {
		s.refuse(nc, refusedBanned, Event{Digest: h.Digest, Addr: remote, Peer: h.PeerID.String(), Err: "blacklisted"})
		return
	}
	holder, err := s.admit(hctx, nc, h.PeerID)
	if err != nil {
		s.refuse(nc, refusedIdentity, Event{Digest: h.Digest, Addr: remote, Peer: h.PeerID.String(), Err: err.Error()})
		return
	}
	if s.banned(hostKey(ip, holder)) {
		// Blacklisted under another peer id: a fresh id does not wipe the slate.
		s.refuse(nc, refusedBanned, Event{Digest: h.Digest, Addr: remote, Peer: h.PeerID.String(), Err: "blacklisted (this host and credential)"})
		return
	}
	t, err := s.seedTorrent(ctx, h.Digest)
	if err != nil {
		// Without the blob there is no handshake to answer with, and an error frame alone
		// would read as a bad handshake: just close (docs/protocol.md §1.2).
		s.refuse(nc, refusedNoBlob, Event{Digest: h.Digest, Addr: remote, Peer: h.PeerID.String(), Err: err.Error()})
		return
	}
	t.accept(ctx, nc, h, holder)
}

// handshaker is a connection with a handshake of its own below the swarm's (*tls.Conn).
type handshaker interface {
	HandshakeContext(ctx context.Context) error
}

// Reasons of the refused-handshakes metric.
const (
	refusedTLS      = "tls"
	refusedIdentity = "identity"
	refusedProtocol = "protocol"
	refusedBanned   = "banned"
	refusedNoBlob   = "no_blob"
)

// admit asks Deps.Authenticate about the peer on nc that named itself id, and returns the
// holder of its credential ("" without Authenticate).
func (s *Scheduler) admit(ctx context.Context, nc net.Conn, id wire.PeerID) (string, error) {
	if s.auth == nil {
		return "", nil
	}
	holder, err := s.auth(ctx, nc, id)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	return holder, nil
}

// refuse closes a connection that is not admitted, counting and publishing why.
func (s *Scheduler) refuse(nc net.Conn, reason string, e Event) {
	_ = nc.Close()
	s.met.refused.WithLabelValues(reason).Inc()
	e.Kind = snapshot.EventConnRejected
	s.event(e)
}

func (s *Scheduler) event(e Event) {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("swarm event", eventAttrs(e)...)
	}
	s.events.publish(e)
}

// Download is one reader's view of a blob that may still be downloading. It is not safe for
// concurrent use: give each client its own.
type Download struct {
	t    *torrent      // nil when the blob was already stored
	blob *castore.Blob // when the blob was already stored
	f    *os.File
	size int64
}

// Size returns the blob's length.
func (d *Download) Size() int64 { return d.size }

// Wait blocks until the bytes at off are verified and returns the end of the verified prefix
// (> off), or size when off >= size. It fails when the download fails or ctx ends.
func (d *Download) Wait(ctx context.Context, off int64) (int64, error) {
	if d.t == nil || off >= d.size {
		return d.size, nil
	}
	return d.t.wait(ctx, off)
}

// File returns a read-only descriptor of the blob's bytes, valid until Close. Read only
// below what Wait returned.
func (d *Download) File() *os.File { return d.f }

// CopyRange writes bytes [off, off+n) of the blob to w as they become verified, sending from
// the file (sendfile when w is a socket or an http.ResponseWriter over one). It returns the
// bytes written.
func (d *Download) CopyRange(ctx context.Context, w io.Writer, off, n int64) (int64, error) {
	if off < 0 || n < 0 || off+n > d.size {
		return 0, fmt.Errorf("copy range [%d, %d) of a %d-byte blob: out of range", off, off+n, d.size)
	}
	var done int64
	for done < n {
		avail, err := d.Wait(ctx, off+done)
		if err != nil {
			return done, err
		}
		chunk := min(avail-(off+done), n-done)
		if _, err := d.f.Seek(off+done, io.SeekStart); err != nil {
			return done, fmt.Errorf("copy range: %w", err)
		}
		k, err := io.CopyN(w, d.f, chunk)
		done += k
		if err != nil {
			return done, fmt.Errorf("copy range: %w", err)
		}
	}
	return done, nil
}

// Close releases the descriptor (and the blob's protection from eviction).
func (d *Download) Close() error {
	if d.blob != nil {
		return d.blob.Close()
	}
	if d.f != nil {
		return d.f.Close()
	}
	return nil
}
