package ring

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
)

// maxErrorWidth is how much of a member's last error the table shows; -o json has all of it.
const maxErrorWidth = 60

// StatusOptions are the inputs of `krakenctl ring status`.
type StatusOptions struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	Env        endpoints.Env
	// Now is the clock used to show how long ago members were checked.
	Now func() time.Time

	Endpoints endpoints.Flags
	Digest    digest.Digest
	Output    string
}

// NewCmdStatus returns `krakenctl ring status`. runF replaces the run function in tests.
func NewCmdStatus(f *cmdutil.Factory, runF func(context.Context, *StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: f.IOStreams, HTTPClient: f.HTTPClient, Env: os.Getenv, Now: time.Now}
	var digestArg string
	cmd := &cobra.Command{
		Use:   "status [--digest DIGEST]",
		Short: "Show the ring's members, their health and a digest's owners",
		Long: `Show the origin hash ring as the first reachable origin sees it: every member, whether it
is healthy, its consecutive failed health checks, when it was last checked and the last error.

With --digest, also show the digest's owners (the healthy origins that serve it now, in order),
its nominal locations on the ring, and whether the answering origin holds it in its store.`,
		Example: `  krakenctl ring status
  krakenctl ring status --digest sha256:4a5c...e1 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if digestArg != "" {
				d, err := cmdutil.ParseDigest(digestArg)
				if err != nil {
					return cmdutil.FlagErrorf("invalid --digest: %w", err)
				}
				opts.Digest = d
			}
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return statusRun(cmd.Context(), opts)
		},
	}
	endpoints.AddFlags(cmd, &opts.Endpoints)
	cmd.Flags().StringVar(&digestArg, "digest", "", "also show the owners of this digest")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func statusRun(ctx context.Context, opts *StatusOptions) error {
	origins, err := opts.Endpoints.Resolve(opts.Env)
	if err != nil {
		return err
	}
	st, err := client.NewCluster(origins.Addrs, opts.HTTPClient()).Ring(ctx, opts.Digest)
	if err != nil {
		return origins.Explain(fmt.Errorf("get ring status: %w", err))
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, st)
	}
	return printStatus(opts, st)
}

func printStatus(opts *StatusOptions, st api.RingStatus) error {
	// Built whole, then written once, so a failed write to stdout is one error to return.
	var out strings.Builder
	now := opts.Now()
	t := cmdutil.NewTable(&out, "addr", "healthy", "failures", "last check", "last error")
	healthy := 0
	for _, m := range st.Members {
		if m.Healthy {
			healthy++
		}
		addr := m.Addr
		if addr == st.Self {
			addr += " (answered)"
		}
		t.Row(addr, yesNo(m.Healthy), m.ConsecutiveFailures, ago(now, m.LastCheck), cmdutil.OrDash(cmdutil.Truncate(m.LastError, maxErrorWidth)))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&out, "\n%d of %d members healthy; each blob is held by %d of them.\n", healthy, len(st.Members), min(st.Replicas, len(st.Members)))
	if st.Digest != "" {
		fmt.Fprintf(&out, "\nDigest:     %s\n", st.Digest)
		fmt.Fprintf(&out, "Owners:     %s\n", list(st.Owners))
		fmt.Fprintf(&out, "Locations:  %s\n", list(st.Locations))
		if st.Local != nil {
			fmt.Fprintf(&out, "Held by %s: %s\n", st.Self, yesNo(*st.Local))
		}
	}
	_, err := io.WriteString(opts.IO.Out, out.String())
	return err
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func list(addrs []string) string {
	if len(addrs) == 0 {
		return "none"
	}
	return strings.Join(addrs, ", ")
}

// ago says how long before now t was, at a precision that suits a health check interval.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%.0fs ago", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds ago", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return t.Format(time.DateTime)
	}
}
