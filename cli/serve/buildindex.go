package serve

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/config"
)

// BuildIndexOptions are the inputs of `serve build-index`.
type BuildIndexOptions = RoleOptions

// NewCmdBuildIndex returns `krakenctl serve build-index`.
func NewCmdBuildIndex(f *cmdutil.Factory, runF func(context.Context, *BuildIndexOptions) error) *cobra.Command {
	return newRoleCmd(f, roleCmd{
		use:   "build-index --config FILE",
		short: "Run a build-index node: linearizable tags on Raft",
		long: `Run a build-index node. The build-index maps repository tags to digests in a Raft group
of three or five nodes: the first node bootstraps (raft.bootstrap: true), the others join it
(join: [ADDR]). Reads are linearizable unless asked for ?stale=true, and any node accepts
every request, forwarding writes to the leader. A tag is accepted only when the origin
cluster holds its manifest and what the manifest references. Tags are written back to the
storage backend through a durable queue, from which a fresh cluster can be restored.
The process stops gracefully on SIGINT or SIGTERM.`,
		example:    "  krakenctl serve build-index --config /etc/krakenctl/build-index.yaml",
		configHelp: "build-index config file (YAML)",
		listenHelp: "HTTP API listen address, overriding the config's listen",
		run:        runBuildIndex,
	}, runF)
}

func runBuildIndex(ctx context.Context, f *cmdutil.Factory, opts *BuildIndexOptions) error {
	log, err := serverLogger(f, opts.LogLevel)
	if err != nil {
		return err
	}
	var cfg buildindex.Config
	if err := config.Load(opts.ConfigPath, &cfg); err != nil {
		return err
	}
	if err := applyListen(opts.Listen, cfg.SetListen, cfg.Validate); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	rln, err := net.Listen("tcp", cfg.RaftListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen for raft: %w", err)
	}
	reg := admin.NewRegistry()
	srv, err := buildindex.New(cfg, buildindex.Deps{Listener: ln, RaftListener: rln, Logger: log, Registerer: reg, Gatherer: reg})
	if err != nil {
		ln.Close()
		rln.Close()
		return err
	}
	return srv.Run(ctx)
}
