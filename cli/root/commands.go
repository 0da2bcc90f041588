package root

import (
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/agent"
	"github.com/krakenctl/krakenctl/cli/bench"
	"github.com/krakenctl/krakenctl/cli/blob"
	"github.com/krakenctl/krakenctl/cli/cache"
	"github.com/krakenctl/krakenctl/cli/cluster"
	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/config"
	"github.com/krakenctl/krakenctl/cli/dev"
	"github.com/krakenctl/krakenctl/cli/doctor"
	"github.com/krakenctl/krakenctl/cli/gc"
	"github.com/krakenctl/krakenctl/cli/replicate"
	"github.com/krakenctl/krakenctl/cli/ring"
	"github.com/krakenctl/krakenctl/cli/seed"
	"github.com/krakenctl/krakenctl/cli/swarm"
	"github.com/krakenctl/krakenctl/cli/tag"
	"github.com/krakenctl/krakenctl/cli/top"
)

// blobCommands are the commands that move blobs (push, pull, seed, which preheats whole
// images, replicate, which copies them to other clusters, and gc, which deletes what nothing
// references).
func blobCommands(f *cmdutil.Factory) []*cobra.Command {
	return []*cobra.Command{
		blob.NewCmdPush(f, nil),
		blob.NewCmdPull(f, nil),
		seed.NewCmdSeed(f, nil),
		replicate.NewCmdReplicate(f),
		gc.NewCmdGC(f, nil),
	}
}

// clusterCommands are the commands that inspect and manage clusters: the origins' ring, the
// build-index's tags and its Raft membership.
func clusterCommands(f *cmdutil.Factory) []*cobra.Command {
	return []*cobra.Command{
		top.NewCmdTop(f, nil),
		swarm.NewCmdSwarm(f),
		cache.NewCmdCache(f, nil, nil),
		ring.NewCmdRing(f),
		tag.NewCmdTag(f),
		cluster.NewCmdCluster(f),
	}
}

// serverCommands are about servers besides `serve`: config checks a role's config file and
// prints examples, dev up runs a whole local cluster, bench runs roles in-process to measure
// them, agent wires a node's container runtime to its agent and doctor checks the node.
func serverCommands(f *cmdutil.Factory) []*cobra.Command {
	return []*cobra.Command{
		config.NewCmdConfig(f),
		dev.NewCmdDev(f),
		bench.NewCmdBench(f),
		agent.NewCmdAgent(f),
		doctor.NewCmdDoctor(f, nil),
	}
}
