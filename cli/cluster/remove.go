package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// RemoveOptions are the inputs of `krakenctl cluster remove`.
type RemoveOptions struct {
	deps
	ID     string
	Force  bool
	Output string
}

// NewCmdRemove returns `krakenctl cluster remove`. runF replaces the run function in tests.
func NewCmdRemove(f *cmdutil.Factory, runF func(context.Context, *RemoveOptions) error) *cobra.Command {
	opts := &RemoveOptions{deps: depsOf(f)}
	cmd := &cobra.Command{
		Use:   "remove ID",
		Short: "Take a node out of the build-index's Raft group",
		Long: `Remove the member with the given ID from the Raft group (through the leader). Removing the
leader makes the others elect a new one. Removing members lowers the quorum: take out a node
that is gone for good, not one that is merely restarting.

A removal that would leave the remaining voters without a quorum of live ones (removing a
live node while another is down) is refused, and nothing changes: remove the dead node first,
or bring it back. --force removes the member anyway; the cluster then stays unavailable until
enough of the remaining voters answer, or until ` + "`krakenctl cluster recover`" + `.

With TLS, the request needs a client certificate of group "admin".

Prints the membership after the change.`,
		Example: `  krakenctl cluster remove bi-3
  krakenctl cluster remove bi-3 --force`,
		Args: argsFunc(1, "remove takes one node ID argument"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkID(args[0]); err != nil {
				return cmdutil.FlagErrorf("invalid ID: %w", err)
			}
			opts.ID = args[0]
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return removeRun(cmd.Context(), opts)
		},
	}
	endpoints.AddBuildIndexFlags(cmd, &opts.BuildIndex)
	cmd.Flags().BoolVar(&opts.Force, "force", false, "remove the member even if the remaining voters would have no quorum of live members")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

// ErrUnknownMember means the Raft group has no member with the ID given.
var ErrUnknownMember = errors.New("no such member")

func removeRun(ctx context.Context, opts *RemoveOptions) error {
	var st api.ClusterStatus
	_, err := opts.call(ctx, func(ctx context.Context, c API) error {
		var err error
		st, err = c.Remove(ctx, opts.ID, opts.Force)
		return err
	})
	if errors.Is(err, client.ErrNotFound) {
		return fmt.Errorf("remove %s: %w in the cluster (see `krakenctl cluster status`)", opts.ID, ErrUnknownMember)
	}
	if re := (*errcode.Error)(nil); errors.As(err, &re) && re.Code == errcode.CodeQuorumAtRisk {
		return fmt.Errorf("%w\nRemove the nodes that are down first, or bring them back; --force removes %s anyway, "+
			"and the cluster then stays unavailable until enough voters answer or `krakenctl cluster recover`", err, opts.ID)
	}
	if err != nil {
		return err
	}
	if opts.Output == cmdutil.OutputTable {
		_, _ = fmt.Fprintf(opts.IO.ErrOut, "%s removed from the cluster\n", opts.ID)
	}
	return printStatus(opts.IO, opts.Output, st)
}
