package serve

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/origin"
)

// OriginOptions are the inputs of `serve origin`.
type OriginOptions = RoleOptions

// NewCmdOrigin returns `krakenctl serve origin`.
func NewCmdOrigin(f *cmdutil.Factory, runF func(context.Context, *OriginOptions) error) *cobra.Command {
	return newRoleCmd(f, roleCmd{
		use:   "origin --config FILE",
		short: "Run an origin: store blobs, seed them, write them back to storage",
		long: `Run an origin. Origins hold every blob in a content-addressed store, own slices of the
digest space on a rendezvous-hash ring, pull misses through from storage backends and write
uploads back to them through a durable queue. The process stops gracefully on SIGINT or SIGTERM.`,
		example:    "  krakenctl serve origin --config /etc/krakenctl/origin.yaml",
		configHelp: "origin config file (YAML)",
		listenHelp: "listen address, overriding the config's listen",
		run:        runOrigin,
	}, runF)
}

func runOrigin(ctx context.Context, f *cmdutil.Factory, opts *OriginOptions) error {
	log, err := serverLogger(f, opts.LogLevel)
	if err != nil {
		return err
	}
	var cfg origin.Config
	if err := config.Load(opts.ConfigPath, &cfg); err != nil {
		return err
	}
	if opts.Listen != "" {
		if cfg.Advertise == cfg.Listen {
			cfg.Advertise = opts.Listen
		}
		cfg.Listen = opts.Listen
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	deps := origin.Deps{Listener: ln, Logger: log}
	if cfg.Peer.Listen != "" {
		if deps.PeerListener, err = net.Listen("tcp", cfg.Peer.Listen); err != nil {
			ln.Close()
			return fmt.Errorf("listen for peers: %w", err)
		}
	}
	reg := admin.NewRegistry()
	deps.Registerer, deps.Gatherer = reg, reg
	srv, err := origin.New(cfg, deps)
	if err != nil {
		ln.Close()
		if deps.PeerListener != nil {
			deps.PeerListener.Close()
		}
		return err
	}
	return srv.Run(ctx)
}
