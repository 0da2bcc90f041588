// Package cache implements `krakenctl cache status` and `krakenctl cache evict`: what one
// agent's or origin's store holds, how old it is, what its cleanup policy would remove now,
// and eviction by hand. The decisions are the node's (server/cacheapi, over castore's
// Cleanup); this package turns flags into a request and draws the answer.
package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/tui"
)

// Options are the inputs of both subcommands.
type Options struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	Logger     func() *slog.Logger
	Env        endpoints.Env

	Agent  endpoints.AgentFlags
	Origin string
	Output string

	// status
	Blobs int

	// evict
	Digests   []string
	Idle      time.Duration
	OlderThan time.Duration
	To        string
	Policy    bool
	DryRun    bool

	request api.CacheEvictRequest // built from the evict flags
}

// NewCmdCache returns `krakenctl cache` with its subcommands. statusF and evictF replace the
// run functions in tests.
func NewCmdCache(f *cmdutil.Factory, statusF, evictF func(context.Context, *Options) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Show and clean what an agent or origin holds in its store",
		Long: `Show what one agent's or origin's local store holds, how old it is and what its cleanup
policy would remove now, and evict blobs by hand.

Each node runs its policy on its own (the agent's cleanup: and the origin's store.cleanup:
config): blobs idle too long (tti), too old (ttl), and least recently used ones when usage
passes the high watermark, down to the low one. No blob being read, seeded or downloaded, or
(on an origin) awaiting write-back to storage is ever removed. See docs/operations.md,
"Cache and cleanup".

Name the node with --agent (default $` + endpoints.EnvAgent + `, else this host's agent) or --origin.
Under TLS the node serves these commands to an admin certificate only (--tls-cert).`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newCmdStatus(f, statusF), newCmdEvict(f, evictF))
	return cmd
}

func newOptions(f *cmdutil.Factory) *Options {
	return &Options{IO: f.IOStreams, HTTPClient: f.HTTPClient, Logger: f.Logger, Env: os.Getenv}
}

func addNodeFlags(cmd *cobra.Command, opts *Options) {
	endpoints.AddAgentFlags(cmd, &opts.Agent)
	cmd.Flags().StringVar(&opts.Origin, "origin", "", "an origin's address (host:port or http(s) URL) instead of an agent")
	cmd.MarkFlagsMutuallyExclusive("agent", "origin")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
}

func newCmdStatus(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := newOptions(f)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "What a node's store holds, how old it is, and what its policy would remove now",
		Long: `Show a node's store: bytes used, reserved and the capacity (or the disk), the cleanup policy,
the blobs by time since last use and since arrival, what the policy would remove now and why,
and the least recently used blobs (--blobs) with what keeps each (open: being read or sent;
held: awaiting write-back; active: seeded or downloaded by the swarm).`,
		Example: `  # this host's agent
  krakenctl cache status

  # an origin, as JSON, with its 50 least recently used blobs
  krakenctl cache status --origin 10.0.0.5:15000 --blobs 50 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Blobs < 0 || opts.Blobs > api.CacheMaxBlobs {
				return cmdutil.FlagErrorf("invalid --blobs %d: want 0 to %d", opts.Blobs, api.CacheMaxBlobs)
			}
			if err := checkNode(opts); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return runStatus(cmd.Context(), opts)
		},
	}
	addNodeFlags(cmd, opts)
	cmd.Flags().IntVar(&opts.Blobs, "blobs", 10, "list this many least recently used blobs")
	return cmd
}

func newCmdEvict(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := newOptions(f)
	cmd := &cobra.Command{
		Use:   "evict",
		Short: "Remove blobs from a node's store by hand, or run its policy now",
		Long: `Remove blobs from one node's store: those named with --digest, those idle over --idle, those
older than --older-than, and least recently used ones until the store is down to --to (bytes
of blobs, like 20GiB, or a percentage of the capacity, or of the disk without one, like 60%).
The criteria add up. --policy runs the node's own cleanup policy now instead.

Nothing being read, seeded or downloaded, and on an origin nothing awaiting write-back, is
removed: the report lists it as kept, with why. --dry-run reports what would go, decided the
same way: an eviction right after it removes the same blobs unless something used them in
between.`,
		Example: `  # what would go if the agent kept only 20 GiB
  krakenctl cache evict --to 20GiB --dry-run

  # remove two blobs from an origin (it pulls them back from storage when asked)
  krakenctl cache evict --origin 10.0.0.5:15000 --digest sha256:4f2a... --digest sha256:9c1e...

  # what nobody used for two days, then the policy
  krakenctl cache evict --idle 48h
  krakenctl cache evict --policy`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := buildRequest(opts); err != nil {
				return err
			}
			if err := checkNode(opts); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return runEvict(cmd.Context(), opts)
		},
	}
	addNodeFlags(cmd, opts)
	cmd.Flags().StringArrayVar(&opts.Digests, "digest", nil, "remove this blob (repeatable)")
	cmd.Flags().DurationVar(&opts.Idle, "idle", 0, "remove blobs not used for this long")
	cmd.Flags().DurationVar(&opts.OlderThan, "older-than", 0, "remove blobs that arrived this long ago")
	cmd.Flags().StringVar(&opts.To, "to", "", "remove least recently used blobs down to SIZE (20GiB) or PERCENT (60%)")
	cmd.Flags().BoolVar(&opts.Policy, "policy", false, "run the node's cleanup policy now")
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "report what would be removed; remove nothing")
	cmd.MarkFlagsMutuallyExclusive("policy", "digest")
	cmd.MarkFlagsMutuallyExclusive("policy", "idle")
	cmd.MarkFlagsMutuallyExclusive("policy", "older-than")
	cmd.MarkFlagsMutuallyExclusive("policy", "to")
	return cmd
}

// checkNode validates the output format and an --origin address (--agent is checked when
// resolved).
func checkNode(opts *Options) error {
	if err := cmdutil.CheckOutput(opts.Output); err != nil {
		return err
	}
	if o := strings.TrimSpace(opts.Origin); o != "" && !strings.Contains(o, "://") {
		if err := ring.CheckMember(o); err != nil {
			return cmdutil.FlagErrorf("invalid --origin: %w", err)
		}
	}
	return nil
}

// buildRequest turns the evict flags into opts.request, refusing what the node would.
func buildRequest(opts *Options) error {
	r := api.CacheEvictRequest{Policy: opts.Policy, DryRun: opts.DryRun}
	for _, s := range opts.Digests {
		d, err := cmdutil.ParseDigest(strings.TrimSpace(s))
		if err != nil {
			return cmdutil.FlagErrorf("invalid --digest: %w", err)
		}
		r.Digests = append(r.Digests, d.String())
	}
	if opts.Idle < 0 {
		return cmdutil.FlagErrorf("invalid --idle %s: must not be negative", opts.Idle)
	}
	if opts.OlderThan < 0 {
		return cmdutil.FlagErrorf("invalid --older-than %s: must not be negative", opts.OlderThan)
	}
	if opts.Idle > 0 {
		r.IdleOver = opts.Idle.String()
	}
	if opts.OlderThan > 0 {
		r.OlderThan = opts.OlderThan.String()
	}
	if to := strings.TrimSpace(opts.To); to != "" {
		if p, ok := strings.CutSuffix(to, "%"); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil || !(v >= 0 && v <= 100) {
				return cmdutil.FlagErrorf("invalid --to %q: a percentage is 0%% to 100%%", opts.To)
			}
			r.DownToPercent = &v
		} else {
			n, err := config.ParseByteSize(to)
			if err != nil || n < 0 {
				return cmdutil.FlagErrorf("invalid --to %q: want a size (20GiB) or a percentage (60%%)", opts.To)
			}
			r.DownToBytes = new(int64(n))
		}
	}
	if !r.Policy && len(r.Digests) == 0 && r.IdleOver == "" && r.OlderThan == "" && r.DownToBytes == nil && r.DownToPercent == nil {
		return cmdutil.FlagErrorf("nothing to evict: give --digest, --idle, --older-than, --to or --policy")
	}
	opts.request = r
	return nil
}

// node is the agent or origin a command talks to.
type node struct {
	role, addr string
	status     func(context.Context, int) (api.CacheStatus, error)
	evict      func(context.Context, api.CacheEvictRequest) (api.CacheEvictReport, error)
	explain    func(error) error
}

func resolve(opts *Options) (node, error) {
	hc := opts.HTTPClient()
	if o := strings.TrimSpace(opts.Origin); o != "" {
		c := client.NewOrigin(o, hc)
		return node{role: "origin", addr: o, status: c.CacheStatus, evict: c.CacheEvict, explain: func(err error) error {
			if endpoints.Unreachable(err) {
				return fmt.Errorf("%w\n(no origin answers at %s, from --origin)", err, o)
			}
			return err
		}}, nil
	}
	a, err := opts.Agent.Resolve(opts.Env)
	if err != nil {
		return node{}, err
	}
	c := client.NewAgent(a.Addr, hc)
	return node{role: "agent", addr: a.Addr, status: c.CacheStatus, evict: c.CacheEvict, explain: func(err error) error {
		if endpoints.Unreachable(err) {
			return fmt.Errorf("%w\n(no agent answers at %s, from %s: point --agent or $%s at one, or name an origin with --origin)",
				err, a.Addr, a.Source, endpoints.EnvAgent)
		}
		return err
	}}, nil
}

func runStatus(ctx context.Context, opts *Options) error {
	n, err := resolve(opts)
	if err != nil {
		return err
	}
	st, err := n.status(ctx, opts.Blobs)
	if err != nil {
		return n.explain(err)
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, st)
	}
	return printStatus(opts.IO.Out, n.addr, st)
}

func runEvict(ctx context.Context, opts *Options) error {
	n, err := resolve(opts)
	if err != nil {
		return err
	}
	rep, err := n.evict(ctx, opts.request)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return cmdutil.ErrCancel
		}
		return n.explain(err)
	}
	if opts.Output == cmdutil.OutputJSON {
		err = cmdutil.PrintJSON(opts.IO.Out, rep)
	} else {
		err = printReport(opts.IO.Out, n.addr, rep)
	}
	if err != nil {
		return err
	}
	for _, k := range rep.Kept {
		if k.Error != "" {
			return fmt.Errorf("cache evict: %s could not be removed: %s", k.Digest, k.Error)
		}
	}
	return nil
}

func size(n int64) string { return tui.FormatBytes(float64(n)) }

// ago is how long before now t was, rounded for a person; "-" for a zero t.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d >= 48*time.Hour {
		return fmt.Sprintf("%.1fd ago", d.Hours()/24)
	}
	return short(d) + " ago"
}

// short writes d without the zero units Go's String gives: 6h, 8h5m, 45m, 30s.
func short(d time.Duration) string {
	if d >= time.Minute {
		d = d.Round(time.Minute)
	} else {
		d = d.Round(time.Second)
	}
	s := d.String()
	if d >= time.Minute {
		s = strings.TrimSuffix(s, "0s")
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
	}
	return s
}

// offOr writes a policy duration, "off" for none.
func offOr(v string) string {
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return v
	case d <= 0:
		return "off"
	}
	return short(d)
}

func printStatus(w io.Writer, addr string, st api.CacheStatus) error {
	var out strings.Builder
	capacity := "unlimited"
	if st.CapacityBytes > 0 {
		capacity = size(st.CapacityBytes)
	}
	fmt.Fprintf(&out, "%s %s: %s, %s used, %s reserved, capacity %s\n", st.Role, addr,
		cmdutil.Plural(st.BlobCount, "blob"), size(st.UsedBytes), size(st.ReservedBytes), capacity)
	if fs := st.Filesystem; fs != nil {
		fmt.Fprintf(&out, "disk: %s used of %s\n", size(fs.UsedBytes), size(fs.TotalBytes))
	}
	p := st.Policy
	marks := "off"
	if p.HighWatermark > 0 {
		marks = fmt.Sprintf("%d%% -> %d%% of the %s (now %.1f%%)", p.HighWatermark, p.LowWatermark, cmdutil.OrDash(st.Basis), st.UsagePercent)
	}
	fmt.Fprintf(&out, "policy: every %s; tti %s; ttl %s; watermarks %s\n", offOr(p.Interval), offOr(p.TTI), offOr(p.TTL), marks)
	if st.Oldest != nil {
		fmt.Fprintf(&out, "oldest: %s, arrived %s; idlest: %s, last used %s\n",
			st.Oldest.Digest, ago(st.Now, st.Oldest.Created), st.Idlest.Digest, ago(st.Now, st.Idlest.LastUsed))
	}

	out.WriteString("\n")
	t := cmdutil.NewTable(&out, "below", "idle blobs", "idle bytes", "age blobs", "age bytes")
	for i := range st.IdleBuckets {
		below := "older"
		if d, err := time.ParseDuration(st.IdleBuckets[i].Below); err == nil {
			below = "< " + short(d)
			if d >= 48*time.Hour && d%(24*time.Hour) == 0 {
				below = fmt.Sprintf("< %dd", d/(24*time.Hour))
			}
		}
		t.Row(below, st.IdleBuckets[i].Blobs, size(st.IdleBuckets[i].Bytes), st.AgeBuckets[i].Blobs, size(st.AgeBuckets[i].Bytes))
	}
	if err := t.Flush(); err != nil {
		return err
	}

	out.WriteString("\n")
	if len(st.WouldRemove) == 0 && len(st.WouldKeep) == 0 {
		out.WriteString("The policy would remove nothing now.\n")
	} else {
		t = cmdutil.NewTable(&out, "policy now", "reason", "blobs", "bytes")
		var total int64
		for _, r := range st.WouldRemove {
			t.Row("would remove", r.Reason, r.Blobs, size(r.Bytes))
			total += r.Bytes
		}
		for _, r := range st.WouldKeep {
			t.Row("keeps in use", r.Reason, r.Blobs, size(r.Bytes))
		}
		if err := t.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(&out, "The policy would free %s now.\n", size(total))
	}
	if len(st.Blobs) > 0 {
		out.WriteString("\nLeast recently used:\n")
		t = cmdutil.NewTable(&out, "digest", "size", "arrived", "last used", "in use")
		for _, b := range st.Blobs {
			t.Row(b.Digest, size(b.Size), ago(st.Now, b.Created), ago(st.Now, b.LastUsed), cmdutil.OrDash(b.InUse))
		}
		if err := t.Flush(); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, out.String())
	return err
}

func printReport(w io.Writer, addr string, rep api.CacheEvictReport) error {
	var out strings.Builder
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	if len(rep.Removed)+len(rep.Kept) > 0 {
		t := cmdutil.NewTable(&out, "digest", "size", "last used", "result", "reason")
		for _, b := range rep.Removed {
			t.Row(b.Digest, size(b.Size), ago(rep.Now, b.LastUsed), verb, b.Reason)
		}
		for _, b := range rep.Kept {
			why := "kept: " + b.Kept
			if b.Error != "" {
				why = "failed: " + b.Error
			}
			t.Row(b.Digest, size(b.Size), ago(rep.Now, b.LastUsed), why, b.Reason)
		}
		if err := t.Flush(); err != nil {
			return err
		}
		out.WriteString("\n")
	}
	if rep.DryRun {
		fmt.Fprintf(&out, "Dry run on %s %s: would free %s in %s; %s in use would stay. Nothing was removed.\n",
			rep.Role, addr, size(rep.FreedBytes), cmdutil.Plural(len(rep.Removed), "blob"), cmdutil.Plural(len(rep.Kept), "blob"))
	} else {
		fmt.Fprintf(&out, "Freed %s in %s on %s %s; %s kept; %s of blobs left.\n",
			size(rep.FreedBytes), cmdutil.Plural(len(rep.Removed), "blob"), rep.Role, addr,
			cmdutil.Plural(len(rep.Kept), "blob"), size(rep.UsedBytes))
	}
	if rep.Note != "" {
		fmt.Fprintf(&out, "Note: %s\n", rep.Note)
	}
	_, err := io.WriteString(w, out.String())
	return err
}
