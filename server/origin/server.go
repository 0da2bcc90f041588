package origin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/ring/members"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/cacheapi"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/queue"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
)

// Deps are the origin's collaborators. Its Listener serves the blob API and its HTTPClient talks
// to the other origins.
type Deps struct {
	role.Deps
	// Backend overrides the backends built from Config.Backends (tests inject faults with it).
	Backend backend.Backend
	// Checker overrides the ring's health checker.
	Checker ring.Checker
	// PeerListener accepts swarm connections from agents; nil means the origin does not seed
	// (GET /peer then answers 404).
	PeerListener net.Listener
}

// Server is one origin. Build it with New and run it with Run (or release it with Close).
type Server struct {
	base    *role.Base
	cfg     Config
	self    string
	log     *slog.Logger
	ln      net.Listener
	store   *castore.Store
	queue   *queue.Queue
	runner  *queue.Runner
	ring    *ring.Ring
	backend backend.Backend // nil when no backend is configured
	hc      *http.Client
	metrics *metrics
	swarm   *scheduler.Scheduler // nil without a peer listener
	cache   *cacheapi.Cache      // cleanup policy and the cache API

	pulls singleflight.Group
	neg   *negCache // the backend's recent "not found" answers

	holdMu sync.Mutex
	holds  map[string]func() // task key -> release of the store hold taken for it

	repairKick chan struct{} // capacity 1
	repairWant atomic.Int32  // the repairKind the next repair the kick starts runs (at least)
	ringEpoch  atomic.Uint64 // ring events seen: any change voids confirmed placements
	repairMu   sync.Mutex    // one repair at a time; guards repaired (confirmed has its own lock)
	repaired   *placement    // the placement the last complete repair left every blob on
	confirmed  confirmations // blobs whose owners all held them, under one epoch

	gcLocks   digestLocks   // between GC touches and conditional deletes (gc.go)
	touches   *touchJournal // when each blob was last touched for a push (gc.go)
	gcMetrics *gcMetrics
}

// New opens the origin's store and queue and builds its ring and backends. It starts nothing;
// the caller must Run or Close it.
func New(cfg Config, deps Deps) (*Server, error) {
	b, err := role.Open("origin", &cfg, deps.Deps, deps.PeerListener)
	if err != nil {
		return nil, err
	}
	s := &Server{
		base:       b,
		cfg:        cfg,
		self:       cfg.Advertise,
		log:        b.With("self", cfg.Advertise),
		ln:         deps.Listener,
		holds:      map[string]func(){},
		repairKick: make(chan struct{}, 1),
	}
	s.hc = b.Client(deps.HTTPClient, httpserve.ClientOptions{})
	s.neg = newNegCache(cfg.NegativeCache.TTL, cfg.NegativeCache.Size, nil)
	m, err := newMetrics(deps.Registerer, s.neg.len)
	if err != nil {
		return nil, b.Fail(err)
	}
	s.metrics = m
	if s.gcMetrics, err = newGCMetrics(deps.Registerer); err != nil {
		return nil, b.Fail(err)
	}

	if err := os.MkdirAll(cfg.Store.Dir, 0o755); err != nil {
		return nil, b.Fail(fmt.Errorf("create store dir: %w", err))
	}
	// Without a backend the origins hold the only copies of what they acknowledged: neither
	// capacity eviction nor cleanup may remove a blob (a full store answers 507 instead).
	onlyCopies := deps.Backend == nil && len(cfg.Backends) == 0
	s.store, err = castore.Open(filepath.Join(cfg.Store.Dir, "blobs"), castore.Options{
		Capacity:   int64(cfg.Store.Capacity),
		OnlyCopies: onlyCopies,
		Logger:     s.log,
		Registerer: deps.Registerer,
	})
	if err != nil {
		return nil, b.Fail(err)
	}
	b.OnClose("store", s.store.Close)
	s.queue, err = queue.Open(filepath.Join(cfg.Store.Dir, "queue.db"))
	if err != nil {
		return nil, b.Fail(err)
	}
	b.OnClose("queue", s.queue.Close)
	if s.touches, err = openTouchJournal(filepath.Join(cfg.Store.Dir, "gc-touches.db"), time.Now()); err != nil {
		return nil, b.Fail(err)
	}
	b.OnClose("touch journal", s.touches.Close)
	checker := deps.Checker
	if checker == nil {
		// The role's client, so health checks speak TLS when the origins do.
		checker = ring.HTTPChecker{Client: s.hc}
	}
	ringCfg := cfg.Ring
	if members.HasDNS(cfg.Ring.Members) {
		// The ring follows the DNS answer; the origin is always its own member, even before
		// its Service lists it (a pod not ready yet).
		l, err := b.Members("ring.members", cfg.Ring.Members,
			role.MembersOptions{Interval: cfg.DNSInterval, AllowEmpty: true}, s.setRingMembers)
		if err != nil {
			return nil, b.Fail(err)
		}
		ringCfg.Members = s.withSelf(l.Addrs())
	}
	s.ring, err = ring.New(ringCfg, ring.Deps{Checker: checker, Logger: s.log, Registerer: deps.Registerer})
	if err != nil {
		return nil, b.Fail(err)
	}
	if s.backend, err = backends.ResolveWith(context.Background(), deps.Backend, cfg.Backends, backends.Deps{Registerer: deps.Registerer}); err != nil {
		return nil, b.Fail(err)
	}
	s.runner, err = queue.NewRunner(s.queue, queue.RunnerConfig{
		Workers: cfg.Writeback.Workers, RetryInitial: cfg.Writeback.RetryInitial,
		RetryMax: cfg.Writeback.RetryMax, Timeout: cfg.Writeback.Timeout,
	}, s.execute, queue.RunnerDeps{
		Logger: s.log, Registerer: deps.Registerer, Subsystem: "origin",
		Finished: func(t queue.Task, _ error) { s.unhold(t) },
	})
	if err != nil {
		return nil, b.Fail(err)
	}
	// Blobs still waiting for write-back must survive eviction across restarts too.
	tasks, err := s.queue.All()
	if err != nil {
		return nil, b.Fail(err)
	}
	for _, t := range tasks {
		if bt, err := decodeTask(t); err == nil {
			s.hold(t, bt.Digest)
		}
	}
	// Only now, with those held: a store found over its capacity (lowered, or a disk that
	// shrank) is trimmed before it serves, and the upload sessions a killed process left go
	// first (castore logs what it evicted).
	if _, err := s.store.Trim(); err != nil {
		s.log.Warn("trim the store to its capacity", "err", err) // the next reservations evict too
	}
	if deps.PeerListener != nil {
		peers := b.Peers(deps.PeerListener, cfg.Peer.Plain, scheduler.DefaultHandshakeTimeout)
		s.swarm, err = scheduler.New(scheduler.Config{
			PeerID: peers.PeerID, Advertise: cfg.Peer.Advertise, SeedOnly: true, MaxConns: cfg.Peer.MaxConns,
			MaxConnsPerAddr: cfg.Peer.MaxConnsPerAddr, MaxConnsPerHost: cfg.Peer.MaxConnsPerHost,
			MaxHandshakes: cfg.Peer.MaxHandshakes, IdleGrace: cfg.Peer.IdleGrace,
			NoRequestTimeout: cfg.Peer.NoRequestTimeout,
			EgressRate:       int64(cfg.Peer.EgressRate),
		}, scheduler.Deps{
			Store: s.store, Listener: peers.Listener, Authenticate: peers.Authenticate, Metainfo: s.swarmMetainfo,
			SeedStripe: s.seedStripe, Logger: s.log, Registerer: deps.Registerer,
		})
		if err != nil {
			return nil, b.Fail(err)
		}
	}
	// Cleanup never removes a blob held for write-back (castore) nor one the swarm seeds.
	var keep func(digest.Digest) bool
	if s.swarm != nil {
		keep = s.swarm.Active
	}
	var allow func(*http.Request) error
	if cfg.TLS.Enabled() {
		allow = func(r *http.Request) error { return pki.Allowed(r.TLS, r.Method+" "+r.URL.Path, pki.GroupAdmin) }
	}
	cleanup := cfg.Store.Cleanup
	if onlyCopies {
		var def cacheapi.Config
		def.OriginDefaults()
		if cleanup.Policy() != def.Policy() {
			s.log.Warn("store.cleanup is ignored: this origin has no backend, so its blobs are the only copies and cleanup would delete them")
		}
		cleanup.TTI, cleanup.TTL, cleanup.HighWatermark, cleanup.LowWatermark = cacheapi.Off, cacheapi.Off, cacheapi.Off, cacheapi.Off
	}
	s.cache = cacheapi.New("origin", s.store, cleanup, cacheapi.Options{Keep: keep, Allow: allow, Logger: s.log})
	mux := http.NewServeMux()
	s.routes(mux)
	s.gcRoutes(mux)
	s.cache.Register(mux)
	admin.MountHealth(mux, s.ready)
	var h http.Handler = mux
	if cfg.TLS.Enabled() {
		h = guardWrites(mux)
	}
	b.Serve(deps.Listener, httpserve.Instrument(h, s.metrics.requests), httpserve.ServerOptions{})
	b.ServeAdmin(deps.AdminListener, deps.Gatherer, s.ready)
	b.Go(s.ring.Run)
	b.Go(s.runner.Run)
	b.Go(s.runRepair)
	b.Go(s.runPurge)
	b.Go(s.cache.Run)
	if s.swarm != nil {
		b.Go(s.swarm.Run)
	}
	b.StartedAttrs("addr", s.Addr(), "members", cfg.Ring.Members, "replicas", cfg.Ring.Replicas)
	return s, nil
}

// withSelf returns addrs with this origin's advertised address among them.
func (s *Server) withSelf(addrs []string) []string {
	if slices.Contains(addrs, s.self) {
		return addrs
	}
	return append(slices.Clone(addrs), s.self)
}

// setRingMembers applies a new DNS answer for ring.members to the ring; the ring's Joined and
// Left events start a repair (runRepair), which copies every blob to its new owners.
func (s *Server) setRingMembers(addrs []string) {
	if err := s.ring.SetMembers(s.withSelf(addrs)); err != nil {
		s.log.Warn("ring members from DNS refused", "addrs", addrs, "err", err)
	}
}

// seedStripe says which of blob d's origins this one is, for super-seeding: its place among
// the healthy owners the ring gives d (what the tracker hands agents). An origin that is not
// among them reveals every piece in order on its own.
func (s *Server) seedStripe(d digest.Digest) (index, count int) {
	owners := s.ring.Owners(d.String())
	i := slices.Index(owners, s.self)
	if i < 0 {
		return 0, 1
	}
	return i, len(owners)
}

// Addr returns the address the blob API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully (requests in flight first, then the
// server's loops) and closes what the server opened; it returns the first failure, if any. It
// may be called once.
func (s *Server) Run(ctx context.Context) error { return s.base.Run(ctx) }

// Close releases a server that was built but will not be Run: its listeners and what it
// opened. After Run has started, cancel Run's context instead; Close then does nothing.
func (s *Server) Close() error { return s.base.Close() }

// Ring returns the origin's ring (for status and tests).
func (s *Server) Ring() *ring.Ring { return s.ring }

func (s *Server) ready(ctx context.Context) error {
	// Polled every few seconds: a cheap read proves the queue file is usable without decoding
	// every task in it.
	if _, err := s.queue.Len(); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// runPurge removes abandoned upload sessions.
func (s *Server) runPurge(ctx context.Context) error {
	if s.cfg.Store.UploadTTL == 0 {
		return nil
	}
	t := time.NewTicker(min(s.cfg.Store.UploadTTL/4, time.Hour))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if n, err := s.store.PurgeUploads(s.cfg.Store.UploadTTL); err != nil {
				s.log.Warn("purge uploads", "err", err)
			} else if n > 0 {
				s.log.Info("purged abandoned uploads", "count", n)
			}
		}
	}
}

// peer returns a client of another origin.
func (s *Server) peer(addr string) *client.Origin { return client.NewOrigin(addr, s.hc) }

// hold keeps a task's blob from eviction until the task finishes.
func (s *Server) hold(t queue.Task, d digest.Digest) {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	if _, ok := s.holds[t.ID()]; ok {
		return
	}
	s.holds[t.ID()] = s.store.Hold(d)
}

func (s *Server) unhold(t queue.Task) {
	s.holdMu.Lock()
	release := s.holds[t.ID()]
	delete(s.holds, t.ID())
	s.holdMu.Unlock()
	if release != nil {
		release()
	}
}

// namespaceOf returns the namespace recorded for a stored blob.
func (s *Server) namespaceOf(d digest.Digest) (string, error) {
	b, err := s.store.GetMeta(d, metaNamespace)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// Sidecar metadata kinds kept next to each blob.
const (
	metaNamespace = "namespace"
	metaMetainfo  = "metainfo"
)

// swarmMetainfo gives the scheduler the metainfo of a blob an agent asked for, generating it
// when the blob arrived without one.
func (s *Server) swarmMetainfo(ctx context.Context, d digest.Digest) (metainfo.MetaInfo, error) {
	data, err := s.metainfo(ctx, d)
	if err != nil {
		return metainfo.MetaInfo{}, err
	}
	return metainfo.Decode(data)
}

// Swarm returns the origin's seeding scheduler, nil when it has no peer listener.
func (s *Server) Swarm() *scheduler.Scheduler { return s.swarm }

// writers may add content to an origin: the proxy (pushes, mounts), other origins
// (replicas, repairs) and operators (krakenctl push). Any component of the cluster may read;
// an agent, which only ever reads, cannot plant content in a namespace.
var writers = []string{pki.GroupProxy, pki.GroupOrigin, pki.GroupAdmin}

// guardWrites refuses, with 403 DENIED, a request that changes something unless its client
// certificate is a writer's. The listener has already refused clients without a certificate.
func guardWrites(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := pki.Allowed(r.TLS, r.Method+" "+r.URL.Path, writers...); err != nil {
				registry.WriteError(w, r, &errcode.Error{Status: http.StatusForbidden, Code: errcode.CodeDenied, Message: err.Error(), Err: err})
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
