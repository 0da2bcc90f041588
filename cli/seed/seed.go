// Package seed implements `krakenctl seed`, which preheats images: every blob of an image's
// manifest graph is made present on its owning origins and, with --agents, preloaded on agents
// through the swarm, before a rollout needs it. The work is server/seed's; this package turns
// flags into its targets and draws its progress and summary.
package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/seed"
	"github.com/krakenctl/krakenctl/tui"
)

// DefaultNamespace is the namespace of a bare DIGEST, the one `krakenctl push` uses.
const DefaultNamespace = "krakenctl"

// AllAgents is the --agents value that means every agent of the endpoints file.
const AllAgents = "all"

// maxErrorWidth is how much of a blob's error the table shows; -o json has all of it.
const maxErrorWidth = 80

// Options are the inputs of `krakenctl seed`.
type Options struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	Logger     func() *slog.Logger
	Env        endpoints.Env

	Endpoints  endpoints.Flags
	BuildIndex []string
	// Agents is empty (origins only), [AllAgents], or agent addresses.
	Agents    []string
	Namespace string
	// Manifest walks bare digests as manifests rather than seeding them as single blobs.
	Manifest  bool
	Referrers bool
	Parallel  int
	Output    string
	Targets   []seed.Target
}

// NewCmdSeed returns `krakenctl seed`. runF replaces the run function in tests.
func NewCmdSeed(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, HTTPClient: f.HTTPClient, Logger: f.Logger, Env: os.Getenv}
	cmd := &cobra.Command{
		Use:   "seed REF|DIGEST...",
		Short: "Preheat images: make every blob hot on its origins (and agents) before a rollout",
		Long: `Make images hot before they are needed. For each REF (REPOSITORY:TAG, REPOSITORY@DIGEST, or
REPOSITORY alone for its "latest" tag) the whole manifest graph is walked: the tag is resolved
on the build-index, the index and every platform manifest are read from the origins and
verified against their digests, and every manifest, config and layer is made present on every
origin that owns it on the hash ring: an owner that lacks a blob pulls it from another origin or
from the storage backend, and hashes its pieces. Layers that name URLs (foreign layers) are left
out. With --referrers, the referrers of every manifest (signatures, SBOMs...) are seeded too.

A bare DIGEST is one blob of namespace --namespace; with --manifest it is walked as a manifest.

With --agents all (every agent of the endpoints file) or --agents ADDR,..., every blob is also
downloaded by those agents through the swarm, verified, and kept in their stores, so that the
pulls of the rollout find it on the host.

Blobs are seeded --parallel at a time. A progress bar is drawn on stderr when it is a
terminal; the summary (one row per blob: kind, size, origins and agents warmed, time) goes to
stdout, as JSON with -o json. A blob that fails does not stop the others; the command exits
non-zero if any failed, naming each blob and the origin or agent that failed it.`,
		Example: `  # preheat the owning origins of a multi-arch image
  krakenctl seed team/app:v1.4

  # and every agent of the cluster
  krakenctl seed team/app:v1.4 --agents all

  # an image by digest, with its signatures, on two agents
  krakenctl seed team/app@sha256:4a5c...e1 --referrers --agents 10.0.0.7:16000,10.0.0.8:16000

  # one blob pushed with krakenctl push
  krakenctl seed sha256:9f86...08 -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmdutil.FlagErrorf("seed takes at least one REF or DIGEST argument")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkNamespace(opts.Namespace); err != nil {
				return err
			}
			for _, a := range args {
				t, err := ParseTarget(a, opts.Namespace, opts.Manifest)
				if err != nil {
					return cmdutil.FlagErrorf("invalid argument %q: %w", a, err)
				}
				opts.Targets = append(opts.Targets, t)
			}
			if opts.Parallel < 1 {
				return cmdutil.FlagErrorf("invalid --parallel %d: must be at least 1", opts.Parallel)
			}
			if len(opts.Agents) > 1 && containsAll(opts.Agents) {
				return cmdutil.FlagErrorf("invalid --agents: %q means every agent of the endpoints file; pass it alone or list addresses", AllAgents)
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
		"build-index node addresses (host:port) that resolve tags; default $"+endpoints.EnvBuildIndex+", else the endpoints file")
	cmd.Flags().StringSliceVar(&opts.Agents, "agents", nil, `also preload on these agents (host:port,...), or "all": every agent of the endpoints file`)
	cmd.Flags().StringVar(&opts.Namespace, "namespace", DefaultNamespace, "namespace of bare DIGEST arguments (as krakenctl push uses)")
	cmd.Flags().BoolVar(&opts.Manifest, "manifest", false, "walk bare DIGEST arguments as manifests (index or image) instead of single blobs")
	cmd.Flags().BoolVar(&opts.Referrers, "referrers", false, "seed the referrers of every manifest too (signatures, SBOMs, attestations)")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", seed.DefaultParallel, "blobs seeded at once")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func containsAll(agents []string) bool {
	for _, a := range agents {
		if a == AllAgents {
			return true
		}
	}
	return false
}

// checkNamespace validates --namespace.
func checkNamespace(ns string) error {
	if err := registry.ValidateName(ns); err != nil {
		return cmdutil.FlagErrorf("invalid --namespace %q: %w", ns, err)
	}
	return nil
}

// ParseTarget parses one argument: REPOSITORY@DIGEST (sha256 or sha512), a bare sha256 DIGEST
// (sha256:<hex> or the 64 hex digits) of namespace ns, walked as a manifest when manifest is
// set, or REPOSITORY[:TAG] (tag "latest" when none is given).
func ParseTarget(arg, ns string, manifest bool) (seed.Target, error) {
	if repo, ref, ok := strings.Cut(arg, "@"); ok {
		if err := registry.ValidateName(repo); err != nil {
			return seed.Target{}, fmt.Errorf("repository: %w", err)
		}
		d, err := registry.ParseOCIDigest(ref)
		if err != nil {
			return seed.Target{}, fmt.Errorf("digest: %w", err)
		}
		return seed.Target{Repo: repo, Digest: d}, nil
	}
	if isDigest(arg) {
		d, err := cmdutil.ParseDigest(arg)
		if err != nil {
			return seed.Target{}, err
		}
		return seed.Target{Repo: ns, Digest: d, Blob: !manifest}, nil
	}
	repo, tag := arg, "latest"
	if i := strings.LastIndexByte(arg, ':'); i > strings.LastIndexByte(arg, '/') {
		repo, tag = arg[:i], arg[i+1:]
	}
	if err := registry.ValidateName(repo); err != nil {
		return seed.Target{}, fmt.Errorf("repository: %w", err)
	}
	if err := registry.ValidateTag(tag); err != nil {
		return seed.Target{}, fmt.Errorf("tag: %w", err)
	}
	return seed.Target{Repo: repo, Tag: tag}, nil
}

// isDigest tells a bare digest from a repository: "sha256:..." or 64 hex digits.
func isDigest(s string) bool {
	if strings.HasPrefix(s, string(digest.SHA256)+":") {
		return true
	}
	if len(s) != 64 {
		return false
	}
	return strings.Trim(s, "0123456789abcdef") == ""
}

// needsBuildIndex reports whether the targets cannot be seeded without a build-index.
func needsBuildIndex(opts *Options) bool {
	if opts.Referrers {
		return true
	}
	for _, t := range opts.Targets {
		if t.Tag != "" || t.Digest.Algorithm() != digest.SHA256 {
			return true
		}
	}
	return false
}

func run(ctx context.Context, opts *Options) error {
	origins, err := opts.Endpoints.Resolve(opts.Env)
	if err != nil {
		return err
	}
	hc := opts.HTTPClient()
	deps := seed.Deps{Origins: client.NewCluster(origins.Addrs, hc), HTTPClient: hc, Log: opts.Logger()}
	ix, err := endpoints.BuildIndexFlags{Addrs: opts.BuildIndex, File: opts.Endpoints.File}.Resolve(opts.Env)
	switch {
	case err == nil:
		deps.BuildIndex = client.NewBuildIndexes(ix.Addrs, hc, client.BuildIndexesOptions{})
	case needsBuildIndex(opts):
		return err
	}
	agents, err := resolveAgents(opts)
	if err != nil {
		return err
	}
	bar := newProgress(opts.IO)
	deps.Progress = bar.update
	s, err := seed.New(seed.Config{Parallel: opts.Parallel, Referrers: opts.Referrers, Agents: agents}, deps)
	if err != nil {
		return err
	}
	rep, serr := s.Seed(ctx, opts.Targets)
	bar.finish()
	if rep != nil {
		if opts.Output == cmdutil.OutputJSON {
			err = cmdutil.PrintJSON(opts.IO.Out, rep)
		} else {
			err = printSummary(opts.IO.Out, rep, len(agents) > 0)
		}
		if err != nil {
			return err
		}
	}
	if serr != nil {
		if errors.Is(serr, context.Canceled) {
			return cmdutil.ErrCancel
		}
		if rep != nil && rep.Failed > 0 {
			return fmt.Errorf("seed: %d of %s failed:\n%w", rep.Failed, cmdutil.Plural(len(rep.Blobs), "blob"), origins.Explain(serr))
		}
		return fmt.Errorf("seed: %w", origins.Explain(serr))
	}
	return nil
}

// resolveAgents turns --agents into addresses: none, the endpoints file's agents, or the list.
func resolveAgents(opts *Options) ([]string, error) {
	if len(opts.Agents) == 0 {
		return nil, nil
	}
	if containsAll(opts.Agents) {
		c, err := endpoints.ClusterFlags{File: opts.Endpoints.File}.Resolve(opts.Env)
		if err != nil {
			return nil, err
		}
		if len(c.Agents) == 0 {
			return nil, cmdutil.FlagErrorf("--agents all: the endpoints file %s lists no agents", c.Source)
		}
		return c.Agents, nil
	}
	c, err := endpoints.ClusterFlags{Agents: opts.Agents}.Resolve(opts.Env)
	if err != nil {
		return nil, err
	}
	return c.Agents, nil
}

// printSummary writes one row per blob and a closing line.
func printSummary(w io.Writer, rep *seed.Report, withAgents bool) error {
	var out strings.Builder
	headers := []string{"digest", "kind", "size", "origins"}
	if withAgents {
		headers = append(headers, "agents")
	}
	headers = append(headers, "time", "error")
	t := cmdutil.NewTable(&out, headers...)
	for _, b := range rep.Blobs {
		row := []any{b.Digest, b.Kind, size(b.Size), fmt.Sprintf("%d/%d", seed.Warmed(b.Origins), len(b.Origins))}
		if withAgents {
			row = append(row, fmt.Sprintf("%d/%d", seed.Warmed(b.Agents), len(b.Agents)))
		}
		row = append(row, b.Duration.Round(time.Millisecond), cmdutil.OrDash(cmdutil.Truncate(b.Error, maxErrorWidth)))
		t.Row(row...)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&out, "\n%s seeded, %d failed.\n", cmdutil.Plural(len(rep.Blobs)-rep.Failed, "blob"), rep.Failed)
	_, err := io.WriteString(w, out.String())
	return err
}

func size(n int64) string {
	if n < 0 {
		return "-"
	}
	return tui.FormatBytes(float64(n))
}

// progress draws a bar on stderr when it is a terminal: one bar per blob while it moves, as
// push and pull draw, finished with a line that says where it landed. Blobs seeded at once take
// turns on the one bar line (the last one to move draws it). It is safe for concurrent use.
type progress struct {
	ios *iostreams.IOStreams
	mu  sync.Mutex
	bar *progressbar.ProgressBar
	cur *seed.Blob // the blob the bar shows
	n   int        // blobs the walk reached
	fin int        // blobs finished
}

func newProgress(ios *iostreams.IOStreams) *progress { return &progress{ios: ios} }

func (p *progress) update(ev seed.Progress) {
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
		mark := "✓"
		if b.Error != "" {
			mark = "✗"
		}
		_, _ = fmt.Fprintf(p.ios.ErrOut, "%s %-8s %s %s\n", mark, b.Kind, b.Digest, size(b.Size))
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
