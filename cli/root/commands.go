package root

import (
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

// blobCommands are the commands that move blobs (push, pull).
func blobCommands(f *cmdutil.Factory) []*cobra.Command {
	return nil
}

// clusterCommands are the commands that inspect and manage clusters (ring status).
func clusterCommands(f *cmdutil.Factory) []*cobra.Command {
	return nil
}
