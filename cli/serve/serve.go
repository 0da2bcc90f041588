// Package serve implements `krakenctl serve ROLE`, which runs a server role in the foreground
// until SIGINT or SIGTERM.
package serve

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/config"
)

// NewCmdServe returns `krakenctl serve` with one sub-command per role.
func NewCmdServe(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve ROLE",
		Short: "Run a server role",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdOrigin(f, nil))
	cmd.AddCommand(NewCmdBuildIndex(f, nil))
	cmd.AddCommand(NewCmdTracker(f, nil))
	cmd.AddCommand(NewCmdAgent(f, nil))
	cmd.AddCommand(NewCmdProxy(f, nil))
	return cmd
}

// RoleOptions are the inputs every `serve ROLE` command takes.
type RoleOptions struct {
	ConfigPath string
	Listen     string
	LogLevel   string
}

// roleCmd describes one `serve ROLE` command.
type roleCmd struct {
	use, short, long, example string
	configHelp, listenHelp    string
	run                       func(context.Context, *cmdutil.Factory, *RoleOptions) error
}

// newRoleCmd builds a `serve ROLE` command: --config (required), --listen, --log-level. runF
// replaces rc.run in tests.
func newRoleCmd(f *cmdutil.Factory, rc roleCmd, runF func(context.Context, *RoleOptions) error) *cobra.Command {
	opts := &RoleOptions{}
	cmd := &cobra.Command{
		Use:     rc.use,
		Short:   rc.short,
		Long:    rc.long,
		Example: rc.example,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.ConfigPath == "" {
				return cmdutil.FlagErrorf("--config is required")
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return rc.run(cmd.Context(), f, opts)
		},
	}
	cmd.Flags().StringVarP(&opts.ConfigPath, "config", "c", "", rc.configHelp)
	cmd.Flags().StringVar(&opts.Listen, "listen", "", rc.listenHelp)
	cmd.Flags().StringVar(&opts.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// serverLogger returns the JSON logger servers write to stderr.
func serverLogger(f *cmdutil.Factory, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, cmdutil.FlagErrorf("invalid --log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(f.IOStreams.ErrOut, &slog.HandlerOptions{Level: lv})), nil
}

// applyListen sets a role's listen address from --listen, when given, and validates the config
// again, so a bad flag is a config error that names --listen.
func applyListen(flag string, set func(string), validate func() error) error {
	if flag == "" {
		return nil
	}
	set(flag)
	if err := validate(); err != nil {
		return fmt.Errorf("%w: --listen: %w", config.ErrInvalid, err)
	}
	return nil
}

// runner is a role's server: Run serves until ctx ends, then shuts down.
type runner interface {
	Run(ctx context.Context) error
}

// runOneListener runs a role that needs one listener and nothing else (proxy, tracker): it
// loads --config into cfg, applies --listen to *listen (validated by validate), listens there
// and runs the server that start builds on that listener, with the role's logger and metrics
// registry.
func runOneListener[C any](ctx context.Context, f *cmdutil.Factory, opts *RoleOptions, cfg *C, listen *string,
	validate func() error, start func(net.Listener, *slog.Logger, *prometheus.Registry) (runner, error)) error {
	log, err := serverLogger(f, opts.LogLevel)
	if err != nil {
		return err
	}
	if err := config.Load(opts.ConfigPath, cfg); err != nil {
		return err
	}
	if err := applyListen(opts.Listen, func(a string) { *listen = a }, validate); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv, err := start(ln, log, admin.NewRegistry())
	if err != nil {
		ln.Close()
		return err
	}
	return srv.Run(ctx)
}
