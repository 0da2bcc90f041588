package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/bench"
)

// TagsOptions are the inputs of `krakenctl bench tags`.
type TagsOptions struct {
	IO     *iostreams.IOStreams
	Logger func() *slog.Logger

	Config bench.TagsConfig
	// Verbose shows the nodes' warnings and errors on stderr.
	Verbose bool
	// CPUProfile, when set, is where a CPU profile of the whole run is written (go tool pprof).
	CPUProfile string
	Output     string
}

// NewCmdTags returns `krakenctl bench tags`. runF replaces the run function in tests.
func NewCmdTags(f *cmdutil.Factory, runF func(context.Context, *TagsOptions) error) *cobra.Command {
	opts := &TagsOptions{IO: f.IOStreams, Logger: f.Logger}
	cmd := &cobra.Command{
		Use:   "tags [--puts N] [--gets N] [--list N] [--clients C] [--tls]",
		Short: "Measure the build-index: tag puts, linearizable gets, listing",
		Long: `Start a build-index cluster in this process (--nodes nodes, Raft over TCP and the HTTP API on
127.0.0.1, content checks off, no storage backend) and measure it through the HTTP API with
--clients concurrent clients, spread over the nodes round-robin (writes and linearizable reads
sent to followers are forwarded to the leader, as in production; --leader-only sends them all
to the leader, which leaves that hop out):

  puts   --puts distinct tags written, in tags per second
  gets   --gets linearizable reads of those tags (each checked), in reads per second
  list   one repository filled with --list tags through the API, then listed in full, page
         after page as large as the server allows, through the leader; the median of 5 runs

Puts and gets also report the process's CPU time per operation (the nodes and the clients
share the process), which other load on the machine disturbs less than the rates.

With --tls every link runs over mutual TLS, as between separate hosts: a CA made for the run
issues each node a certificate of its own, the HTTP API and Raft require the caller's
certificate, the admin listeners serve TLS too, and the clients present a certificate of
group proxy (the role that writes tags in production), named bench-client. Compare it with
the same command without --tls to see what TLS costs (scripts/ab-bench.sh alternates them).

Every request must succeed, or the benchmark fails. Progress is drawn on stderr when it is a
terminal. The numbers describe this machine under its current load: run it on a quiet one.`,
		Example: `  krakenctl bench tags
  krakenctl bench tags --puts 5000 --gets 20000 --list 10000 --clients 16 -o json
  krakenctl bench tags --tls -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := opts.Config
			switch {
			case c.Nodes < 1 || c.Nodes > 9:
				return cmdutil.FlagErrorf("invalid --nodes %d: want 1 to 9", c.Nodes)
			case c.Clients < 1:
				return cmdutil.FlagErrorf("invalid --clients %d: want at least 1", c.Clients)
			case c.Puts < 1:
				return cmdutil.FlagErrorf("invalid --puts %d: want at least 1", c.Puts)
			case c.Gets < 0:
				return cmdutil.FlagErrorf("invalid --gets %d: want 0 (skip) or more", c.Gets)
			case c.List < 0:
				return cmdutil.FlagErrorf("invalid --list %d: want 0 (skip) or more", c.List)
			}
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return tagsRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&opts.Config.Nodes, "nodes", bench.DefaultNodes, "build-index nodes in the cluster")
	fl.IntVar(&opts.Config.Clients, "clients", bench.DefaultClients, "concurrent clients")
	fl.BoolVar(&opts.Config.LeaderOnly, "leader-only", false, "send every request to the leader instead of spreading them over the nodes")
	fl.BoolVar(&opts.Config.TLS, "tls", false, "run the API, the admin listeners and Raft over mutual TLS, with a CA made for the run")
	fl.IntVar(&opts.Config.Puts, "puts", bench.DefaultPuts, "tags to write")
	fl.IntVar(&opts.Config.Gets, "gets", bench.DefaultGets, "linearizable reads to make (0 skips them)")
	fl.IntVar(&opts.Config.List, "list", bench.DefaultList, "tags in the repository whose listing is timed (0 skips it)")
	fl.BoolVar(&opts.Verbose, "verbose", false, "show the nodes' warnings and errors on stderr")
	fl.StringVar(&opts.CPUProfile, "cpu-profile", "", "write a CPU profile of the run (every node and client: one process) to `FILE`, for go tool pprof")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func tagsRun(ctx context.Context, opts *TagsOptions) (err error) {
	cfg := opts.Config
	// The library reads 0 as "default": a skipped phase is negative there.
	if cfg.Gets == 0 {
		cfg.Gets = -1
	}
	if cfg.List == 0 {
		cfg.List = -1
	}
	log := slog.New(slog.DiscardHandler)
	if opts.Verbose {
		log = opts.Logger()
	}
	if opts.CPUProfile != "" {
		stop, err := startCPUProfile(opts.CPUProfile)
		if err != nil {
			return err
		}
		defer func() {
			if perr := stop(); perr != nil && err == nil {
				err = perr
			}
		}()
	}
	p := newProgress(opts.IO)
	res, err := bench.Tags(ctx, cfg, bench.TagsDeps{Logger: log, Progress: func(pr bench.Progress) { p.update(pr.Phase, int64(pr.Done), int64(pr.Total)) }})
	p.finish()
	if err != nil {
		return fmt.Errorf("bench tags: %w", err)
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, res)
	}
	return printTags(opts.IO.Out, res)
}

// startCPUProfile starts profiling the process's CPU into path; stop ends it and closes the file.
func startCPUProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("start CPU profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("write CPU profile %s: %w", path, err)
		}
		return nil
	}, nil
}

func printTags(w io.Writer, r bench.TagsResult) error {
	t := cmdutil.NewTable(w, "measure", "count", "result", "p50", "p99", "cpu/op")
	t.Row("tag puts", r.Puts, rate(r.PutsPerS), msCell(r.PutP50Ms), msCell(r.PutP99Ms), usCell(r.PutCPUUs))
	if r.Gets > 0 {
		t.Row("linearizable gets", r.Gets, rate(r.GetsPerS), msCell(r.GetP50Ms), msCell(r.GetP99Ms), usCell(r.GetCPUUs))
	}
	if r.ListTags > 0 {
		t.Row("tag puts (filling the listed repository)", r.ListTags, rate(r.FillPerS), "-", "-", "-")
		t.Row(fmt.Sprintf("list a repository's tags (HTTP, %s)", cmdutil.Plural(r.ListPages, "page")), r.ListTags, msCell(r.ListMs), "-", "-", "-")
		t.Row("list a repository's tags (in the store)", r.ListTags, msCell(r.ListStoreMs), "-", "-", "-")
	}
	if err := t.Flush(); err != nil {
		return err
	}
	spread := "spread over them"
	if r.LeaderOnly {
		spread = "all sent to the leader"
	}
	links := "plain text"
	if r.TLS {
		links = "mutual TLS"
	}
	_, err := fmt.Fprintf(w, "\n%s on 127.0.0.1 over %s, %s %s, %.1fs in all.\n",
		cmdutil.Plural(r.Nodes, "build-index node"), links, cmdutil.Plural(r.Clients, "concurrent client"), spread, r.ElapsedS)
	if err == nil && (r.PutCPUUs > 0 || r.GetCPUUs > 0) {
		_, err = fmt.Fprintln(w, "CPU/op is the process's CPU time (nodes and clients together) per operation.")
	}
	if err == nil && r.ListTags > 0 {
		runs := make([]string, len(r.ListRunsMs))
		for i, v := range r.ListRunsMs {
			runs[i] = msCell(v)
		}
		_, err = fmt.Fprintf(w, "Listings are the median of %d runs through the leader (HTTP: %s).\n", len(runs), strings.Join(runs, ", "))
	}
	return err
}

// usCell shows a CPU time per operation; "-" when the platform did not say.
func usCell(v float64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f µs", v)
}

func rate(v float64) string { return fmt.Sprintf("%.0f/s", v) }

func msCell(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

// phaseProgress shows a benchmark's phases on stderr: a bar per phase when stderr is a
// terminal, else one line as each phase starts. Both benchmarks use it.
type phaseProgress struct {
	ios    *iostreams.IOStreams
	titles map[string]string
	// unit returns the bar's options for a phase's count (bytes or operations) and how a
	// total is written in the one-line form.
	unit  func(phase string) ([]progressbar.Option, func(int64) string)
	phase string
	bar   *progressbar.ProgressBar
}

// update starts a new bar when the phase changes and moves the current one; calls come one at
// a time.
func (p *phaseProgress) update(phase string, done, total int64) {
	if phase != p.phase {
		p.finish()
		p.phase = phase
		title := p.titles[phase]
		if title == "" {
			title = phase
		}
		unitOpts, cell := p.unit(phase)
		if !p.ios.IsStderrTTY() {
			_, _ = fmt.Fprintf(p.ios.ErrOut, "%s (%s)...\n", title, cell(total))
			return
		}
		opts := append([]progressbar.Option{
			progressbar.OptionSetWriter(p.ios.ErrOut),
			progressbar.OptionSetDescription(fmt.Sprintf("%-30s", title)),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(),
			progressbar.OptionThrottle(100 * time.Millisecond),
			progressbar.OptionClearOnFinish(),
		}, unitOpts...)
		p.bar = progressbar.NewOptions64(total, opts...)
	}
	if p.bar != nil {
		_ = p.bar.Set64(done)
	}
}

func (p *phaseProgress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}

func newProgress(ios *iostreams.IOStreams) *phaseProgress {
	return &phaseProgress{ios: ios, titles: phaseTitles, unit: func(string) ([]progressbar.Option, func(int64) string) {
		return []progressbar.Option{progressbar.OptionShowIts(), progressbar.OptionSetItsString("ops")},
			func(n int64) string { return fmt.Sprint(n) }
	}}
}

var phaseTitles = map[string]string{
	bench.PhaseStart: "starting nodes",
	bench.PhasePut:   "putting tags",
	bench.PhaseGet:   "getting tags",
	bench.PhaseFill:  "filling the listed repository",
	bench.PhaseList:  "listing",
}
