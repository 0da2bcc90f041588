package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/registry"
)

// Deps are a proxy's collaborators.
type Deps struct {
	// Listener serves the OCI distribution API and the admin endpoints; required (tests pass
	// 127.0.0.1:0). The Server owns it.
	Listener net.Listener
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the proxy's metrics (and its ring's); nil registers nowhere.
	Registerer prometheus.Registerer
	// Gatherer serves /metrics; nil disables the endpoint.
	Gatherer prometheus.Gatherer
	// HTTPClient talks to the origins and the build-index; nil means a client built from
	// Config.Timeouts whose idle connections are closed when the Server stops. A client given
	// here should set Transport.ExpectContinueTimeout, or chunks refused by a busy origin
	// session are not retried.
	HTTPClient *http.Client
	// Checker overrides the health checks of the origins (tests).
	Checker ring.Checker
}

// Server is one proxy. Build it with New and run it with Run.
type Server struct {
	cfg     Config
	log     *slog.Logger
	ln      net.Listener
	hc      *http.Client
	ownHC   bool
	ring    *ring.Ring
	reg     *Registry
	http    *http.Server
	started atomic.Bool
}

// New validates cfg and builds a proxy. It starts nothing; the caller must Run or Close it.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	if deps.Listener == nil {
		return nil, errors.New("new proxy: no listener")
	}
	s := &Server{cfg: cfg, log: deps.Logger, ln: deps.Listener, hc: deps.HTTPClient}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("role", "proxy")
	if s.hc == nil {
		s.ownHC = true
		s.hc = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: cfg.Timeouts.Dial}).DialContext,
			ResponseHeaderTimeout: cfg.Timeouts.OriginResponse,
			// Chunks wait for the origin's approval before their body is sent (see
			// client.Origin.AppendUpload); an origin that never answers 100 gets the body after this.
			ExpectContinueTimeout: 5 * time.Second,
			MaxIdleConnsPerHost:   32,
		}}
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	checker := deps.Checker
	if checker == nil {
		checker = ring.HTTPChecker{Client: s.hc}
	}
	s.ring, err = ring.New(cfg.ringConfig(), ring.Deps{Checker: checker, Logger: s.log, Registerer: deps.Registerer})
	if err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	s.reg = &Registry{
		log: s.log,
		index: client.NewBuildIndexes(cfg.BuildIndex, s.hc, client.BuildIndexesOptions{
			Attempt: cfg.Timeouts.BuildIndex,
			OnFailure: func(_, next string) {
				if next != "" {
					m.failovers.WithLabelValues("build_index").Inc()
				}
			},
		}),
		origins: &origins{ring: s.ring, hc: s.hc,
			failovers: func() { m.failovers.WithLabelValues("origin").Inc() }},
		cache:   registry.NewManifestCache(int64(cfg.ManifestCache), 0),
		maxBlob: int64(cfg.MaxBlobSize),
		metrics: m,
	}
	mux := http.NewServeMux()
	admin.Mount(mux, deps.Gatherer, s.ready)
	oci := registry.NewHandler(s.reg, s.reg, registry.HandlerOptions{Logger: s.log})
	s.http = httpserve.NewServer(httpserve.Instrument(registry.Mount(oci, mux), m.requests))
	return s, nil
}

// Addr returns the address the API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Registry returns the proxy's storage, the registry.Reader and registry.Writer its OCI API
// serves.
func (s *Server) Registry() *Registry { return s.reg }

// Run serves until ctx ends, then shuts down gracefully. It may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("run proxy: already started or closed")
	}
	defer s.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return httpserve.Serve(gctx, s.http, s.ln) })
	g.Go(func() error { return s.ring.Run(gctx) })
	s.log.Info("proxy started", "addr", s.Addr(), "origins", s.cfg.Origins, "build_index", s.cfg.BuildIndex)
	err := g.Wait()
	s.log.Info("proxy stopped")
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
	if s.ownHC {
		s.hc.CloseIdleConnections()
	}
}

// ready reports whether the proxy can take pushes: some origin is healthy and some build-index
// node is ready.
func (s *Server) ready(ctx context.Context) error {
	healthy := false
	for _, m := range s.ring.Members() {
		healthy = healthy || m.Healthy
	}
	if !healthy {
		return errors.New("no origin is healthy")
	}
	return s.reg.index.Ready(ctx)
}
