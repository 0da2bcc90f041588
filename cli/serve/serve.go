// Package serve implements `krakenctl serve ROLE`, which runs a server role in the foreground
// until SIGINT or SIGTERM.
package serve

import (
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
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
	return cmd
}
