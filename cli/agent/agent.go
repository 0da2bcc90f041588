// Package agent implements `krakenctl agent`, the commands that wire a node's container
// runtime to its agent: containerd's hosts.toml files and Docker's registry-mirrors. The
// agent itself runs with `krakenctl serve agent`.
package agent

import (
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

// NewCmdAgent returns `krakenctl agent` with its sub-commands.
func NewCmdAgent(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent <command>",
		Short: "Point this node's container runtime at its agent",
		Long: `Write the configuration that sends this node's image pulls through its krakenctl agent:
containerd's per-registry hosts.toml files, or Docker's registry-mirrors. Run the agent itself
with ` + "`krakenctl serve agent`" + `; check the result with ` + "`krakenctl doctor`" + `.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdContainerdConfig(f, nil), NewCmdDockerConfig(f, nil))
	return cmd
}
