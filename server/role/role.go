// Package role is the skeleton every server role runs on, so that what a role does at start and
// stop is written once: who owns the listeners, which HTTP servers and loops run, what is
// closed, in which order, and what is logged.
//
// Every role's Deps embeds Deps, the collaborators all roles share. A role's New builds a Base
// first, handing it every listener from its Deps; from then on the Base owns them. Each resource the role opens is registered with OnClose as soon as it is open,
// and every error return goes through Fail, which closes all of it: a New that fails leaves
// nothing open. Run serves the registered HTTP servers and loops until the context ends or one
// of them fails, then closes everything once. Close releases a Base that was never Run.
package role

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/krakenctl/krakenctl/ring/members"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
)

// ErrStarted is returned by Run when Run or Close was called before.
var ErrStarted = errors.New("already started or closed")

// Base is the lifecycle of one role. Register everything during New, from one goroutine; after
// that Run and Close are safe to call concurrently (the first one wins).
type Base struct {
	name    string
	log     *slog.Logger
	attrs   []any
	tls     *pki.Provider // nil: plain text
	dns     members.Resolver
	reg     prometheus.Registerer
	lns     []net.Listener // every listener handed over; closed if the role never runs
	servers []served
	loops   []func(context.Context) error
	closers []closer

	started   atomic.Bool
	closeOnce sync.Once
}

type served struct {
	srv   *http.Server
	ln    net.Listener
	admin bool // the admin listener: its failures are logged, not the role's
}

type closer struct {
	what string
	fn   func() error
}

// Deps are the collaborators every role takes; each role's Deps embeds them and says what its
// Listener serves and whom its HTTPClient talks to.
type Deps struct {
	// Listener serves the role's API; required (tests pass 127.0.0.1:0). The role's New takes
	// ownership of it, and of every other listener in its Deps, even when it fails.
	Listener net.Listener
	// AdminListener serves /metrics, /debug/pprof, /health and /readyz; nil serves none.
	AdminListener net.Listener
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the role's metrics (and those of what it builds: a store, a ring, a
	// scheduler); nil registers nowhere.
	Registerer prometheus.Registerer
	// Gatherer serves /metrics on the admin listener; nil disables the endpoint.
	Gatherer prometheus.Gatherer
	// HTTPClient talks to the role's peers; nil means a default client whose idle connections
	// are closed when the Server stops (and which speaks TLS with TLS's certificate).
	HTTPClient *http.Client
	// TLS is the role's certificate and CA: every listener served through the Base speaks TLS
	// and the default client presents the certificate. Nil runs in plain text, which the role
	// logs at start.
	TLS *pki.Provider
	// Resolver answers the dns:///NAME:PORT entries of the role's member lists (see
	// ring/members); nil means net.DefaultResolver. Tests point it at a fake or at a DNS
	// server of their own.
	Resolver members.Resolver
}

// New returns the Base of the role called name (it labels every log line as "role"). It takes
// ownership of d's listeners and of extra, the role's own, at once, nil ones skipped: whatever
// happens next, they are closed by Fail, Run or Close.
func New(name string, d Deps, extra ...net.Listener) *Base {
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Base{name: name, log: log.With("role", name), tls: d.TLS, dns: d.Resolver, reg: d.Registerer}
	for _, ln := range append([]net.Listener{d.Listener, d.AdminListener}, extra...) {
		if ln != nil {
			b.lns = append(b.lns, ln)
		}
	}
	return b
}

// Config is what Open checks of a role's config: Defaults fills what is unset, Validate
// reports every problem (server/config's pipeline has already run both for a config read from a
// file; a config built in code, as tests and the cluster builder do, gets them here).
type Config interface {
	Defaults()
	Validate() error
}

// Open is how a role's New begins: New(name, d, extra...), then cfg's defaults and
// validation, then the check that d has the API listener every role needs. On a problem it
// has closed every listener and returns the error as Fail does.
func Open(name string, cfg Config, d Deps, extra ...net.Listener) (*Base, error) {
	b := New(name, d, extra...)
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, b.Fail(err)
	}
	if d.Listener == nil {
		return nil, b.Fail(errors.New("no listener"))
	}
	if d.TLS == nil {
		b.log.Warn("tls is off: whoever reaches this role's ports can use them; configure tls outside a network trusted by construction")
	} else {
		b.StartedAttrs("tls", d.TLS.Identity().Name, "tls_not_after", d.TLS.NotAfter())
		b.Go(func(ctx context.Context) error { return d.TLS.Watch(ctx, b.log) })
		if d.Registerer != nil {
			// An alert on this is how an operator hears of a rotation that did not happen.
			err := d.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "krakenctl_tls_certificate_not_after_seconds",
				Help: "When the certificate the role presents expires (Unix time); it follows reloads.",
			}, func() float64 { return float64(d.TLS.NotAfter().Unix()) }))
			var are prometheus.AlreadyRegisteredError
			if err != nil && !errors.As(err, &are) {
				return nil, b.Fail(err)
			}
		}
	}
	return b, nil
}

// membersTimeout bounds the first resolution of a member list, done while the role starts.
const membersTimeout = 30 * time.Second

// MembersOptions tune Base.Members.
type MembersOptions struct {
	// Interval is the time between two resolutions; zero means members.DefaultInterval.
	Interval time.Duration
	// AllowEmpty starts the role although nothing resolved yet (see members.Deps).
	AllowEmpty bool
}

// Members builds the role's member list configured under key (static "host:port" entries and
// dns:///NAME:PORT entries, see ring/members) and resolves it once. When it has DNS entries, a
// loop of the role re-resolves them every o.Interval and calls onChange with the new addresses
// whenever they change. The error names key; the caller passes it through Fail.
//
// A list of DNS names that resolve to nothing yet does not stop the role: pods come up before
// the headless Services behind their DNS names list anyone, and a role that exited would be
// restarted with a growing back-off (CrashLoopBackOff). It starts with what it has, logs a
// warning, and the loop fills the list in; until then whatever needs the list fails its
// requests and the role's /readyz says not ready.
func (b *Base) Members(key string, entries []string, o MembersOptions, onChange func([]string)) (*members.List, error) {
	ctx, cancel := context.WithTimeout(context.Background(), membersTimeout)
	defer cancel()
	l, err := members.New(ctx, key, entries, members.Deps{
		Resolver: b.dns, Logger: b.log, Registerer: b.reg, Interval: o.Interval,
		AllowEmpty: o.AllowEmpty || members.HasDNS(entries),
	})
	if err != nil {
		return nil, err
	}
	if l.Dynamic() {
		if len(l.Addrs()) == 0 {
			b.log.Warn("no address for a member list yet; starting, and resolving again until there is one",
				"list", key, "entries", entries)
		}
		b.StartedAttrs(key+"_resolved", l.Addrs())
		b.Go(func(ctx context.Context) error { return l.Run(ctx, onChange) })
	}
	return l, nil
}

// TLS is the role's TLS provider, nil in plain text.
func (b *Base) TLS() *pki.Provider { return b.tls }

// Logger is the role's logger, labelled with its name.
func (b *Base) Logger() *slog.Logger { return b.log }

// With adds attributes to the role's logger and returns it (a node id, an address).
func (b *Base) With(args ...any) *slog.Logger {
	b.log = b.log.With(args...)
	return b.log
}

// StartedAttrs are logged with "<role> started" when Run begins (addresses, peers).
func (b *Base) StartedAttrs(args ...any) { b.attrs = append(b.attrs, args...) }

// Fail closes everything registered so far, listeners included, and returns err wrapped as
// "new <role>: err". Every error return of a role's New goes through it.
func (b *Base) Fail(err error) error {
	b.started.Store(true)
	_ = b.closeListeners() // err, New's own failure, is the one to report
	b.closeAll()
	return fmt.Errorf("new %s: %w", b.name, err)
}

// OnClose registers fn to run when the role stops (after Run, or by Close or Fail), in reverse
// order of registration, once. what names the resource in the error log.
func (b *Base) OnClose(what string, fn func() error) {
	b.closers = append(b.closers, closer{what: what, fn: fn})
}

// Client returns hc when it is not nil (the caller owns it). Otherwise it builds one with
// httpserve.NewClient(o) and closes its idle connections when the role stops.
func (b *Base) Client(hc *http.Client, o httpserve.ClientOptions) *http.Client {
	if hc != nil {
		return hc
	}
	if b.tls != nil {
		o.DialTLS = b.tls.DialTLS
	}
	hc = httpserve.NewClient(o)
	b.OnClose("http client", func() error { hc.CloseIdleConnections(); return nil })
	return hc
}

// Serve registers h to be served on ln (one of the listeners given to New) by an http.Server
// from httpserve.NewServer(h, o), and returns that server (to register shutdown hooks on).
// With TLS, ln serves TLS with the role's client_auth.
func (b *Base) Serve(ln net.Listener, h http.Handler, o httpserve.ServerOptions) *http.Server {
	srv := httpserve.NewServer(h, o)
	srv.ErrorLog = b.errorLog(ln)
	if b.tls != nil {
		ln = tls.NewListener(ln, b.tls.ServerConfig())
	}
	b.servers = append(b.servers, served{srv: srv, ln: ln})
	return srv
}

// ServeAdmin registers the admin endpoints (/health, /readyz, /metrics, /debug/pprof) on ln;
// a nil ln serves none (tests that do not need them).
func (b *Base) ServeAdmin(ln net.Listener, g prometheus.Gatherer, ready admin.ReadyFunc) {
	if ln == nil {
		return
	}
	h := admin.Handler(g, ready)
	if b.tls != nil {
		// Orchestrators probe /health and /readyz without a certificate; metrics and profiles
		// are for holders of one (see admin.Guard).
		ln = tls.NewListener(ln, b.tls.ServerConfigFor(pki.ClientAuthVerifyIfGiven))
		h = admin.Guard(h, func(r *http.Request) (string, bool) {
			id, ok := pki.PeerIdentity(r.TLS)
			return id.Name, ok && (id.In(pki.GroupAdmin) || !strings.HasPrefix(r.URL.Path, "/debug/"))
		})
	}
	srv := httpserve.NewServer(h, httpserve.ServerOptions{})
	srv.ErrorLog = b.errorLog(ln)
	b.servers = append(b.servers, served{srv: srv, ln: ln, admin: true})
}

// errorLog is where net/http's own complaints about ln go (TLS handshakes that fail: a
// stranger without a certificate, an expired one, a port scanner): the role's log at Warn,
// at most errorLogBurst lines at once and one a second after that, so that a flood of
// strangers is not a flood of log lines. The next line logged counts those left out.
func (b *Base) errorLog(ln net.Listener) *log.Logger {
	return log.New(&sampledLog{log: b.log.With("listener", ln.Addr().String()), lim: rate.NewLimiter(1, errorLogBurst)}, "", 0)
}

const errorLogBurst = 10

// sampledLog writes each line it is given to log, as long as lim allows.
type sampledLog struct {
	log     *slog.Logger
	lim     *rate.Limiter
	dropped atomic.Int64
}

func (s *sampledLog) Write(p []byte) (int, error) {
	if !s.lim.Allow() {
		s.dropped.Add(1)
		return len(p), nil
	}
	msg := strings.TrimSpace(string(p))
	if n := s.dropped.Swap(0); n > 0 {
		s.log.Warn(msg, "suppressed_before", n)
	} else {
		s.log.Warn(msg)
	}
	return len(p), nil
}

// Go registers a loop that runs for as long as the role does. A loop returns nil when ctx ends;
// an error from it stops the role.
func (b *Base) Go(loop func(ctx context.Context) error) { b.loops = append(b.loops, loop) }

// Run serves every registered server and runs every loop until ctx ends or one of them fails,
// then stops in phases, so that work in flight can finish: first the HTTP servers shut down
// gracefully (in-flight requests get httpserve.ShutdownTimeout, while the loops they may need,
// such as the swarm a download streams from, still run), then the loops are stopped, then what
// was registered with OnClose is closed, once. It returns nil when ctx ended and everything
// stopped cleanly, else the first error. It may be called once; it returns ErrStarted after Run
// or Close.
//
// Requests still in flight after the grace period are cut off (httpserve.ErrCutOff): that is
// logged, not a failure. The admin listener's failures are logged too, never the role's (a
// profile still running at shutdown must not turn a clean stop into an error).
func (b *Base) Run(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return fmt.Errorf("run %s: %w", b.name, ErrStarted)
	}
	defer b.closeAll()
	// Listeners no server or loop took (a loop that failed before it got to its own) are
	// closed on the way out too; closing one twice is harmless, and Run's own error is the
	// one to report.
	defer func() { _ = b.closeListeners() }()

	srvCtx, stopServers := context.WithCancel(ctx)
	defer stopServers()
	// The loops outlive ctx until the servers have drained.
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	var (
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		stopServers()
		stopLoops()
	}
	var servers, loops sync.WaitGroup
	for _, s := range b.servers {
		servers.Go(func() {
			err := httpserve.Serve(srvCtx, s.srv, s.ln)
			switch {
			case err == nil:
			case errors.Is(err, httpserve.ErrCutOff):
				// A stop, not a failure: long requests (a blob still downloading) had their
				// grace period.
				b.log.Warn("stopped with requests in flight", "err", err)
			case s.admin:
				b.log.Warn("admin listener", "err", err)
			default:
				fail(err)
			}
		})
	}
	for _, loop := range b.loops {
		loops.Go(func() {
			if err := loop(loopCtx); err != nil {
				fail(err)
			}
		})
	}
	b.log.Info(b.name+" started", b.attrs...)
	<-srvCtx.Done()
	servers.Wait()
	stopLoops()
	loops.Wait()
	if firstErr != nil {
		b.log.Error(b.name+" failed", "err", firstErr)
	}
	b.log.Info(b.name + " stopped")
	return firstErr
}

// Close releases a role that was built but will not be Run: its listeners and everything
// registered with OnClose. After Run has started, cancel Run's context instead; Close then does
// nothing.
func (b *Base) Close() error {
	if !b.started.CompareAndSwap(false, true) {
		return nil
	}
	err := b.closeListeners()
	b.closeAll()
	return err
}

func (b *Base) closeListeners() error {
	var errs []error
	for _, ln := range b.lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (b *Base) closeAll() {
	b.closeOnce.Do(func() {
		for _, c := range slices.Backward(b.closers) {
			if err := c.fn(); err != nil {
				b.log.Error("close "+c.what, "err", err)
			}
		}
	})
}
