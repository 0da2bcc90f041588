package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/observe"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/tui"
)

// ErrUnknownSwarm means no host has a torrent of the digest and no tracker lists it (a blob
// stored on the origins and never pulled has no swarm yet).
var ErrUnknownSwarm = errors.New("no swarm of this blob: no agent or origin has a torrent of it and no tracker lists it")

// InspectOptions are the inputs of `krakenctl swarm inspect`.
type InspectOptions struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	Env        endpoints.Env

	Cluster  endpoints.ClusterFlags
	Digest   digest.Digest
	Discover int
	Timeout  time.Duration
	Output   string
}

// NewCmdInspect returns `krakenctl swarm inspect`. runF replaces the run function in tests.
func NewCmdInspect(f *cmdutil.Factory, runF func(context.Context, *InspectOptions) error) *cobra.Command {
	opts := &InspectOptions{IO: f.IOStreams, HTTPClient: f.HTTPClient, Env: os.Getenv}
	cmd := &cobra.Command{
		Use:   "inspect DIGEST",
		Short: "Show one blob's swarm: who holds what, who sent what, why bytes came from origins",
		Long: `Show one blob's swarm across the cluster. For every agent and origin in it: its state, the
pieces it holds, the bytes it received from peers and from origins, the bytes it sent, why it
asked origins for pieces (no_peers: the tracker handed out no peer or none could be reached;
peers_lack_piece: connected peers did not have it; peers_saturated: a peer had it but was busy
or slow; blacklisted: the peers that had it were banned; endgame: the last pieces were asked
of several senders), the peers it blacklisted and why, and when it started and finished. For
the swarm: the copies of the blob the origins sent, and the agents' speed against their cap.

The agents and origins of the endpoints file are read, and every other member the tracker
names through the API address it announced (up to --discover of them).`,
		Example: `  krakenctl swarm inspect sha256:4a5c...e1
  krakenctl swarm inspect sha256:4a5c...e1 -o json | jq '.peers[] | {addr, origin_reasons}'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := cmdutil.ParseDigest(args[0])
			if err != nil {
				return cmdutil.FlagErrorf("invalid digest: %w", err)
			}
			opts.Digest = d
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if opts.Discover < 0 {
				return cmdutil.FlagErrorf("invalid --discover %d: must not be negative", opts.Discover)
			}
			if opts.Timeout <= 0 {
				return cmdutil.FlagErrorf("invalid --timeout %s: must be positive", opts.Timeout)
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return inspectRun(cmd.Context(), opts)
		},
	}
	endpoints.AddClusterFlags(cmd, &opts.Cluster)
	cmd.Flags().IntVar(&opts.Discover, "discover", 1000, "read at most this many members beyond the endpoints file's, through the API address they announced")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 5*time.Second, "give up on a role that has not answered after this long")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func inspectRun(ctx context.Context, opts *InspectOptions) error {
	c, err := opts.Cluster.Resolve(opts.Env)
	if err != nil {
		return err
	}
	g, err := NewGatherer(c, opts.HTTPClient(), observe.Config{Discover: opts.Discover, Timeout: opts.Timeout})
	if err != nil {
		return err
	}
	s, errs, ok := g.Swarm(ctx, opts.Digest)
	for _, e := range errs {
		_, _ = fmt.Fprintf(opts.IO.ErrOut, "warning: could not read %s %s: %s\n", e.Role, e.Addr, e.Error)
	}
	if !ok {
		err := fmt.Errorf("%w: %s", ErrUnknownSwarm, opts.Digest)
		if len(errs) > 0 {
			err = fmt.Errorf("%w (and %s could not be read)", err, cmdutil.Plural(len(errs), "role"))
		}
		return c.Explain(err)
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, s)
	}
	return printInspect(opts, s)
}

func printInspect(opts *InspectOptions, s snapshot.Swarm) error {
	var out strings.Builder
	fmt.Fprintf(&out, "Digest:        %s\n", s.Digest)
	if s.Namespace != "" {
		fmt.Fprintf(&out, "Namespace:     %s\n", s.Namespace)
	}
	fmt.Fprintf(&out, "Size:          %s in %s\n", size(s.Size), cmdutil.Plural(s.Pieces, "piece"))
	fmt.Fprintf(&out, "Progress:      %.1f%%", 100*s.Progress)
	if s.Done {
		out.WriteString(" (every agent has it)")
	}
	out.WriteString("\n")
	fmt.Fprintf(&out, "Origin copies: %.2f (origins sent %.2f× the blob)\n", s.OriginCopies, s.OriginCopies)
	fmt.Fprintf(&out, "Origin share:  %.1f%% of what agents received\n", 100*s.OriginShare)
	if s.Rate > 0 {
		fmt.Fprintf(&out, "Efficiency:    %.2f of the %s/s cap\n", s.Efficiency, size(s.Rate))
	}
	if s.Seeders >= 0 {
		fmt.Fprintf(&out, "Tracker:       %d seeders, %d leechers\n", s.Seeders, s.Leechers)
	}
	out.WriteString("\n")
	t := cmdutil.NewTable(&out, "addr", "role", "state", "pieces", "from peers", "from origins", "sent", "origin reasons", "blacklisted", "started", "finished")
	for _, p := range s.Peers {
		t.Row(p.Addr, p.Role, p.State, fmt.Sprintf("%d/%d", p.Pieces, s.Pieces), size(p.BytesFromPeers), size(p.BytesFromOrigins),
			size(p.BytesSent), reasons(p.OriginReasons), blacklisted(p.Blacklisted), clock(p.Started), clock(p.Finished))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(opts.IO.Out, out.String())
	return err
}

// reasons is "no_peers=3 endgame=1", largest first.
func reasons(m map[snapshot.OriginReason]int64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b snapshot.OriginReason) int {
		if m[a] != m[b] {
			return int(m[b] - m[a])
		}
		return strings.Compare(string(a), string(b))
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// blacklisted is "127.0.0.1:7001 (bad piece), ..." for the table.
func blacklisted(bs []snapshot.Blacklisted) string {
	if len(bs) == 0 {
		return "-"
	}
	parts := make([]string, len(bs))
	for i, b := range bs {
		parts[i] = fmt.Sprintf("%s (%s)", b.Addr, b.Reason)
	}
	return strings.Join(parts, ", ")
}

func clock(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format("15:04:05.000")
}

// size is n bytes as top shows them.
func size(n int64) string { return tui.FormatBytes(float64(n)) }
