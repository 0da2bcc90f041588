package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
)

// dialTimeout bounds connecting to a tracker or a build-index node, so that an unreachable one
// is given up on (and the next one tried) promptly.
const dialTimeout = 5 * time.Second

// Deps are the agent's collaborators.
type Deps struct {
	// Listener serves the blob API; required (tests pass 127.0.0.1:0). Run closes it.
	Listener net.Listener
	// PeerListener accepts swarm connections; required. Run closes it.
	PeerListener net.Listener
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the agent's, the scheduler's and the store's metrics; nil registers
	// none.
	Registerer prometheus.Registerer
	// Gatherer serves /metrics; nil disables the endpoint.
	Gatherer prometheus.Gatherer
	// HTTPClient talks to the trackers and the build-index; nil means a default client.
	HTTPClient *http.Client
	// Tracker replaces the tracker client built from Config.Trackers (tests use an in-process
	// tracker).
	Tracker scheduler.Tracker
}

// Server is one agent. Build it with New and run it with Run.
type Server struct {
	cfg     Config
	log     *slog.Logger
	ln      net.Listener
	pln     net.Listener
	store   *castore.Store
	sched   *scheduler.Scheduler
	metrics *metrics
	oci     *registry.Handler // the /v2/ pull API
	http    *http.Server

	closeOnce sync.Once
	started   atomic.Bool
}

// New opens the agent's store and builds its scheduler and HTTP server. It starts nothing;
// on error it has closed nothing of deps (the caller still owns the listeners).
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new agent: %w", err)
	}
	if deps.Listener == nil {
		return nil, errors.New("new agent: no listener")
	}
	if deps.PeerListener == nil {
		return nil, errors.New("new agent: no peer listener")
	}
	s := &Server{cfg: cfg, log: deps.Logger, ln: deps.Listener, pln: deps.PeerListener}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("role", "agent")
	hc := deps.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 8,
		}}
	}
	tracker := deps.Tracker
	if tracker == nil {
		c, err := announce.NewClient(cfg.Trackers, hc)
		if err != nil {
			return nil, fmt.Errorf("new agent: trackers: %w", err)
		}
		tracker = c
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new agent: %w", err)
	}
	s.metrics = m

	if err := os.MkdirAll(cfg.StoreDir, 0o755); err != nil {
		return nil, fmt.Errorf("new agent: create store dir: %w", err)
	}
	s.store, err = castore.Open(filepath.Join(cfg.StoreDir, "blobs"), castore.Options{
		Capacity:   int64(cfg.Capacity),
		Logger:     s.log,
		Registerer: deps.Registerer,
	})
	if err != nil {
		return nil, fmt.Errorf("new agent: %w", err)
	}
	s.sched, err = scheduler.New(scheduler.Config{
		Advertise:     cfg.PeerAdvertise,
		MaxConns:      cfg.MaxConns,
		PipelineBytes: int64(cfg.Pipeline),
		SeedTime:      cfg.SeedTime,
		EgressRate:    int64(cfg.EgressRate),
		IngressRate:   int64(cfg.IngressRate),
	}, scheduler.Deps{
		Store:      s.store,
		Listener:   deps.PeerListener,
		Tracker:    tracker,
		Logger:     s.log,
		Registerer: deps.Registerer,
	})
	if err != nil {
		s.closeStore()
		return nil, fmt.Errorf("new agent: %w", err)
	}
	var ix *client.BuildIndexes
	if len(cfg.BuildIndex) > 0 {
		ix = client.NewBuildIndexes(cfg.BuildIndex, hc, client.BuildIndexesOptions{
			OnFailure: func(node, _ string) { m.indexFailures.WithLabelValues(node).Inc() },
		})
	}
	s.oci = registry.NewHandler(newOCIReader(s.sched, ix, m), nil, registry.HandlerOptions{Logger: s.log})
	mux := http.NewServeMux()
	s.routes(mux)
	admin.Mount(mux, deps.Gatherer, nil)
	s.http = httpserve.NewServer(httpserve.Instrument(registry.Mount(s.oci, mux), s.metrics.requests))
	return s, nil
}

// Addr returns the address the blob API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// PeerAddr returns the address announced to the swarm.
func (s *Server) PeerAddr() string { return s.sched.Addr() }

// Run serves the blob API and runs the swarm until ctx ends, then shuts down gracefully
// (in-flight downloads stop; their partial data stays on disk and resumes on the next start)
// and closes the store. It may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("run agent: already started or closed")
	}
	defer s.closeStore()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return httpserve.Serve(ctx, s.http, s.ln) })
	g.Go(func() error { return s.sched.Run(ctx) })
	s.log.Info("agent started", "addr", s.Addr(), "peer_addr", s.PeerAddr(), "peer_id", s.sched.PeerID().String(),
		"trackers", s.cfg.Trackers, "build_index", s.cfg.BuildIndex)
	err := g.Wait()
	s.log.Info("agent stopped")
	return err
}

// Close releases a Server that was built but will not be Run: its listeners and its store.
// After Run has started, cancel Run's context instead; Close then does nothing.
func (s *Server) Close() error {
	if !s.started.CompareAndSwap(false, true) {
		return nil
	}
	err := errors.Join(s.ln.Close(), s.pln.Close())
	s.closeStore()
	return err
}

func (s *Server) closeStore() {
	s.closeOnce.Do(func() {
		if err := s.store.Close(); err != nil {
			s.log.Error("close store", "err", err)
		}
	})
}
