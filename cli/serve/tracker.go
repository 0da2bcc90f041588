package serve

import (
	"context"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
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
	var cfg tracker.Config
	return runOneListener(ctx, f, opts, &cfg, &cfg.Listen, cfg.Validate,
		func(ln net.Listener, log *slog.Logger, reg *prometheus.Registry) (runner, error) {
			return tracker.New(cfg, tracker.Deps{Listener: ln, Logger: log, Registerer: reg, Gatherer: reg})
		})
}
