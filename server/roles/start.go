package roles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/server"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/server/tracker"
)

// Env is what the process gives every role it starts.
type Env struct {
	// Logger receives the role's logs; nil discards them.
	Logger *slog.Logger
	// Metrics is the process's registry: the role registers its metrics there and serves it
	// on its admin listener. Nil registers and serves none.
	Metrics *prometheus.Registry
}

// deps takes the listeners every role has and fills in the rest of what every role takes.
func (e Env) deps(lns *listeners) role.Deps {
	d := role.Deps{Listener: lns.take("listen"), AdminListener: lns.take("admin_listen"), Logger: e.Logger, TLS: lns.tls}
	if e.Metrics != nil { // a nil *Registry in an interface is not nil
		d.Registerer, d.Gatherer = e.Metrics, e.Metrics
	}
	return d
}

// listeners are the listeners bound for a config's ListenAddrs, handed to the role by key with
// take. Keys are strings, so start checks them: a key that is not one of the config's, or a
// bound listener that no key took, would otherwise leak a port or leave a listener unserved
// (an origin that does not seed).
type listeners struct {
	tls     *pki.Provider   // the role's certificate, nil in plain text; served on every listener
	keys    map[string]bool // every key of ListenAddrs, bound or off
	bound   map[string]net.Listener
	taken   []net.Listener
	unknown []string
}

// listen binds every address cfg names. On error it closes what it bound and names the key.
func listen(ctx context.Context, cfg config.Listener) (*listeners, error) {
	var lc net.ListenConfig
	lns := &listeners{keys: map[string]bool{}, bound: map[string]net.Listener{}}
	for _, a := range cfg.ListenAddrs() {
		lns.keys[a.Key] = true
		if a.Addr == "" {
			continue
		}
		ln, err := lc.Listen(ctx, "tcp", a.Addr)
		if err != nil {
			lns.close()
			return nil, fmt.Errorf("%s: %w", a.Key, err)
		}
		lns.bound[a.Key] = ln
	}
	return lns, nil
}

// take hands out the listener of key, nil when that listener is off. Each is handed out once.
func (l *listeners) take(key string) net.Listener {
	if !l.keys[key] {
		l.unknown = append(l.unknown, key)
		return nil
	}
	ln, ok := l.bound[key]
	if !ok {
		return nil
	}
	delete(l.bound, key)
	l.taken = append(l.taken, ln)
	return ln
}

// done reports the keys taken that the config does not have and the listeners bound that were
// not taken. When there are any, it closes every listener, taken or not: the role is not built.
func (l *listeners) done() error {
	var errs []error
	for _, key := range l.unknown {
		errs = append(errs, fmt.Errorf("start: %q is not a listen key of the config", key))
	}
	for _, key := range slices.Sorted(maps.Keys(l.bound)) {
		errs = append(errs, fmt.Errorf("start: %s is bound but the role does not take it", key))
	}
	if len(errs) > 0 {
		l.close()
	}
	return errors.Join(errs...)
}

func (l *listeners) close() {
	for _, ln := range l.bound {
		_ = ln.Close() // never used; the error that stops the start is the one to report
	}
	for _, ln := range l.taken {
		_ = ln.Close() // as above
	}
}

// start is the one way a role is started from its completed config: bind its listeners, take
// each into the role's deps, then build it on them. build owns the listeners from the call on
// (a role's New closes them when it fails); until then start does, and it refuses a listener
// deps did not take.
func start[C any, P interface {
	*C
	config.Listener
	TLSConfig() pki.Config
}, D any, R server.Role](ctx context.Context, cfg config.Role, deps func(*listeners) D, build func(C, D) (R, error)) (server.Role, error) {
	c, ok := cfg.(P)
	if !ok {
		return nil, fmt.Errorf("start: config is %T, want %T", cfg, P(nil))
	}
	// The certificate is checked before any port is bound: an expired or foreign one stops
	// the start with an error that names the file.
	var tlsp *pki.Provider
	if tc := c.TLSConfig(); tc.Enabled() {
		p, err := pki.Load(tc)
		if err != nil {
			return nil, err
		}
		tlsp = p
	}
	lns, err := listen(ctx, c)
	if err != nil {
		return nil, err
	}
	lns.tls = tlsp
	d := deps(lns)
	if err := lns.done(); err != nil {
		return nil, err
	}
	r, err := build(*c, d)
	if err != nil {
		return nil, err // not r: a nil *Server in a server.Role is not nil
	}
	return r, nil
}

func startAgent(ctx context.Context, cfg config.Role, env Env) (server.Role, error) {
	return start(ctx, cfg, func(lns *listeners) agent.Deps {
		return agent.Deps{Deps: env.deps(lns), PeerListener: lns.take("peer_listen")}
	}, agent.New)
}

func startOrigin(ctx context.Context, cfg config.Role, env Env) (server.Role, error) {
	return start(ctx, cfg, func(lns *listeners) origin.Deps {
		return origin.Deps{Deps: env.deps(lns), PeerListener: lns.take("peer.listen")}
	}, origin.New)
}

func startTracker(ctx context.Context, cfg config.Role, env Env) (server.Role, error) {
	return start(ctx, cfg, func(lns *listeners) tracker.Deps {
		return tracker.Deps{Deps: env.deps(lns)}
	}, tracker.New)
}

func startProxy(ctx context.Context, cfg config.Role, env Env) (server.Role, error) {
	return start(ctx, cfg, func(lns *listeners) proxy.Deps {
		return proxy.Deps{Deps: env.deps(lns)}
	}, proxy.New)
}

func startBuildIndex(ctx context.Context, cfg config.Role, env Env) (server.Role, error) {
	return start(ctx, cfg, func(lns *listeners) buildindex.Deps {
		return buildindex.Deps{Deps: env.deps(lns), RaftListener: lns.take("raft_listen")}
	}, buildindex.New)
}
