package cluster

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
)

// StatusOptions are the inputs of `krakenctl cluster status`.
type StatusOptions struct {
	deps
	Output string
}

// NewCmdStatus returns `krakenctl cluster status`. runF replaces the run function in tests.
func NewCmdStatus(f *cmdutil.Factory, runF func(context.Context, *StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{deps: depsOf(f)}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the build-index's members, leader, term and indexes",
		Long: `Show the Raft group as the first reachable build-index node sees it: every member with its
Raft and API addresses and whether it votes, which one leads, the current term, and the node's
commit, applied, last log and last snapshot indexes.`,
		Example: `  krakenctl cluster status
  krakenctl cluster status --build-index 127.0.0.1:15100 -o json`,
		Args: argsFunc(0, "status takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return statusRun(cmd.Context(), opts)
		},
	}
	endpoints.AddBuildIndexFlags(cmd, &opts.BuildIndex)
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func statusRun(ctx context.Context, opts *StatusOptions) error {
	var st api.ClusterStatus
	_, err := opts.call(ctx, func(ctx context.Context, c API) error {
		var err error
		st, err = c.ClusterStatus(ctx)
		return err
	})
	if err != nil {
		return err
	}
	return printStatus(opts.IO, opts.Output, st)
}

// printStatus prints st as a table with a summary, or as JSON.
func printStatus(ios *iostreams.IOStreams, output string, st api.ClusterStatus) error {
	if output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(ios.Out, st)
	}
	// Built whole, then written once, so a failed write to stdout is one error to return.
	var out strings.Builder
	t := cmdutil.NewTable(&out, "id", "raft addr", "api addr", "suffrage", "leader")
	for _, m := range st.Members {
		id := m.ID
		if id == st.ID {
			id += " (answered)"
		}
		leader := ""
		if m.Leader || (st.LeaderID != "" && m.ID == st.LeaderID) {
			leader = "*"
		}
		t.Row(id, cmdutil.OrDash(m.RaftAddr), cmdutil.OrDash(m.APIAddr), cmdutil.OrDash(m.Suffrage), leader)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	leader := "none (no quorum, or an election is running)"
	if st.LeaderID != "" {
		leader = st.LeaderID
		if st.LeaderAPIAddr != "" {
			leader += " at " + st.LeaderAPIAddr
		}
	}
	fmt.Fprintf(&out, "\nAnswered by: %s (%s)\n", st.ID, cmdutil.OrDash(st.State))
	fmt.Fprintf(&out, "Leader:      %s\n", leader)
	fmt.Fprintf(&out, "Term:        %d\n", st.Term)
	fmt.Fprintf(&out, "Indexes:     commit %d, applied %d, last log %d, last snapshot %d\n",
		st.CommitIndex, st.AppliedIndex, st.LastLogIndex, st.LastSnapshotIndex)
	_, err := io.WriteString(ios.Out, out.String())
	return err
}
