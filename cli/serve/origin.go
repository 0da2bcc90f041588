package serve

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/origin"
)

// OriginOptions are the inputs of `serve origin`.
type OriginOptions struct {
	ConfigPath string
	Listen     string
	LogLevel   string
}

// NewCmdOrigin returns `krakenctl serve origin`.
func NewCmdOrigin(f *cmdutil.Factory, runF func(context.Context, *OriginOptions) error) *cobra.Command {
	opts := &OriginOptions{}
	cmd := &cobra.Command{
		Use:   "origin --config FILE",
		Short: "Run an origin: store blobs, seed them, write them back to storage",
		Long: `Run an origin. Origins hold every blob in a content-addressed store, own slices of the
digest space on a rendezvous-hash ring, pull misses through from storage backends and write
uploads back to them through a durable queue. The process stops gracefully on SIGINT or SIGTERM.`,
		Example: "  krakenctl serve origin --config /etc/krakenctl/origin.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.ConfigPath == "" {
				return cmdutil.FlagErrorf("--config is required")
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return runOrigin(cmd.Context(), f, opts)
		},
	}
	cmd.Flags().StringVarP(&opts.ConfigPath, "config", "c", "", "origin config file (YAML)")
	cmd.Flags().StringVar(&opts.Listen, "listen", "", "listen address, overriding the config's listen")
	addLogLevelFlag(cmd, &opts.LogLevel)
	return cmd
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
	reg := admin.NewRegistry()
	srv, err := origin.New(cfg, origin.Deps{Listener: ln, Logger: log, Registerer: reg, Gatherer: reg})
	if err != nil {
		ln.Close()
		return err
	}
	return srv.Run(ctx)
}

func addLogLevelFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "log-level", "info", "log level: debug, info, warn or error")
}

// serverLogger returns the JSON logger servers write to stderr.
func serverLogger(f *cmdutil.Factory, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, cmdutil.FlagErrorf("invalid --log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(f.IOStreams.ErrOut, &slog.HandlerOptions{Level: lv})), nil
}
