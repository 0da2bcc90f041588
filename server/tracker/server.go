package tracker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/swarm/announce"
)

// Deps are a tracker's collaborators. Its Listener serves the HTTP API and its HTTPClient talks
// to the origins.
type Deps struct {
	role.Deps
	// Now is the clock peer expiry is measured with; nil means time.Now (tests move time).
	Now func() time.Time
}

// Server is one tracker. Build it with New and run it with Run (or release it with Close). Its
// handlers are safe for concurrent use.
type Server struct {
	base    *role.Base
	cfg     Config
	log     *slog.Logger
	ln      net.Listener
	hc      *http.Client
	now     func() time.Time
	metrics *metrics

	addrs    addrPolicy
	refusals *refusalLog
	peers    *peerTable
	origins  *originPeers
	cache    *metainfoCache
	fetches  singleflight.Group
	waiting  atomic.Int64 // requests waiting for a metainfo fetch (tests watch it)

	stopping     chan struct{} // closed when the HTTP server starts shutting down
	stoppingOnce sync.Once
}

// New validates cfg and builds a tracker. It starts nothing; the caller must Run or Close it.
func New(cfg Config, deps Deps) (*Server, error) {
	b, err := role.Open("tracker", &cfg, deps.Deps)
	if err != nil {
		return nil, err
	}
	s := &Server{
		base:     b,
		cfg:      cfg,
		log:      b.Logger(),
		ln:       deps.Listener,
		now:      deps.Now,
		cache:    newMetainfoCache(cfg.MetainfoCache),
		stopping: make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	// An origin answers a metainfo request only once it holds the blob, which it may first
	// pull from storage.
	s.hc = b.Client(deps.HTTPClient, httpserve.ClientOptions{ResponseHeaderTimeout: 10 * time.Minute})
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, b.Fail(err)
	}
	s.metrics = m
	s.addrs = newAddrPolicy(cfg.Announce)
	s.refusals = newRefusalLog(s.log)
	s.peers = newPeerTable(cfg.PeerTTL, cfg.MaxPeers, s.addrs.sameHost, func(d int) { m.peers.Add(float64(d)) })
	origins, err := b.Members("origins", cfg.Origins, role.MembersOptions{Interval: cfg.DNSInterval},
		func(addrs []string) { s.origins.setAddrs(addrs) })
	if err != nil {
		return nil, b.Fail(err)
	}
	s.origins = newOriginPeers(origins.Addrs(), s.hc, s.log, s.addrs, func(n int) { m.origins.Set(float64(n)) })

	mux := http.NewServeMux()
	s.routes(mux)
	admin.MountHealth(mux, s.ready)
	var h http.Handler = mux
	if cfg.TLS.Enabled() {
		h = s.guardAnnounces(mux)
	}
	srv := b.Serve(deps.Listener, httpserve.Instrument(h, s.metrics.requests), httpserve.ServerOptions{})
	srv.RegisterOnShutdown(s.stop)
	b.ServeAdmin(deps.AdminListener, deps.Gatherer, s.ready)
	b.Go(s.origins.run)
	b.Go(s.runSweep)
	b.OnClose("metainfo fetches", func() error { s.stop(); return nil })
	b.StartedAttrs("addr", s.Addr(), "origins", cfg.Origins, "replicas", cfg.Replicas)
	return s, nil
}

// Addr returns the address the HTTP API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully (requests in flight first, then the
// server's loops) and closes what the server opened; it returns the first failure, if any. It
// may be called once.
func (s *Server) Run(ctx context.Context) error { return s.base.Run(ctx) }

// Close releases a server that was built but will not be Run: its listeners and what it
// opened. After Run has started, cancel Run's context instead; Close then does nothing.
func (s *Server) Close() error { return s.base.Close() }

// stop cancels shared metainfo fetches, which would otherwise hold up a graceful shutdown.
func (s *Server) stop() { s.stoppingOnce.Do(func() { close(s.stopping) }) }

// ready: every origin has been asked for its swarm identity once, so handouts are as complete
// as they will be. Origins that did not answer do not make the tracker unready: peers still
// find each other through it.
func (s *Server) ready(ctx context.Context) error {
	if !s.origins.firstRound.Load() {
		return errors.New("the origins have not all been asked for their swarm identity yet")
	}
	if s.origins.known() == 0 {
		// Origins found by DNS that have not resolved yet: handouts would lead with no origin.
		return errors.New("no origin known yet")
	}
	return nil
}

// runSweep drops expired peers every half TTL.
func (s *Server) runSweep(ctx context.Context) error {
	t := time.NewTicker(max(s.cfg.PeerTTL/2, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if n := s.peers.sweep(s.now()); n > 0 {
				s.log.Debug("dropped expired peers", "count", n)
			}
		}
	}
}

// announcers may announce: agents and origins, which are the swarm, and operators. Another
// component with a cluster certificate (a proxy, a build-index node) has no business in a
// swarm and cannot add itself or anyone else as a peer.
var announcers = []string{pki.GroupAgent, pki.GroupOrigin, pki.GroupAdmin}

// listReaders may read the swarm list (api.SwarmsPath): operators.
var listReaders = []string{pki.GroupAdmin}

// guardAnnounces refuses, with 403 DENIED, the swarm list to all but listReaders, and an
// announce from a certificate that is not an
// announcer's. The listener has already refused clients without a certificate.
func (s *Server) guardAnnounces(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == api.SwarmsPath || strings.HasPrefix(r.URL.Path, api.SwarmsPath+"/") {
			// The swarm list names every peer's addresses: the operators' (top, swarm
			// inspect), not any cluster certificate's.
			if err := pki.Allowed(r.TLS, "list swarms", listReaders...); err != nil {
				registry.WriteError(w, r, &errcode.Error{Status: http.StatusForbidden, Code: errcode.CodeDenied, Message: err.Error(), Err: err})
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := pki.Allowed(r.TLS, "announce", announcers...); err != nil {
				id, _ := pki.PeerIdentity(r.TLS)
				s.refuse(w, r, reasonDenied, announce.Request{}, id.Name,
					&errcode.Error{Status: http.StatusForbidden, Code: errcode.CodeDenied, Message: err.Error(), Err: err})
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
