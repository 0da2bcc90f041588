package serve

import (
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

// OriginOptions are the inputs of `serve origin`.
type OriginOptions struct {
	ConfigPath string
	Listen     string
}

// NewCmdOrigin returns `krakenctl serve origin`.
func NewCmdOrigin(f *cmdutil.Factory, runF func(*OriginOptions) error) *cobra.Command {
	opts := &OriginOptions{}
	cmd := &cobra.Command{
		Use:   "origin --config FILE",
		Short: "Run an origin: store blobs, seed them, write them back to storage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.ConfigPath == "" {
				return cmdutil.FlagErrorf("--config is required")
			}
			if runF != nil {
				return runF(opts)
			}
			return cmdutil.FlagErrorf("origin role not built yet")
		},
	}
	cmd.Flags().StringVarP(&opts.ConfigPath, "config", "c", "", "origin config file (YAML)")
	cmd.Flags().StringVar(&opts.Listen, "listen", "", "listen address, overriding the config's listen")
	return cmd
}
