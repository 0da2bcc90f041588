package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/cacheapi"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
)

// Deps are the agent's collaborators. Its Listener serves the blob API and its HTTPClient talks
// to the trackers and the build-index.
type Deps struct {
	role.Deps
	// PeerListener accepts swarm connections; required.
	PeerListener net.Listener
	// Tracker replaces the tracker client built from Config.Trackers (tests use an in-process
	// tracker).
	Tracker scheduler.Tracker
}

// Server is one agent. Build it with New and run it with Run (or release it with Close).
type Server struct {
	base     *role.Base
	cfg      Config
	log      *slog.Logger
	ln       net.Listener
	store    *castore.Store
	sched    *scheduler.Scheduler
	metrics  *metrics
	oci      *registry.Handler // the /v2/ pull API
	hc       *http.Client
	ix       *client.BuildIndexes // nil without build_index
	trackers *announce.Client     // probed for readiness; nil when a tracker was injected
	cache    *cacheapi.Cache      // cleanup policy and the cache API
}

// New opens the agent's store and builds its scheduler and HTTP server. It starts nothing; the
// caller must Run or Close it.
func New(cfg Config, deps Deps) (*Server, error) {
	b, err := role.Open("agent", &cfg, deps.Deps, deps.PeerListener)
	if err != nil {
		return nil, err
	}
	if deps.PeerListener == nil {
		return nil, b.Fail(errors.New("no peer listener"))
	}
	s := &Server{base: b, cfg: cfg, log: b.Logger(), ln: deps.Listener}
	// Tracker and build-index calls wait for their answer as long as the request's context
	// allows: a tag read may wait for a leader, and the scheduler bounds its announces.
	hc := b.Client(deps.HTTPClient, httpserve.ClientOptions{ResponseHeaderTimeout: -1, MaxIdleConnsPerHost: 8})
	s.hc = hc
	tracker := deps.Tracker
	if tracker == nil {
		// The announce client exists before the scheduler it reports failovers to; it
		// announces only once the scheduler runs.
		failover := announce.WithFailover(func(d digest.Digest, tracker string, err error) {
			if s.sched != nil {
				s.sched.TrackerFailover(d, tracker, err)
			}
		})
		var c *announce.Client
		thc := hc
		if deps.HTTPClient == nil {
			if src := announceSource(cfg.PeerAdvertise); src != nil {
				// The tracker accepts an announce only for the address it comes from. On a
				// node, a hostNetwork agent's connection to a tracker pod would leave from
				// the CNI bridge's or tunnel's address, not the node IP it advertises; so it
				// talks to the trackers from that address.
				bound := b.Client(nil, httpserve.ClientOptions{ResponseHeaderTimeout: -1, MaxIdleConnsPerHost: 8, LocalAddr: src})
				thc = &http.Client{Transport: &sourceFallback{bound: bound.Transport, free: hc.Transport, log: s.log}}
				b.StartedAttrs("announce_from", src.IP.String())
			}
		}
		list, err := b.Members("trackers", cfg.Trackers, role.MembersOptions{Interval: cfg.DNSInterval}, func(addrs []string) {
			if err := c.SetTrackers(addrs); err != nil {
				s.log.Warn("trackers from DNS refused", "addrs", addrs, "err", err)
			}
		})
		if err != nil {
			return nil, b.Fail(err)
		}
		if c, err = announce.NewClient(list.Addrs(), thc, failover); err != nil {
			return nil, b.Fail(fmt.Errorf("trackers: %w", err))
		}
		tracker, s.trackers = c, c
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, b.Fail(err)
	}
	s.metrics = m

	if err := os.MkdirAll(cfg.StoreDir, 0o755); err != nil {
		return nil, b.Fail(fmt.Errorf("create store dir: %w", err))
	}
	s.store, err = castore.Open(filepath.Join(cfg.StoreDir, "blobs"), castore.Options{
		Capacity:   int64(cfg.Capacity),
		Logger:     s.log,
		Registerer: deps.Registerer,
	})
	if err != nil {
		return nil, b.Fail(err)
	}
	b.OnClose("store", s.store.Close)
	// An agent holds nothing it must keep across a restart: a store over its capacity is
	// trimmed before it serves (castore logs what it evicted).
	if _, err := s.store.Trim(); err != nil {
		s.log.Warn("trim the store to its capacity", "err", err) // the next reservations evict too
	}
	peers := b.Peers(deps.PeerListener, cfg.PeerPlain, scheduler.DefaultHandshakeTimeout)
	s.sched, err = scheduler.New(scheduler.Config{
		PeerID:           peers.PeerID,
		Advertise:        cfg.PeerAdvertise,
		API:              apiAdvertise(cfg.APIAdvertise, deps.Listener),
		MaxConns:         cfg.MaxConns,
		MaxConnsPerAddr:  cfg.MaxConnsPerAddr,
		MaxConnsPerHost:  cfg.MaxConnsPerHost,
		MaxHandshakes:    cfg.MaxHandshakes,
		IdleGrace:        cfg.IdleGrace,
		NoRequestTimeout: cfg.NoRequestTimeout,
		PipelineBytes:    int64(cfg.Pipeline),
		SeedTime:         cfg.SeedTime,
		EgressRate:       int64(cfg.EgressRate),
		IngressRate:      int64(cfg.IngressRate),
	}, scheduler.Deps{
		Store:        s.store,
		Listener:     peers.Listener,
		Dial:         peers.Dial,
		Authenticate: peers.Authenticate,
		Tracker:      tracker,
		Logger:       s.log,
		Registerer:   deps.Registerer,
	})
	if err != nil {
		return nil, b.Fail(err)
	}
	s.cache = cacheapi.New("agent", s.store, cfg.Cleanup, cacheapi.Options{
		Keep: s.sched.Active, Allow: cacheAllow(cfg), Logger: s.log,
	})
	if len(cfg.BuildIndex) > 0 {
		list, err := b.Members("build_index", cfg.BuildIndex, role.MembersOptions{Interval: cfg.DNSInterval},
			func(addrs []string) { s.ix.SetAddrs(addrs) })
		if err != nil {
			return nil, b.Fail(err)
		}
		s.ix = client.NewBuildIndexes(list.Addrs(), hc, client.BuildIndexesOptions{
			OnFailure: func(node, _ string) { m.indexFailures.WithLabelValues(node).Inc() },
		})
	} else {
		s.log.Warn("no build_index: the registry API serves sha256 digests under any repository name, since it cannot check which repositories hold them")
	}
	s.oci = registry.NewHandler(newOCIReader(s.sched, s.ix, m), nil, registry.HandlerOptions{Logger: s.log})
	mux := http.NewServeMux()
	s.routes(mux)
	admin.MountHealth(mux, s.ready)
	api := registry.Mount(s.oci, mux)
	authAttrs := []any{"auth", "off"}
	switch {
	case cfg.Auth != nil:
		guard, err := auth.New(&cfg.Auth.Config, auth.Options{Logger: s.log, Registerer: deps.Registerer})
		if err != nil {
			return nil, b.Fail(err)
		}
		open := cfg.Auth.Loopback == LoopbackOpen
		api = guardAPI(api, guard, open)
		authAttrs = []any{"auth", cfg.Auth.Mode, "auth_loopback", cfg.Auth.Loopback}
		if open && onLoopback(deps.Listener.Addr()) {
			s.log.Warn("auth applies to no caller: listen is on loopback and auth.loopback is open (set auth.loopback: required, or listen beyond loopback)")
		}
	case !onLoopback(deps.Listener.Addr()):
		s.log.Warn("auth is off and the API listens beyond loopback: anyone who reaches it may pull every image and read every blob (set auth: in the config, or keep listen on loopback)",
			"addr", s.Addr())
	}
	b.Serve(deps.Listener, httpserve.Instrument(api, s.metrics.requests), httpserve.ServerOptions{})
	b.ServeAdmin(deps.AdminListener, deps.Gatherer, s.ready)
	b.Go(s.sched.Run)
	b.Go(s.cache.Run)
	b.StartedAttrs(append([]any{"addr", s.Addr(), "peer_addr", s.PeerAddr(), "peer_id", s.sched.PeerID().String(),
		"trackers", cfg.Trackers, "build_index", cfg.BuildIndex}, authAttrs...)...)
	return s, nil
}

// cacheAllow is who may use the cache API (it shows and removes what the agent holds): with
// auth: configured, the guard in front of every route already admits only the admin group
// there (guardAPI); without it but under TLS, an admin certificate; in plain text, anyone who
// reaches the API, like every other route.
func cacheAllow(cfg Config) func(*http.Request) error {
	if cfg.Auth != nil || !cfg.TLS.Enabled() {
		return nil
	}
	return func(r *http.Request) error {
		return pki.Allowed(r.TLS, r.Method+" "+r.URL.Path, pki.GroupAdmin)
	}
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

// PeerAddr returns the address announced to the swarm.
func (s *Server) PeerAddr() string { return s.sched.Addr() }

// readyProbeTimeout bounds each of the readiness probes, which run at once: an orchestrator
// polls /readyz every few seconds with a timeout of its own (Kubernetes: 1 s by default), and
// a dependency that does not answer in that long is as good as down for a pull.
const readyProbeTimeout = 900 * time.Millisecond

// ready: the agent can serve pulls when a tracker answers (it introduces the swarm and serves
// metainfo) and, with build_index set, a build-index node knows a leader (tags resolve). The
// probes run at the same time, each asking all its nodes at once. Injected trackers (tests) are
// not probed.
//
// Each call asks the trackers and build-index nodes; admin.MountHealth shares one answer
// among the /readyz requests of a second, so a flood of them is not passed on.
func (s *Server) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyProbeTimeout)
	defer cancel()
	var trackerErr, indexErr error
	var wg sync.WaitGroup
	if s.trackers != nil {
		wg.Go(func() { trackerErr = s.trackers.Ping(ctx, readyProbeTimeout) })
	}
	if s.ix != nil {
		wg.Go(func() {
			if err := s.ix.Ready(ctx); err != nil {
				indexErr = fmt.Errorf("build-index: %w", err)
			}
		})
	}
	wg.Wait()
	return errors.Join(trackerErr, indexErr)
}

// sourceFallback sends through bound (connections from the announced address) and, when the
// announced address itself cannot be used for a connection (it went away from the host, or the
// tracker is of the other IP family), sends that request through free (the kernel's choice).
// Those errors come from the local bind, before any packet, so trying bound first costs
// nothing. Other failures (a name that does not resolve yet, a tracker that is down) are the
// request's own and are returned as they are: falling back on them would announce from an
// address the tracker refuses.
type sourceFallback struct {
	bound, free http.RoundTripper
	warned      atomic.Bool
	log         *slog.Logger
}

func (f *sourceFallback) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := f.bound.RoundTrip(r)
	if err == nil || !sourceUnusable(err) || r.Context().Err() != nil {
		return resp, err
	}
	if f.warned.CompareAndSwap(false, true) {
		f.log.Warn("cannot connect to a tracker from the announced address; using the host's default source address for such connections (the tracker refuses announces from an address it is not told, unless announce.nat_cidrs lists it)",
			"err", err)
	}
	if r.Body != nil && r.Body != http.NoBody {
		if r.GetBody == nil {
			return nil, err
		}
		body, gerr := r.GetBody()
		if gerr != nil {
			return nil, errors.Join(err, gerr)
		}
		r = r.Clone(r.Context())
		r.Body = body
	}
	return f.free.RoundTrip(r)
}

// sourceUnusable reports whether err says the dial's local address cannot be used: not an
// address of this host (any more), or not of the destination's family.
func sourceUnusable(err error) bool {
	var ae *net.AddrError
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT) ||
		errors.As(err, &ae) && strings.Contains(ae.Err, "mismatched local address type")
}

// announceSource is the source address for connections to the trackers: the host of
// peerAdvertise when it is an IP address of one of this host's interfaces other than loopback
// (so a tracker sees the address announced), else nil (the kernel picks, as for every other
// connection; behind NAT the tracker's nat_cidrs apply).
func announceSource(peerAdvertise string) *net.TCPAddr {
	host, _, err := net.SplitHostPort(peerAdvertise)
	if err != nil {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.IsLoopback() || ip.IsUnspecified() {
		return nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == ip.Unmap() {
			return &net.TCPAddr{IP: ip.AsSlice()}
		}
	}
	return nil
}

// apiAdvertise is the API address announced to the trackers: api_advertise, else the API
// listener's address when it is one other hosts could be told (an IP that is not 0.0.0.0 or
// [::]), else none.
func apiAdvertise(configured string, ln net.Listener) string {
	if configured != "" {
		return configured
	}
	ap, err := announce.ParseAddr(ln.Addr().String())
	if err != nil {
		return ""
	}
	return ap.String()
}
