package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/ring/members"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/server/seed"
)

// Deps are a proxy's collaborators. Its Listener serves the OCI distribution API and its
// HTTPClient talks to the origins and the build-index; a nil HTTPClient is built from
// Config.Timeouts, and one given should set Transport.ExpectContinueTimeout, or chunks refused
// by a busy origin session are not retried.
type Deps struct {
	role.Deps
	// Checker overrides the health checks of the origins (tests).
	Checker ring.Checker
}

// Server is one proxy. Build it with New and run it with Run (or release it with Close).
type Server struct {
	base *role.Base
	cfg  Config
	log  *slog.Logger
	ln   net.Listener
	hc   *http.Client
	ring *ring.Ring
	reg  *Registry
	// origins is the seeder's client of the origins, following DNS with the ring.
	origins *client.Cluster
}

// New validates cfg and builds a proxy. It starts nothing; the caller must Run or Close it.
func New(cfg Config, deps Deps) (*Server, error) {
	b, err := role.Open("proxy", &cfg, deps.Deps)
	if err != nil {
		return nil, err
	}
	s := &Server{base: b, cfg: cfg, log: b.Logger(), ln: deps.Listener}
	s.hc = b.Client(deps.HTTPClient, httpserve.ClientOptions{
		DialTimeout:           cfg.Timeouts.Dial,
		ResponseHeaderTimeout: cfg.Timeouts.OriginResponse,
		// Chunks wait for the origin's approval before their body is sent (see
		// client.Origin.AppendUpload); an origin that never answers 100 gets the body after this.
		ExpectContinueTimeout: 5 * time.Second,
		MaxIdleConnsPerHost:   32,
	})
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, b.Fail(err)
	}
	checker := deps.Checker
	if checker == nil {
		checker = ring.HTTPChecker{Client: s.hc}
	}
	// Origins and build-index nodes given as dns:/// entries are followed: the ring and the
	// clients take every new answer.
	originList, err := b.Members("origins", cfg.Origins, role.MembersOptions{Interval: cfg.DNSInterval}, s.setOrigins)
	if err != nil {
		return nil, b.Fail(err)
	}
	indexes, err := b.Members("build_index", cfg.BuildIndex, role.MembersOptions{Interval: cfg.DNSInterval},
		func(addrs []string) { s.reg.index.SetAddrs(addrs) })
	if err != nil {
		return nil, b.Fail(err)
	}
	ringCfg := cfg.ringConfig()
	ringCfg.Members = originList.Addrs()
	// Origins found by DNS may not have resolved yet: the proxy starts with an empty ring
	// (not ready, its requests 503) and the list fills it in.
	s.ring, err = ring.New(ringCfg, ring.Deps{Checker: checker, Logger: s.log, Registerer: deps.Registerer,
		StartEmpty: members.HasDNS(cfg.Origins)})
	if err != nil {
		return nil, b.Fail(err)
	}
	s.origins = client.NewCluster(originList.Addrs(), s.hc)
	s.reg = &Registry{
		log: s.log,
		index: client.NewBuildIndexes(indexes.Addrs(), s.hc, client.BuildIndexesOptions{
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
	notify := &notifications{log: s.log}
	seedAttr := "off"
	if cfg.Seed != nil {
		q, err := s.seedQueue(cfg, deps)
		if err != nil {
			return nil, b.Fail(err)
		}
		notify.q, seedAttr = q, "notifications"
		if cfg.Seed.OnPush {
			// Enqueue never blocks: a push is neither slowed nor failed by seeding.
			s.reg.pushed = func(repo string, d digest.Digest) { q.Enqueue(repo, d) }
			seedAttr = "on_push,notifications"
		}
		b.Go(q.Run)
	}
	mux := http.NewServeMux()
	admin.MountHealth(mux, s.ready)
	mux.Handle(NotificationsPath, notify)
	oci := registry.NewHandler(s.reg, s.reg, registry.HandlerOptions{Logger: s.log})
	api := registry.Mount(oci, mux)
	authAttr := "off"
	if cfg.Auth != nil {
		guard, err := auth.New(cfg.Auth, auth.Options{Logger: s.log, Registerer: deps.Registerer})
		if err != nil {
			return nil, b.Fail(err)
		}
		api, authAttr = guard.Wrap(api), cfg.Auth.Mode
		notify.guard = guard
	} else {
		s.log.Warn("auth is off: anyone who reaches the proxy may push, tag and delete (set auth: in the config)")
	}
	b.Serve(deps.Listener, httpserve.Instrument(api, m.requests), httpserve.ServerOptions{})
	b.ServeAdmin(deps.AdminListener, deps.Gatherer, s.ready)
	b.Go(s.ring.Run)
	b.StartedAttrs("addr", s.Addr(), "origins", cfg.Origins, "build_index", cfg.BuildIndex, "auth", authAttr, "seed", seedAttr)
	return s, nil
}

// setOrigins applies a new DNS answer for origins to the ring and the seeder's client.
func (s *Server) setOrigins(addrs []string) {
	if err := s.ring.SetMembers(addrs); err != nil {
		s.log.Warn("origins from DNS refused", "addrs", addrs, "err", err)
		return
	}
	s.origins.SetAddrs(addrs)
}

// seedQueue builds the seed queue of cfg.Seed: a seed.Seeder on the proxy's origins and
// build-index, drained by one worker.
func (s *Server) seedQueue(cfg Config, deps Deps) (*seedQueue, error) {
	sd, err := seed.New(seed.Config{Parallel: cfg.Seed.Parallel, Agents: cfg.Seed.Agents}, seed.Deps{
		Origins:    s.origins,
		BuildIndex: s.reg.index,
		HTTPClient: s.hc,
		Log:        s.log,
	})
	if err != nil {
		return nil, err
	}
	m, err := newSeedMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	return newSeedQueue(sd, cfg.Seed.Queue, s.log.With("component", "seed"), m), nil
}

// Addr returns the address the API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully (requests in flight first, then the
// server's loops) and closes what the server opened; it returns the first failure, if any. It
// may be called once.
func (s *Server) Run(ctx context.Context) error { return s.base.Run(ctx) }

// Close releases a server that was built but will not be Run: its listeners and what it
// opened. After Run has started, cancel Run's context instead; Close then does nothing.
func (s *Server) Close() error { return s.base.Close() }

// Registry returns the proxy's storage, the registry.Reader and registry.Writer its OCI API
// serves.
func (s *Server) Registry() *Registry { return s.reg }

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
