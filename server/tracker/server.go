package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/httpserve"
)

// Deps are a tracker's collaborators.
type Deps struct {
	// Listener serves the HTTP API; required (tests pass 127.0.0.1:0). The Server owns it.
	Listener net.Listener
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the tracker's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Gatherer serves /metrics; nil disables the endpoint.
	Gatherer prometheus.Gatherer
	// HTTPClient talks to the origins; nil means a default client whose idle connections are
	// closed when the Server stops.
	HTTPClient *http.Client
	// Now is the clock peer expiry is measured with; nil means time.Now (tests move time).
	Now func() time.Time
}

// Server is one tracker. Build it with New and run it with Run. Its handlers are safe for
// concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	ln      net.Listener
	hc      *http.Client
	ownHC   bool
	now     func() time.Time
	metrics *metrics
	http    *http.Server

	peers   *peerTable
	origins *originPeers
	cache   *metainfoCache
	fetches singleflight.Group
	waiting atomic.Int64 // requests waiting for a metainfo fetch (tests watch it)

	stopping     chan struct{} // closed when the HTTP server starts shutting down
	stoppingOnce sync.Once
	started      atomic.Bool
}

// New validates cfg and builds a tracker. It starts nothing; the caller must Run or Close it.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new tracker: %w", err)
	}
	if deps.Listener == nil {
		return nil, errors.New("new tracker: no listener")
	}
	s := &Server{
		cfg:      cfg,
		log:      deps.Logger,
		ln:       deps.Listener,
		hc:       deps.HTTPClient,
		now:      deps.Now,
		cache:    newMetainfoCache(cfg.MetainfoCache),
		stopping: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("role", "tracker")
	if s.now == nil {
		s.now = time.Now
	}
	if s.hc == nil {
		s.ownHC = true
		s.hc = &http.Client{Transport: &http.Transport{
			Proxy:       http.ProxyFromEnvironment,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			// An origin answers a metainfo request only once it holds the blob, which it may
			// first pull from storage.
			ResponseHeaderTimeout: 10 * time.Minute,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
		}}
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new tracker: %w", err)
	}
	s.metrics = m
	s.peers = newPeerTable(cfg.PeerTTL, cfg.MaxPeers, func(d int) { m.peers.Add(float64(d)) })
	s.origins = newOriginPeers(cfg.Origins, s.hc, s.log, func(n int) { m.origins.Set(float64(n)) })

	mux := http.NewServeMux()
	s.routes(mux)
	admin.Mount(mux, deps.Gatherer, s.ready)
	s.http = httpserve.NewServer(httpserve.Instrument(mux, s.metrics.requests))
	s.http.RegisterOnShutdown(s.stop)
	return s, nil
}

// Addr returns the address the HTTP API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully. It may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("run tracker: already started or closed")
	}
	defer s.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return httpserve.Serve(gctx, s.http, s.ln) })
	g.Go(func() error { return s.origins.run(gctx) })
	g.Go(func() error { return s.runSweep(gctx) })
	s.log.Info("tracker started", "addr", s.Addr(), "origins", s.cfg.Origins, "replicas", s.cfg.Replicas)
	err := g.Wait()
	s.log.Info("tracker stopped")
	return err
}

// Close releases a Server that was built but will not be Run: its listener. After Run has
// started, cancel Run's context instead; Close then does nothing.
func (s *Server) Close() error {
	if !s.started.CompareAndSwap(false, true) {
		return nil
	}
	err := s.ln.Close()
	s.close()
	return err
}

func (s *Server) close() {
	s.stop()
	if s.ownHC {
		s.hc.CloseIdleConnections()
	}
}

// stop cancels shared metainfo fetches, which would otherwise hold up a graceful shutdown.
func (s *Server) stop() { s.stoppingOnce.Do(func() { close(s.stopping) }) }

// ready: every origin has been asked for its swarm identity once, so handouts are as complete
// as they will be. Origins that did not answer do not make the tracker unready: peers still
// find each other through it.
func (s *Server) ready(ctx context.Context) error {
	if !s.origins.firstRound.Load() {
		return errors.New("the origins have not all been asked for their swarm identity yet")
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
