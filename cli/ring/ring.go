// Package ring implements `krakenctl ring`, which shows the origins' rendezvous-hash ring: its
// members, their health as one origin sees it, and which origins own a digest.
package ring

import (
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

// NewCmdRing returns `krakenctl ring` with its sub-commands.
func NewCmdRing(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ring <command>",
		Short: "Inspect the origins' hash ring",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdStatus(f, nil))
	return cmd
}
