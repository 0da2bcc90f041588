package cluster

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/tagstore"
)

// JoinOptions are the inputs of `krakenctl cluster join`.
type JoinOptions struct {
	deps
	Member api.Member
	Output string
}

// NewCmdJoin returns `krakenctl cluster join`. runF replaces the run function in tests.
func NewCmdJoin(f *cmdutil.Factory, runF func(context.Context, *JoinOptions) error) *cobra.Command {
	opts := &JoinOptions{deps: depsOf(f)}
	cmd := &cobra.Command{
		Use:   "join --id ID --raft-addr HOST:PORT --api-addr HOST:PORT",
		Short: "Add a build-index node to the Raft group",
		Long: `Add a node to the build-index's Raft group as a voter. The request goes to an existing member
(--build-index names one; it is forwarded to the leader), and the new node must already be
running with the same ID and Raft address, unbootstrapped, so that the leader can replicate the
log to it. It joins as a non-voter and is promoted once it has caught up; a node that does not
answer within the leader's raft.join_timeout is removed again and the command fails, so a
wrong address cannot cost the quorum. A node whose ID or address is already in the group is
refused and nothing changes.

With TLS, the request needs a client certificate of group "admin" (a build-index node may
ask to add itself), and the new node's certificate must name its ID.

Prints the membership after the change.`,
		Example: `  krakenctl cluster join --id bi-4 --raft-addr 10.0.0.4:7000 --api-addr 10.0.0.4:15100 \
      --build-index 10.0.0.1:15100`,
		Args: argsFunc(0, "join takes no arguments: name the node with --id, --raft-addr and --api-addr"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkID(opts.Member.ID); err != nil {
				return cmdutil.FlagErrorf("invalid --id: %w", err)
			}
			if err := ring.CheckMember(opts.Member.RaftAddr); err != nil {
				return cmdutil.FlagErrorf("invalid --raft-addr: %w", err)
			}
			if err := ring.CheckMember(opts.Member.APIAddr); err != nil {
				return cmdutil.FlagErrorf("invalid --api-addr: %w", err)
			}
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return joinRun(cmd.Context(), opts)
		},
	}
	endpoints.AddBuildIndexFlags(cmd, &opts.BuildIndex)
	cmd.Flags().StringVar(&opts.Member.ID, "id", "", "the new node's Raft ID (its raft.node_id)")
	cmd.Flags().StringVar(&opts.Member.RaftAddr, "raft-addr", "", "the new node's Raft address, as the other nodes reach it")
	cmd.Flags().StringVar(&opts.Member.APIAddr, "api-addr", "", "the new node's HTTP API address, as the other nodes reach it")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

// checkID checks a node ID as the build-index does (tagstore.ValidateNodeID).
func checkID(id string) error { return tagstore.ValidateNodeID(id) }

func joinRun(ctx context.Context, opts *JoinOptions) error {
	var st api.ClusterStatus
	_, err := opts.call(ctx, func(ctx context.Context, c API) error {
		var err error
		st, err = c.Join(ctx, opts.Member)
		return err
	})
	if err != nil {
		return err
	}
	if opts.Output == cmdutil.OutputTable {
		_, _ = fmt.Fprintf(opts.IO.ErrOut, "%s joined the cluster\n", opts.Member.ID)
	}
	return printStatus(opts.IO, opts.Output, st)
}
