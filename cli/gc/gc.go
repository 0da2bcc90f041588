// Package gc implements `krakenctl gc`, garbage collection of blobs nothing in the build-index
// references any more. The work is server/gc's; this package turns flags into its config,
// builds its clients, and draws its progress and report.
package gc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/gc"
	"github.com/krakenctl/krakenctl/tui"
)

// minSafeGrace is the grace below which the command warns: a manifest push that touched its
// blobs before the run started must link the manifest within the grace period (docs/gc.md).
const minSafeGrace = time.Hour

// Options are the inputs of `krakenctl gc`.
type Options struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	Logger     func() *slog.Logger
	Env        endpoints.Env

	Endpoints  endpoints.Flags
	BuildIndex []string
	DryRun     bool
	Grace      time.Duration
	Backends   bool
	Parallel   int
	Output     string
}

// NewCmdGC returns `krakenctl gc`. runF replaces the run function in tests.
func NewCmdGC(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, HTTPClient: f.HTTPClient, Logger: f.Logger, Env: os.Getenv}
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete blobs nothing references from the origins and the storage backends",
		Long: `Collect garbage: delete the blobs that no tag, manifest or referrer in the build-index
reaches any more, from every origin's store and (with --backends, the default) from the
storage backends behind them.

The mark walks every repository of the build-index: every tag and every manifest link, and
each manifest's graph (index, platform manifests, config, layers, referrers). A manifest that
cannot be read stops the run before anything is deleted. The sweep then lists every origin's
store and asks it to delete each unmarked blob that nothing used (pushed, read, touched)
within --grace before the run started, on the origin's own clock; the origin decides under
its own lock and refuses blobs read, awaiting write-back or used since. Backend copies go
through the blob's owning origin, only once it holds no copy of its own.

A blob pushed during the run is never collected, and a manifest pushed during the run that
references an old blob keeps it: the proxy touches every blob a manifest references before
linking it (see docs/gc.md for the protocol). Agents' caches are not swept: they are bounded
LRU caches and drop what nobody pulls.

--dry-run asks the origins the same questions and deletes nothing: its report is what a run
on the same state deletes. A run can be interrupted at any point; run it again to finish.

Blobs outside any repository of the build-index (pushed with krakenctl push and never
referenced by a manifest) are collected too.`,
		Example: `  # what would go
  krakenctl gc --dry-run

  # collect what nothing used for a week; origins only
  krakenctl gc --grace 168h --backends=false

  # the report as JSON
  krakenctl gc -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Grace < 0 {
				return cmdutil.FlagErrorf("invalid --grace %s: must not be negative", opts.Grace)
			}
			if opts.Parallel < 1 {
				return cmdutil.FlagErrorf("invalid --parallel %d: must be at least 1", opts.Parallel)
			}
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return run(cmd.Context(), opts)
		},
	}
	endpoints.AddFlags(cmd, &opts.Endpoints)
	cmd.Flags().StringSliceVar(&opts.BuildIndex, "build-index", nil,
		"build-index node addresses (host:port); default $"+endpoints.EnvBuildIndex+", else the endpoints file")
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "report what would be deleted; delete nothing")
	cmd.Flags().DurationVar(&opts.Grace, "grace", gc.DefaultGrace, "keep blobs used within this long before the run started")
	cmd.Flags().BoolVar(&opts.Backends, "backends", true, "sweep the storage backends too (through the owning origins)")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", gc.DefaultParallel, "deletes in flight per origin")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func run(ctx context.Context, opts *Options) error {
	origins, err := opts.Endpoints.Resolve(opts.Env)
	if err != nil {
		return err
	}
	ix, err := endpoints.BuildIndexFlags{Addrs: opts.BuildIndex, File: opts.Endpoints.File}.Resolve(opts.Env)
	if err != nil {
		return err
	}
	hc := opts.HTTPClient()
	log := opts.Logger()
	if opts.Grace < minSafeGrace && !opts.DryRun {
		log.Warn("a grace period this short can collect the blobs of a push under way; see docs/gc.md", "grace", opts.Grace)
	}
	cluster := client.NewCluster(origins.Addrs, hc)
	index := client.NewBuildIndexes(ix.Addrs, hc, client.BuildIndexesOptions{})
	walker, err := gc.NewWalker(cluster, index, log)
	if err != nil {
		return err
	}
	bar := newProgress(opts.IO)
	c, err := gc.New(gc.Config{Grace: opts.Grace, DryRun: opts.DryRun, Backends: opts.Backends, Parallel: opts.Parallel},
		deps(cluster, index, walker, bar.update, log))
	if err != nil {
		return err
	}
	rep, rerr := c.Run(ctx)
	bar.finish()
	if rep != nil {
		if opts.Output == cmdutil.OutputJSON {
			err = cmdutil.PrintJSON(opts.IO.Out, rep)
		} else {
			err = printReport(opts.IO.Out, rep)
		}
		if err != nil {
			return err
		}
	}
	if rerr != nil {
		if errors.Is(rerr, context.Canceled) {
			return cmdutil.ErrCancel
		}
		return origins.Explain(rerr)
	}
	if t := rep.Totals(); t.Errors > 0 {
		return fmt.Errorf("gc: %s failed; first: %s", cmdutil.Plural(t.Errors, "delete"), firstError(rep))
	}
	return nil
}

func deps(cluster *client.Cluster, index *client.BuildIndexes, walker gc.Walker, progress func(gc.Progress), log *slog.Logger) gc.Deps {
	d := gc.ClusterDeps(cluster, index, walker)
	d.Progress, d.Log = progress, log
	return d
}

func firstError(rep *gc.Report) string {
	for _, r := range rep.Rows {
		if r.Error != "" {
			return r.Name + ": " + r.Error
		}
	}
	return ""
}

// printReport writes one row per origin (and the backends) and a closing line.
func printReport(w io.Writer, rep *gc.Report) error {
	var out strings.Builder
	verb := "collected"
	if rep.DryRun {
		verb = "would collect"
	}
	t := cmdutil.NewTable(&out, "where", "scanned", "referenced", verb, "bytes freed", "kept", "errors")
	for _, r := range append(slices.Clone(rep.Rows), rep.Totals()) {
		t.Row(r.Name, r.Scanned, r.Referenced, r.Collected, tui.FormatBytes(float64(r.Bytes)), cmdutil.OrDash(kept(r.Kept)), r.Errors)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&out, "\nMarked %s in %s (%s; %d stored nowhere) in %s; whole run %s.\n",
		cmdutil.Plural(rep.Marked, "blob"), repositories(rep.Repositories), cmdutil.Plural(rep.Manifests, "manifest"),
		rep.Dangling, rep.MarkDuration.Round(time.Millisecond), rep.Duration.Round(time.Millisecond))
	if rep.DryRun {
		out.WriteString("Dry run: nothing was deleted.\n")
	}
	_, err := io.WriteString(w, out.String())
	return err
}

func repositories(n int) string {
	if n == 1 {
		return "1 repository"
	}
	return fmt.Sprintf("%d repositories", n)
}

// kept is "N reason, ..." in a stable order.
func kept(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", m[k], k)
	}
	return strings.Join(parts, ", ")
}

// progress draws a spinner on stderr when it is a terminal, describing the phase.
type progress struct {
	ios *iostreams.IOStreams
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func newProgress(ios *iostreams.IOStreams) *progress { return &progress{ios: ios} }

func (p *progress) update(ev gc.Progress) {
	if !p.ios.IsStderrTTY() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil {
		p.bar = progressbar.NewOptions(-1,
			progressbar.OptionSetWriter(p.ios.ErrOut),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	switch ev.Phase {
	case gc.PhaseMark:
		p.bar.Describe(fmt.Sprintf("mark: %s marked, at %s", cmdutil.Plural(ev.Marked, "blob"), ev.Where))
	default:
		p.bar.Describe(fmt.Sprintf("%s %s: %s scanned", ev.Phase, ev.Where, cmdutil.Plural(ev.Scanned, "blob")))
	}
	_ = p.bar.Add(1)
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
		_ = p.bar.Exit()
		p.bar = nil
	}
}
