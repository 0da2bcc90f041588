package replicate

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
)

// RetryOptions are the inputs of `krakenctl replicate retry`.
type RetryOptions struct {
	deps
	BuildIndex endpoints.BuildIndexFlags
	Request    api.RetryRequest
	Output     string
}

// NodeRetry is one node's answer to a retry.
type NodeRetry struct {
	Address  string `json:"address"`
	Requeued int    `json:"requeued"`
	Error    string `json:"error,omitempty"`
}

// NewCmdRetry returns `krakenctl replicate retry`. runF replaces the run function in tests.
func NewCmdRetry(f *cmdutil.Factory, runF func(context.Context, *RetryOptions) error) *cobra.Command {
	opts := &RetryOptions{deps: deps{IO: f.IOStreams, HTTPClient: f.HTTPClient, Logger: f.Logger, Env: os.Getenv}}
	cmd := &cobra.Command{
		Use:   "retry [REPOSITORY:TAG]",
		Short: "Queue parked replication items again",
		Long: `Ask every build-index node to queue its parked replication items again: items that failed
in a way retrying alone could not fix (the remote refused them, or content was missing), once
the cause is fixed. Without arguments every parked item of every remote is retried; --remote
limits it to one remote cluster, REPOSITORY:TAG to one tag. Prints how many items each node
queued again.`,
		Example: `  krakenctl replicate retry
  krakenctl replicate retry --remote eu-west team/app:v1.4`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return cmdutil.FlagErrorf("retry takes at most one REPOSITORY:TAG argument")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if !strings.Contains(args[0], ":") {
					return cmdutil.FlagErrorf("invalid argument %q: name the tag, REPOSITORY:TAG", args[0])
				}
				t, err := ParseTarget(args[0])
				if err != nil {
					return cmdutil.FlagErrorf("invalid argument %q: %w", args[0], err)
				}
				opts.Request.Repo, opts.Request.Tag = t.Repo, t.Tag
			}
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return retryRun(cmd.Context(), opts)
		},
	}
	endpoints.AddBuildIndexFlags(cmd, &opts.BuildIndex)
	cmd.Flags().StringVar(&opts.Request.Remote, "remote", "", "retry only the items of the remote cluster `NAME` (as replicate status names it)")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func retryRun(ctx context.Context, opts *RetryOptions) error {
	ix, err := opts.BuildIndex.Resolve(opts.Env)
	if err != nil {
		return err
	}
	res := make([]NodeRetry, len(ix.Addrs))
	errs := eachNode(ctx, ix.Addrs, func(ctx context.Context, c *client.BuildIndex, i int) error {
		rr, err := c.ReplicationRetry(ctx, opts.Request)
		res[i] = NodeRetry{Address: ix.Addrs[i], Requeued: rr.Requeued}
		return err
	}, opts.HTTPClient)
	cells, failed := nodeErrors(errs, func(i int, msg string) { res[i].Error = msg })
	if opts.Output == cmdutil.OutputJSON {
		err = cmdutil.PrintJSON(opts.IO.Out, res)
	} else {
		err = printRetry(opts.IO.Out, res, cells)
	}
	if err != nil {
		return err
	}
	if failed == len(res) {
		return fmt.Errorf("replicate retry: no build-index node answered: %w", ix.Explain(errs[0]))
	}
	return nil
}

// printRetry writes a row per node; cells holds the table's text of each node's error.
func printRetry(w io.Writer, res []NodeRetry, cells []string) error {
	var out strings.Builder
	t := cmdutil.NewTable(&out, "node", "requeued", "error")
	total := 0
	for i, r := range res {
		if r.Error != "" {
			t.Row(r.Address, "-", cells[i])
			continue
		}
		total += r.Requeued
		t.Row(r.Address, r.Requeued, "-")
	}
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&out, "\n%s queued again.\n", cmdutil.Plural(total, "item"))
	_, err := io.WriteString(w, out.String())
	return err
}
