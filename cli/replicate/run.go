package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/replicate"
	"github.com/krakenctl/krakenctl/tui"
)

// RunOptions are the inputs of `krakenctl replicate run`.
type RunOptions struct {
	deps
	Endpoints  endpoints.Flags
	BuildIndex []string
	// To is the destination cluster's endpoints file.
	To       string
	Parallel int
	Output   string
	Target   replicate.Target
}

// NewCmdRun returns `krakenctl replicate run`. runF replaces the run function in tests.
func NewCmdRun(f *cmdutil.Factory, runF func(context.Context, *RunOptions) error) *cobra.Command {
	opts := &RunOptions{deps: deps{IO: f.IOStreams, HTTPClient: f.HTTPClient, Logger: f.Logger, Env: os.Getenv}}
	cmd := &cobra.Command{
		Use:   "run REPOSITORY[:TAG] --to FILE",
		Short: "Copy a tag and every blob of its image to another cluster, once",
		Long: `Copy one tag, and every blob of its manifest graph (index, platform manifests, configs,
layers), from the cluster of --endpoints-file (the source) to the cluster whose endpoints file
is FILE (the destination). The tag is resolved on the source's build-index; each blob streams
from the source's origins into the destination's owning origins, which verify it against its
digest before they store it; a blob the destination already has is not sent. Only when every
blob has landed is the tag written through the destination's build-index, so the destination
never holds a tag whose content it lacks.

The copy is idempotent: when the destination already holds the tag at the source's value, the
command says so and sends nothing. The destination is reached with the tls section of FILE
(its CA, and a client certificate the destination's origins accept as a writer).

Blobs are sent --parallel at a time. A progress bar is drawn on stderr when it is a terminal;
the summary (blobs copied, already present and failed, bytes, throughput) goes to stdout, as
the whole report with -o json. The command exits non-zero when anything failed, and says when
the failure is permanent: retrying will not fix a refusal or content the source lacks.`,
		Example: `  # copy a tag from the local dev cluster to another cluster
  krakenctl replicate run team/app:v1.4 --to /etc/krakenctl/eu-west.yaml

  # between two named clusters, as JSON
  krakenctl replicate run team/app:v1.4 --endpoints-file us.yaml --to eu.yaml -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cmdutil.FlagErrorf("run takes one REPOSITORY[:TAG] argument")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := ParseTarget(args[0])
			if err != nil {
				return cmdutil.FlagErrorf("invalid argument %q: %w", args[0], err)
			}
			opts.Target = t
			if opts.To == "" {
				return cmdutil.FlagErrorf("--to FILE is required: the destination cluster's endpoints file")
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
			return runRun(cmd.Context(), opts)
		},
	}
	endpoints.AddFlags(cmd, &opts.Endpoints)
	cmd.Flags().StringSliceVar(&opts.BuildIndex, "build-index", nil,
		"source build-index node addresses (host:port); default $"+endpoints.EnvBuildIndex+", else the endpoints file")
	cmd.Flags().StringVar(&opts.To, "to", "", "the destination cluster's endpoints file (origins, build_index, tls)")
	_ = cmd.MarkFlagFilename("to", "yaml", "yml")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", replicate.DefaultParallel, "blobs sent at once")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

// Destination is a cluster named by an endpoints file: its origins and build-index nodes, and
// the client that reaches them (TLS with the file's certificate when it has a tls section).
type Destination struct {
	Origins    []string
	BuildIndex []string
	TLS        *pki.Provider
}

// ReadDestination reads the endpoints file of a destination cluster. It must list origins and
// build-index nodes; its tls section, if any, must load. Environment variables do not apply:
// they describe the source.
func ReadDestination(path string) (Destination, error) {
	e, err := api.ReadEndpoints(path)
	if err != nil {
		return Destination{}, fmt.Errorf("--to: %w", err)
	}
	var errs []error
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"origins", e.Origins}, {"build_index", e.BuildIndex}} {
		if len(l.addrs) == 0 {
			errs = append(errs, fmt.Errorf("lists no %s", l.key))
		}
		for _, a := range l.addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not host:port", l.key, a))
			}
		}
	}
	if len(errs) > 0 {
		return Destination{}, cmdutil.FlagErrorf("--to: the endpoints file %s %w", path, errors.Join(errs...))
	}
	d := Destination{Origins: e.Origins, BuildIndex: e.BuildIndex}
	if e.TLS != nil {
		p, err := pki.Load(pki.Config{CAFile: e.TLS.CAFile, CertFile: e.TLS.CertFile, KeyFile: e.TLS.KeyFile})
		if err != nil {
			return Destination{}, fmt.Errorf("--to: %w (named by the endpoints file %s)", err, path)
		}
		d.TLS = p
	}
	return d, nil
}

func runRun(ctx context.Context, opts *RunOptions) error {
	origins, err := opts.Endpoints.Resolve(opts.Env)
	if err != nil {
		return err
	}
	ix, err := endpoints.BuildIndexFlags{Addrs: opts.BuildIndex, File: opts.Endpoints.File}.Resolve(opts.Env)
	if err != nil {
		return err
	}
	dest, err := ReadDestination(opts.To)
	if err != nil {
		return err
	}
	hc, dhc := opts.HTTPClient(), cmdutil.NewHTTPClient(dest.TLS)
	defer dhc.CloseIdleConnections()
	src := replicate.Cluster{
		Name:       "source",
		Origins:    client.NewCluster(origins.Addrs, hc),
		BuildIndex: client.NewBuildIndexes(ix.Addrs, hc, client.BuildIndexesOptions{}),
	}
	dst := replicate.Cluster{
		Name:       opts.To,
		Origins:    client.NewCluster(dest.Origins, dhc),
		BuildIndex: client.NewBuildIndexes(dest.BuildIndex, dhc, client.BuildIndexesOptions{}),
	}
	bar := newProgress(opts.IO)
	cp, err := replicate.New(replicate.Config{Parallel: opts.Parallel}, replicate.Deps{Progress: bar.update, Log: opts.Logger()})
	if err != nil {
		return err
	}
	rep, cerr := cp.Copy(ctx, src, dst, opts.Target)
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
	switch {
	case cerr == nil:
		return nil
	case errors.Is(cerr, context.Canceled):
		return cmdutil.ErrCancel
	case errors.Is(cerr, replicate.ErrPermanent):
		return fmt.Errorf("replicate %s: permanent failure, retrying will not fix it:\n%w", opts.Target, origins.Explain(cerr))
	default:
		return fmt.Errorf("replicate %s (a retry may succeed):\n%w", opts.Target, origins.Explain(cerr))
	}
}

// printReport writes one row per blob and the totals, or one line when nothing had to move.
func printReport(w io.Writer, rep *replicate.Report) error {
	var out strings.Builder
	if rep.UpToDate {
		fmt.Fprintf(&out, "%s:%s is up to date on %s (%s): nothing sent.\n", rep.Repo, rep.Tag, rep.To, rep.Digest)
		_, err := io.WriteString(w, out.String())
		return err
	}
	if len(rep.Blobs) > 0 {
		t := cmdutil.NewTable(&out, "digest", "kind", "size", "result", "time", "error")
		for _, b := range rep.Blobs {
			t.Row(b.Digest, b.Kind, size(b.Size), result(b), b.Duration.Round(time.Millisecond),
				cmdutil.OrDash(cmdutil.Truncate(b.Error, maxErrorWidth)))
		}
		if err := t.Flush(); err != nil {
			return err
		}
		out.WriteString("\n")
	}
	tag := "not written"
	if rep.TagWritten {
		tag = "written"
	}
	fmt.Fprintf(&out, "Image:    %s:%s@%s → %s (tag %s)\n", rep.Repo, rep.Tag, cmdutil.OrDash(string(rep.Digest)), rep.To, tag)
	fmt.Fprintf(&out, "Blobs:    %d copied, %d already present, %d failed, of %d\n", rep.Copied, rep.Present, rep.Failed, len(rep.Blobs))
	fmt.Fprintf(&out, "Sent:     %s in %s (%s)\n", tui.FormatBytes(float64(rep.Bytes)), rep.Duration.Round(time.Millisecond), rate(rep.Bytes, rep.Duration))
	_, err := io.WriteString(w, out.String())
	return err
}

// result is a blob's outcome in one word.
func result(b *replicate.Blob) string {
	switch {
	case b.Error != "":
		return "failed"
	case b.Copied:
		return "copied"
	default:
		return "present"
	}
}

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return tui.FormatRate(float64(n) / d.Seconds())
}

func size(n int64) string {
	if n < 0 {
		return "-"
	}
	return tui.FormatBytes(float64(n))
}

// progress draws a bar on stderr when it is a terminal, as seed's does: one bar for the blob
// that moved last, and a line per blob once it is done. It is safe for concurrent use.
type progress struct {
	ios *iostreams.IOStreams
	mu  sync.Mutex
	bar *progressbar.ProgressBar
	cur *replicate.Blob // the blob the bar shows
	n   int             // blobs of the graph
	fin int             // blobs finished
}

func newProgress(ios *iostreams.IOStreams) *progress { return &progress{ios: ios} }

func (p *progress) update(ev replicate.Progress) {
	if !p.ios.IsStderrTTY() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Blob == nil {
		p.n = ev.Blobs
		return
	}
	b := ev.Blob
	if ev.Finished {
		p.fin++
		p.clear()
		mark := "✓ " + result(b)
		if b.Error != "" {
			mark = "✗ failed"
		}
		_, _ = fmt.Fprintf(p.ios.ErrOut, "%-9s %-8s %s %s\n", mark, b.Kind, b.Digest, size(b.Size))
		return
	}
	if p.cur != b || p.bar == nil {
		p.clear()
		total := ev.Total
		if total <= 0 {
			total = -1
		}
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(p.ios.ErrOut),
			progressbar.OptionSetDescription(fmt.Sprintf("[%d/%d] %s %s", p.fin+1, p.n, b.Kind, b.Digest.Encoded()[:12])),
			progressbar.OptionShowBytes(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetSpinnerChangeInterval(0),
			progressbar.OptionClearOnFinish(),
		)
		p.cur = b
	}
	if ev.Total > 0 && ev.Total != p.bar.GetMax64() {
		p.bar.ChangeMax64(ev.Total)
	}
	_ = p.bar.Set64(ev.Done)
}

// clear removes the bar; p.mu is held.
func (p *progress) clear() {
	if p.bar != nil {
		_ = p.bar.Clear()
		_ = p.bar.Exit()
		p.bar, p.cur = nil, nil
	}
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
}
