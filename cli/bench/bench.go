// Package bench implements `krakenctl bench`, which measures krakenctl's servers in-process on
// loopback (through server/bench) and prints what it measured.
package bench

import (
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

// NewCmdBench returns `krakenctl bench` with its sub-commands.
func NewCmdBench(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench <command>",
		Short: "Measure krakenctl's servers on this machine",
		Long: `Run a server role in-process on loopback and measure it through its real API. Nothing leaves
127.0.0.1 and nothing is kept: state lives in a fresh directory removed afterwards (unless
bench swarm --keep).`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdTags(f, nil))
	cmd.AddCommand(NewCmdSwarm(f, nil))
	cmd.AddCommand(NewCmdSwarmClient(f, nil))
	return cmd
}
