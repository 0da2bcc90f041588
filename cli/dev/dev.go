// Package dev implements `krakenctl dev`, which runs a whole krakenctl cluster on this machine
// for trying it out and for local development. The cluster itself is server/dev.
package dev

import (
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

// NewCmdDev returns `krakenctl dev` with its sub-commands.
func NewCmdDev(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev <command>",
		Short: "Run a local cluster for development",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdUp(f, nil))
	return cmd
}
