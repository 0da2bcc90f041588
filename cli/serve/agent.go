package serve

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/config"
)

// AgentOptions are the inputs of `serve agent`: the shared role options and the few settings
// that differ from host to host, which override the config file.
type AgentOptions struct {
	RoleOptions
	PeerListen    string
	PeerAdvertise string
	Trackers      []string
	BuildIndex    []string
	StoreDir      string
}

// NewCmdAgent returns `krakenctl serve agent`.
func NewCmdAgent(f *cmdutil.Factory, runF func(context.Context, *AgentOptions) error) *cobra.Command {
	opts := &AgentOptions{}
	var roleRunF func(context.Context, *RoleOptions) error
	if runF != nil {
		roleRunF = func(ctx context.Context, ro *RoleOptions) error {
			opts.RoleOptions = *ro
			return runF(ctx, opts)
		}
	}
	cmd := newRoleCmd(f, roleCmd{
		use:   "agent --config FILE",
		short: "Run an agent: download blobs through the swarm and serve them to this host",
		long: `Run an agent, one per host. It serves the OCI distribution pull API at /v2/, so
docker pulls from it (docker pull 127.0.0.1:16000/REPO:TAG) and containerd uses it as a mirror
(?ns=); writes answer 405 UNSUPPORTED. Tags are resolved on the build-index on every request
(build_index in the config, or --build-index), so a tag moved by the last push is what the
next pull gets. Clients may also GET blobs at /namespace/NAMESPACE/blobs/DIGEST (the origins'
blob API, with Range and HEAD). The agent downloads each blob once through the peer-to-peer
swarm, from the origins and from other agents, streaming it to its clients while pieces arrive
and are verified, then keeps it in its store and seeds it to other hosts for seed_time.
/swarm/torrents and /swarm/events show what it is doing.

--listen, --peer-listen, --peer-advertise, --tracker, --build-index and --store-dir override
the config file's listen, peer_listen, peer_advertise, trackers, build_index and store_dir, so
one file can serve every host; with them the file may be empty. The process stops gracefully on SIGINT or SIGTERM;
unfinished downloads resume where they stopped on the next start.`,
		example: `  krakenctl serve agent --config /etc/krakenctl/agent.yaml
  krakenctl serve agent -c agent.yaml --peer-advertise 10.0.0.7:16001 --tracker 10.0.0.2:16100 \
      --build-index 10.0.0.3:15100,10.0.0.4:15100`,
		configHelp: "agent config file (YAML)",
		listenHelp: "blob API listen address, overriding the config's listen",
		run: func(ctx context.Context, f *cmdutil.Factory, ro *RoleOptions) error {
			opts.RoleOptions = *ro
			return runAgent(ctx, f, opts)
		},
	}, roleRunF)
	fl := cmd.Flags()
	fl.StringVar(&opts.PeerListen, "peer-listen", "", "swarm listen address, overriding the config's peer_listen")
	fl.StringVar(&opts.PeerAdvertise, "peer-advertise", "", "host:port other hosts dial to reach --peer-listen, overriding the config's peer_advertise")
	fl.StringSliceVar(&opts.Trackers, "tracker", nil, "tracker address (host:port), repeated or comma-separated; replaces the config's trackers")
	fl.StringSliceVar(&opts.BuildIndex, "build-index", nil, "build-index API address (host:port), repeated or comma-separated; replaces the config's build_index")
	fl.StringVar(&opts.StoreDir, "store-dir", "", "directory of downloaded blobs, overriding the config's store_dir")
	_ = cmd.MarkFlagDirname("store-dir")
	return cmd
}

// fileAgentConfig is agent.Config without its methods, so that config.Load decodes the file
// strictly but leaves defaults and validation until the flags have been applied: a flag may
// supply a required key the file lacks.
type fileAgentConfig agent.Config

func runAgent(ctx context.Context, f *cmdutil.Factory, opts *AgentOptions) error {
	log, err := serverLogger(f, opts.LogLevel)
	if err != nil {
		return err
	}
	var file fileAgentConfig
	if err := config.Load(opts.ConfigPath, &file); err != nil {
		return err
	}
	cfg := agent.Config(file)
	for _, o := range []struct {
		flag string
		dst  *string
	}{{opts.Listen, &cfg.Listen}, {opts.PeerListen, &cfg.PeerListen}, {opts.PeerAdvertise, &cfg.PeerAdvertise}, {opts.StoreDir, &cfg.StoreDir}} {
		if o.flag != "" {
			*o.dst = o.flag
		}
	}
	if len(opts.Trackers) > 0 {
		cfg.Trackers = opts.Trackers
	}
	if len(opts.BuildIndex) > 0 {
		cfg.BuildIndex = opts.BuildIndex
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config %s (with flags): %w: %w", opts.ConfigPath, config.ErrInvalid, err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	pln, err := net.Listen("tcp", cfg.PeerListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen for peers: %w", err)
	}
	reg := admin.NewRegistry()
	srv, err := agent.New(cfg, agent.Deps{Listener: ln, PeerListener: pln, Logger: log, Registerer: reg, Gatherer: reg})
	if err != nil {
		ln.Close()
		pln.Close()
		return err
	}
	return srv.Run(ctx)
}
