package serve

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/tracker"
)

// TrackerOptions are the inputs of `serve tracker`.
type TrackerOptions = RoleOptions

// NewCmdTracker returns `krakenctl serve tracker`.
func NewCmdTracker(f *cmdutil.Factory, runF func(context.Context, *TrackerOptions) error) *cobra.Command {
	return newRoleCmd(f, roleCmd{
		use:   "tracker --config FILE",
		short: "Run a tracker: introduce the peers of each blob, serve metainfo",
		long: `Run a tracker. Agents announce the blobs they download or seed every few seconds and get
back peers to connect to: the blob's owning origins first, then seeders, then other
downloaders, in a fresh random order each time. Peers that stop announcing are forgotten after
peer_ttl. The tracker also serves each blob's metainfo (piece hashes), fetched once from the
origins and cached. Several trackers share the digest space by rendezvous hashing without
sharing state; agents fail over between them. The process stops gracefully on SIGINT or
SIGTERM.`,
		example:    "  krakenctl serve tracker --config /etc/krakenctl/tracker.yaml",
		configHelp: "tracker config file (YAML)",
		listenHelp: "listen address, overriding the config's listen",
		run:        runTracker,
	}, runF)
}

func runTracker(ctx context.Context, f *cmdutil.Factory, opts *TrackerOptions) error {
	log, err := serverLogger(f, opts.LogLevel)
	if err != nil {
		return err
	}
	var cfg tracker.Config
	if err := config.Load(opts.ConfigPath, &cfg); err != nil {
		return err
	}
	if err := applyListen(opts.Listen, func(a string) { cfg.Listen = a }, cfg.Validate); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	reg := admin.NewRegistry()
	srv, err := tracker.New(cfg, tracker.Deps{Listener: ln, Logger: log, Registerer: reg, Gatherer: reg})
	if err != nil {
		ln.Close()
		return err
	}
	return srv.Run(ctx)
}
