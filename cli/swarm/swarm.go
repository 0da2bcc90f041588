// Package swarm implements `krakenctl swarm list` and `krakenctl swarm inspect`: the swarms a
// tracker knows, and one blob's swarm across the cluster (who holds what, who sent what, why
// bytes came from origins), read through server/observe. It also builds the observe.Gatherer
// that `krakenctl top` reads.
package swarm

import (
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

// NewCmdSwarm returns `krakenctl swarm` with its sub-commands.
func NewCmdSwarm(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "swarm <command>",
		Short: "List the swarms and inspect one blob's swarm",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdList(f, nil), NewCmdInspect(f, nil))
	return cmd
}
