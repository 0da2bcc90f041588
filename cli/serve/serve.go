// Package serve implements `krakenctl serve ROLE`, which runs a server role in the foreground
// until SIGINT or SIGTERM. Every role is served the same way, from one table: read the config
// file, apply the flags that override its keys, complete and check it (server/config), then
// start the role from server/roles with the process's logger and metrics registry.
package serve

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/roles"
)

// NewCmdServe returns `krakenctl serve` with one sub-command per role.
func NewCmdServe(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve ROLE",
		Short: "Run a server role",
		Args:  cobra.NoArgs,
	}
	for _, r := range roles.All() {
		cmd.AddCommand(NewCmdRole(f, r, nil))
	}
	return cmd
}

// Options are the inputs of `serve ROLE`.
type Options struct {
	Role       roles.Role
	ConfigPath string
	LogLevel   string
	// Overrides are the flags given that override keys of the config file, in the order of
	// the role's flag table.
	Overrides []config.Override
}

// NewCmdRole returns `krakenctl serve ROLE` for r: --config (required), --log-level, and the
// flags of r's row in the help table, each overriding one key of the file. runF replaces the
// run function in tests.
func NewCmdRole(f *cmdutil.Factory, r roles.Role, runF func(context.Context, *Options) error) *cobra.Command {
	h, ok := help[r.Name]
	if !ok {
		panic("serve: no help for role " + r.Name) // a row added to server/roles without one here
	}
	opts := &Options{Role: r}
	flags := append(slices.Clone(commonFlags), h.flags...)
	scalars := make([]string, len(flags))
	lists := make([][]string, len(flags))
	cmd := &cobra.Command{
		Use:     r.Name + " --config FILE",
		Short:   h.short,
		Long:    h.long + "\n\nFlags override the config file's keys:\n" + flagKeys(flags) + "\nThe process stops gracefully on SIGINT or SIGTERM.",
		Example: h.example,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.ConfigPath == "" {
				return cmdutil.FlagErrorf("--config is required")
			}
			opts.Overrides = nil
			for i, fl := range flags {
				if !cmd.Flags().Changed(fl.name) {
					continue
				}
				o := config.Override{Flag: fl.name, Key: fl.key, List: fl.list, Values: []string{scalars[i]}}
				if fl.list {
					o.Values = lists[i]
				}
				opts.Overrides = append(opts.Overrides, o)
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return Run(cmd.Context(), f, opts)
		},
	}
	cmd.Flags().StringVarP(&opts.ConfigPath, "config", "c", "", r.Name+" config file (YAML); 'krakenctl config example "+r.Name+"' prints a complete one")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	cmd.Flags().StringVar(&opts.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	for i, fl := range flags {
		if fl.list {
			cmd.Flags().StringSliceVar(&lists[i], fl.name, nil, fl.usage+"; repeated or comma-separated; replaces the config's "+fl.key)
		} else {
			cmd.Flags().StringVar(&scalars[i], fl.name, "", fl.usage+", overriding the config's "+fl.key)
		}
		if fl.dir {
			_ = cmd.MarkFlagDirname(fl.name)
		}
	}
	return cmd
}

// Run serves opts.Role until ctx ends: it reads and checks the config with the overrides
// applied, and starts the role with a JSON logger on stderr and the process's metrics
// registry. A config problem is a config.ErrInvalid error listing every problem, a flag's
// problem naming the flag.
func Run(ctx context.Context, f *cmdutil.Factory, opts *Options) error {
	log, err := serverLogger(f, opts.LogLevel)
	if err != nil {
		return err
	}
	cfg := opts.Role.NewConfig()
	if err := config.Load(opts.ConfigPath, cfg, opts.Overrides...); err != nil {
		return err
	}
	srv, err := opts.Role.Start(ctx, cfg, roles.Env{Logger: log, Metrics: admin.NewRegistry()})
	if err != nil {
		return fmt.Errorf("start %s: %w", opts.Role.Name, err)
	}
	return srv.Run(ctx)
}

// serverLogger returns the JSON logger servers write to stderr.
func serverLogger(f *cmdutil.Factory, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, cmdutil.FlagErrorf("invalid --log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(f.IOStreams.ErrOut, &slog.HandlerOptions{Level: lv})), nil
}

func flagKeys(flags []flagSpec) string {
	var b strings.Builder
	for _, fl := range flags {
		fmt.Fprintf(&b, "  --%-16s %s\n", fl.name, fl.key)
	}
	return b.String()
}
