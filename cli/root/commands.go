package root

import (
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/blob"
	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/dev"
	"github.com/krakenctl/krakenctl/cli/ring"
)

// blobCommands are the commands that move blobs (push, pull).
func blobCommands(f *cmdutil.Factory) []*cobra.Command {
	return []*cobra.Command{
		blob.NewCmdPush(f, nil),
		blob.NewCmdPull(f, nil),
	}
}

// clusterCommands are the commands that inspect and manage clusters (ring status).
func clusterCommands(f *cmdutil.Factory) []*cobra.Command {
	return []*cobra.Command{
		ring.NewCmdRing(f),
	}
}

// serverCommands run servers besides `serve` (dev up runs a whole local cluster).
func serverCommands(f *cmdutil.Factory) []*cobra.Command {
	return []*cobra.Command{
		dev.NewCmdDev(f),
	}
}
