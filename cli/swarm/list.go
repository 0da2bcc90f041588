package swarm

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/observe"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// ListOptions are the inputs of `krakenctl swarm list`.
type ListOptions struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	Env        endpoints.Env
	Now        func() time.Time

	Cluster endpoints.ClusterFlags
	Limit   int
	Output  string
}

// NewCmdList returns `krakenctl swarm list`. runF replaces the run function in tests.
func NewCmdList(f *cmdutil.Factory, runF func(context.Context, *ListOptions) error) *cobra.Command {
	opts := &ListOptions{IO: f.IOStreams, HTTPClient: f.HTTPClient, Env: os.Getenv, Now: time.Now}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the swarms the tracker knows",
		Long: `List every blob's swarm the tracker knows, newest announce first: its digest, namespace,
how many members have the whole blob (seeders) and how many are still downloading (leechers),
and when a member last announced. The trackers are asked in turn until one answers.`,
		Example: `  krakenctl swarm list
  krakenctl swarm list --endpoints-file prod.yaml -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if opts.Limit < 1 || opts.Limit > 10000 {
				return cmdutil.FlagErrorf("invalid --limit %d: must be 1 to 10000", opts.Limit)
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return listRun(cmd.Context(), opts)
		},
	}
	endpoints.AddClusterFlags(cmd, &opts.Cluster)
	cmd.Flags().IntVar(&opts.Limit, "limit", 1000, "list at most this many swarms")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func listRun(ctx context.Context, opts *ListOptions) error {
	c, err := opts.Cluster.Resolve(opts.Env)
	if err != nil {
		return err
	}
	if len(c.Trackers) == 0 {
		return cmdutil.FlagErrorf("%s names no tracker: pass --trackers host:port", c.Source)
	}
	g, err := NewGatherer(c, opts.HTTPClient(), observe.Config{})
	if err != nil {
		return err
	}
	swarms, err := g.TrackerSwarms(ctx, opts.Limit)
	if err != nil {
		return c.Explain(fmt.Errorf("list swarms: %w", err))
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, swarms)
	}
	return printList(opts, swarms)
}

func printList(opts *ListOptions, swarms []snapshot.TrackerSwarm) error {
	var out strings.Builder
	now := opts.Now()
	t := cmdutil.NewTable(&out, "digest", "namespace", "seeders", "leechers", "last announce")
	for _, s := range swarms {
		t.Row(s.Digest, cmdutil.OrDash(s.Namespace), s.Seeders, s.Leechers, ago(now, s.LastAnnounce))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&out, "\n%s.\n", cmdutil.Plural(len(swarms), "swarm"))
	_, err := io.WriteString(opts.IO.Out, out.String())
	return err
}

// ago says how long before now t was.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(time.Second)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Hour:
		return d.String() + " ago"
	default:
		return t.Local().Format(time.DateTime)
	}
}
