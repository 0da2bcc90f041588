package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/tui"
)

// StatusOptions are the inputs of `krakenctl replicate status`.
type StatusOptions struct {
	deps
	BuildIndex endpoints.BuildIndexFlags
	Output     string
	// Now is the clock ages are measured with.
	Now func() time.Time
}

// NodeStatus is one build-index node's answer: its replication status, or why there is none.
type NodeStatus struct {
	Address string `json:"address"`
	Error   string `json:"error,omitempty"`
	api.ReplicationStatus
}

// NewCmdStatus returns `krakenctl replicate status`. runF replaces the run function in tests.
func NewCmdStatus(f *cmdutil.Factory, runF func(context.Context, *StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{deps: deps{IO: f.IOStreams, HTTPClient: f.HTTPClient, Logger: f.Logger, Env: os.Getenv}, Now: time.Now}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every build-index node's replication queues, per remote cluster",
		Long: `Ask every build-index node for its replication queues and show, per node and per remote
cluster: the items pending and parked (failed in a way retrying cannot fix, until
` + "`krakenctl replicate retry`" + `), how long the oldest pending item has waited, the last error and
when the last tag went through, and what was sent since the node started (tags, bytes,
throughput). Every node keeps queues: the leader sends at once, followers after a delay.

A node that does not answer is a row with its error; the command fails only when none answers.
-o json prints every node's status, with its address and error, in full (queued items too).`,
		Example: `  krakenctl replicate status
  krakenctl replicate status --endpoints-file prod.yaml -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return cmdutil.FlagErrorf("status takes no arguments")
			}
			return nil
		},
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

// eachNode calls fn on every node at once and returns the error of each, in address order.
func eachNode(ctx context.Context, addrs []string, fn func(ctx context.Context, c *client.BuildIndex, i int) error, hcf func() *http.Client) []error {
	errs := make([]error, len(addrs))
	hc := hcf()
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() { errs[i] = fn(ctx, client.NewBuildIndex(a, hc), i) })
	}
	wg.Wait()
	return errs
}

func statusRun(ctx context.Context, opts *StatusOptions) error {
	ix, err := opts.BuildIndex.Resolve(opts.Env)
	if err != nil {
		return err
	}
	nodes := make([]NodeStatus, len(ix.Addrs))
	errs := eachNode(ctx, ix.Addrs, func(ctx context.Context, c *client.BuildIndex, i int) error {
		st, err := c.ReplicationStatus(ctx)
		nodes[i] = NodeStatus{Address: ix.Addrs[i], ReplicationStatus: st}
		return err
	}, opts.HTTPClient)
	cells, failed := nodeErrors(errs, func(i int, msg string) { nodes[i].Error = msg })
	if opts.Output == cmdutil.OutputJSON {
		err = cmdutil.PrintJSON(opts.IO.Out, nodes)
	} else {
		err = printStatus(opts.IO.Out, nodes, cells, opts.Now())
	}
	if err != nil {
		return err
	}
	if failed == len(nodes) {
		return fmt.Errorf("replicate status: no build-index node answered: %w", ix.Explain(errs[0]))
	}
	return nil
}

// printStatus writes one row per node and remote.
// cells holds the table's text of each node's error.
func printStatus(w io.Writer, nodes []NodeStatus, cells []string, now time.Time) error {
	var out strings.Builder
	t := cmdutil.NewTable(&out, "node", "remote", "pending", "parked", "oldest pending", "last error", "last success", "replicated", "bytes", "throughput")
	for i, n := range nodes {
		node := n.Address
		if n.Node != "" {
			node = n.Node + " " + n.Address
		}
		if n.Leader {
			node += " (leader)"
		}
		switch {
		case n.Error != "":
			t.Row(node, "-", "-", "-", "-", cells[i], "-", "-", "-", "-")
			continue
		case len(n.Remotes) == 0:
			t.Row(node, "(no rules)", "-", "-", "-", "-", "-", "-", "-", "-")
			continue
		}
		for _, r := range n.Remotes {
			lastErr := cmdutil.Truncate(r.LastError, maxErrorWidth)
			if lastErr != "" && !r.LastErrorAt.IsZero() {
				lastErr = ago(now, r.LastErrorAt) + " ago: " + lastErr
			}
			success := "-"
			if !r.LastSuccess.IsZero() {
				success = ago(now, r.LastSuccess) + " ago"
			}
			oldest := "-"
			if !r.OldestPending.IsZero() {
				oldest = ago(now, r.OldestPending)
			}
			t.Row(node, r.Name, r.Pending, r.Parked, oldest, cmdutil.OrDash(lastErr), success,
				r.Replicated, tui.FormatBytes(float64(r.Bytes)), tui.FormatRate(r.BytesPerSecond))
		}
	}
	if err := t.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, out.String())
	return err
}

// ago is how long before now t was, coarsely; "0s" for a t in the future (clock skew).
func ago(now, t time.Time) string {
	d := now.Sub(t)
	if d < time.Second {
		return "0s"
	}
	return tui.FormatDuration(d)
}

// errorCell is a node's error as a table cell: the cause of an unreachable node (its full
// error names the request and address, which the row already does), else the error, cut.
func errorCell(err error) string {
	if !endpoints.Unreachable(err) {
		return cmdutil.Truncate(err.Error(), maxErrorWidth)
	}
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return cmdutil.Truncate("unreachable: "+err.Error(), maxErrorWidth)
		}
		err = u
	}
}

// nodeErrors records each node's error through set and returns the table cell of each (empty
// where the node answered) and how many failed.
func nodeErrors(errs []error, set func(i int, msg string)) (cells []string, failed int) {
	cells = make([]string, len(errs))
	for i, err := range errs {
		if err != nil {
			set(i, err.Error())
			cells[i] = errorCell(err)
			failed++
		}
	}
	return cells, failed
}
