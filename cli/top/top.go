// Package top implements `krakenctl top`: a live terminal view of a cluster's swarms, the
// peer graph of one, its hosts, ring, build-index and events (tui/), fed by server/observe;
// and one snapshot as text (--once) or JSON (-o json) for scripts.
package top

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/cli/swarm"
	"github.com/krakenctl/krakenctl/server/observe"
	"github.com/krakenctl/krakenctl/tui"
)

// ErrNotATerminal means the live view was asked for without a terminal to draw it on.
var ErrNotATerminal = errors.New("top draws a live view and needs a terminal")

// Options are the inputs of `krakenctl top`.
type Options struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	Env        endpoints.Env

	Cluster  endpoints.ClusterFlags
	Interval time.Duration
	Timeout  time.Duration
	Discover int
	Filter   string
	Once     bool
	Output   string
	// Program runs the live view; tests replace it (nil: bubbletea on the terminal).
	Program func(ctx context.Context, m tea.Model, in io.Reader, out io.Writer) error
}

// NewCmdTop returns `krakenctl top`. runF replaces the run function in tests.
func NewCmdTop(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, HTTPClient: f.HTTPClient, Env: os.Getenv}
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Watch the cluster live: swarms, the peer graph, hosts, ring, build-index, events",
		Long: `Watch a cluster in the terminal. The view refreshes every --interval and shows:

  swarms      every blob in flight: size, progress, receive rate, peers, the share of bytes
              that came from origins, and the time left
  peer graph  who sends to whom in the selected swarm and how fast, origins marked
  hosts       agents and origins: in and out rates against their caps, connections, bans
  ring        the origins of the hash ring and their health; the build-index leader and term
  events      blacklists, origin fallbacks with their reasons, tracker failovers, failures

Keys: up/down select, tab moves between panels, s sorts, / filters by digest or host, esc
clears, p pauses, ? shows every key, q or Ctrl-C quits. NO_COLOR turns colour off. A role that
cannot be read is named at the bottom and the rest of the view goes on.

--once prints one snapshot as text and -o json one as JSON, for scripts: both read the
cluster twice, --interval apart, so that rates are filled in.

The cluster comes from --endpoints-file, else the endpoints file of ` + "`krakenctl dev up`" + `;
--origins, --trackers and --agents replace its lists. Members that the tracker names beyond
the listed agents are read through the API address they announced (up to --discover).`,
		Example: `  krakenctl dev up --agents 3 --rate 10MiB &   # then, in another terminal:
  krakenctl top
  krakenctl top --endpoints-file prod.yaml --filter sha256:4a5c
  krakenctl top --once | head -40
  krakenctl top -o json | jq '.swarms[] | {digest, origin_share}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if opts.Interval < 100*time.Millisecond {
				return cmdutil.FlagErrorf("invalid --interval %s: at least 100ms", opts.Interval)
			}
			if opts.Timeout <= 0 {
				return cmdutil.FlagErrorf("invalid --timeout %s: must be positive", opts.Timeout)
			}
			if opts.Discover < 0 {
				return cmdutil.FlagErrorf("invalid --discover %d: must not be negative", opts.Discover)
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return Run(cmd.Context(), opts)
		},
	}
	endpoints.AddClusterFlags(cmd, &opts.Cluster)
	cmd.Flags().DurationVar(&opts.Interval, "interval", time.Second, "how often to read the cluster")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 3*time.Second, "give up on a role that has not answered after this long")
	cmd.Flags().IntVar(&opts.Discover, "discover", 64, "read at most this many swarm members beyond the listed agents")
	cmd.Flags().StringVar(&opts.Filter, "filter", "", "start filtered to swarms and hosts matching this digest or address")
	cmd.Flags().BoolVar(&opts.Once, "once", false, "print one snapshot as text and exit")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

// Run is `krakenctl top`.
func Run(ctx context.Context, opts *Options) error {
	c, err := opts.Cluster.Resolve(opts.Env)
	if err != nil {
		return err
	}
	g, err := swarm.NewGatherer(c, opts.HTTPClient(), observe.Config{Timeout: opts.Timeout, Discover: opts.Discover})
	if err != nil {
		return err
	}
	w := observe.NewWatcher(g, opts.Interval)
	if opts.Once || opts.Output == cmdutil.OutputJSON {
		return once(ctx, opts, w)
	}
	if !opts.IO.IsStdoutTTY() {
		return cmdutil.FlagErrorf("%w: stdout is not one; use --once (text) or -o json for scripts", ErrNotATerminal)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.Start(ctx)
	m := tui.New(ctx, w, tui.Options{Filter: opts.Filter, NoColor: opts.Env("NO_COLOR") != ""})
	run := opts.Program
	if run == nil {
		run = program
	}
	return run(ctx, m, opts.IO.In, opts.IO.Out)
}

// program runs m full-screen until it quits or ctx ends, and restores the terminal either way.
func program(ctx context.Context, m tea.Model, in io.Reader, out io.Writer) error {
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithAltScreen(), tea.WithInput(in), tea.WithOutput(out))
	_, err := p.Run()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil // interrupted: the terminal is restored, there is nothing to report
	}
	return err
}

// once prints one snapshot, gathered twice so that rates are known.
func once(ctx context.Context, opts *Options, w *observe.Watcher) error {
	if _, err := w.Next(ctx); err != nil {
		return err
	}
	c, err := w.Next(ctx)
	if err != nil {
		return err
	}
	for _, e := range c.Errors {
		_, _ = fmt.Fprintf(opts.IO.ErrOut, "warning: could not read %s %s: %s\n", e.Role, e.Addr, e.Error)
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, c)
	}
	width := 0
	if f, ok := opts.IO.Out.(*os.File); ok && opts.IO.IsStdoutTTY() {
		if w, _, err := term.GetSize(int(f.Fd())); err == nil {
			width = w
		}
	}
	_, err = io.WriteString(opts.IO.Out, tui.RenderText(c, width))
	return err
}
