package roles

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/server"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/proxy"
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

func (e Env) registerer() prometheus.Registerer {
	if e.Metrics == nil {
		return nil
	}
	return e.Metrics
}

func (e Env) gatherer() prometheus.Gatherer {
	if e.Metrics == nil {
		return nil
	}
	return e.Metrics
}

// listeners are a config's listeners by key; a key whose address is empty (that listener is
// off) has none.
type listeners map[string]net.Listener

// listen binds every address cfg names. On error it closes what it bound and names the key.
func listen(ctx context.Context, cfg config.Listener) (listeners, error) {
	var lc net.ListenConfig
	lns := listeners{}
	for _, a := range cfg.ListenAddrs() {
		if a.Addr == "" {
			continue
		}
		ln, err := lc.Listen(ctx, "tcp", a.Addr)
		if err != nil {
			for _, l := range lns {
				_ = l.Close() // never used; the bind error is the one to report
			}
			return nil, fmt.Errorf("%s: %w", a.Key, err)
		}
		lns[a.Key] = ln
	}
	return lns, nil
}

// start is the one way a role is started from its completed config: bind its listeners, then
// build it on them. build owns the listeners from the call on (a role's New closes them when
// it fails).
func start[C any, P interface {
	*C
	config.Listener
}](ctx context.Context, cfg config.Role, build func(C, listeners) (server.Role, error)) (server.Role, error) {
	c, ok := cfg.(P)
	if !ok {
		return nil, fmt.Errorf("start: config is %T, want %T", cfg, P(nil))
	}
	lns, err := listen(ctx, c)
	if err != nil {
		return nil, err
	}
	return build(*c, lns)
}

func startAgent(ctx context.Context, cfg config.Role, env Env) (server.Role, error) {
	return start(ctx, cfg, func(c agent.Config, lns listeners) (server.Role, error) {
		return agent.New(c, agent.Deps{
			Listener: lns["listen"], PeerListener: lns["peer_listen"], AdminListener: lns["admin_listen"],
			Logger: env.Logger, Registerer: env.registerer(), Gatherer: env.gatherer(),
		})
	})
}

func startOrigin(ctx context.Context, cfg config.Role, env Env) (server.Role, error) {
	return start(ctx, cfg, func(c origin.Config, lns listeners) (server.Role, error) {
		return origin.New(c, origin.Deps{
			Listener: lns["listen"], PeerListener: lns["peer.listen"], AdminListener: lns["admin_listen"],
			Logger: env.Logger, Registerer: env.registerer(), Gatherer: env.gatherer(),
		})
	})
}

func startTracker(ctx context.Context, cfg config.Role, env Env) (server.Role, error) {
	return start(ctx, cfg, func(c tracker.Config, lns listeners) (server.Role, error) {
		return tracker.New(c, tracker.Deps{
			Listener: lns["listen"], AdminListener: lns["admin_listen"],
			Logger: env.Logger, Registerer: env.registerer(), Gatherer: env.gatherer(),
		})
	})
}

func startProxy(ctx context.Context, cfg config.Role, env Env) (server.Role, error) {
	return start(ctx, cfg, func(c proxy.Config, lns listeners) (server.Role, error) {
		return proxy.New(c, proxy.Deps{
			Listener: lns["listen"], AdminListener: lns["admin_listen"],
			Logger: env.Logger, Registerer: env.registerer(), Gatherer: env.gatherer(),
		})
	})
}

func startBuildIndex(ctx context.Context, cfg config.Role, env Env) (server.Role, error) {
	return start(ctx, cfg, func(c buildindex.Config, lns listeners) (server.Role, error) {
		return buildindex.New(c, buildindex.Deps{
			Listener: lns["listen"], RaftListener: lns["raft_listen"], AdminListener: lns["admin_listen"],
			Logger: env.Logger, Registerer: env.registerer(), Gatherer: env.gatherer(),
		})
	})
}
