package bench

import (
	"context"
	"fmt"
	"strconv"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/bench"
)

// SwarmClientOptions are the inputs of the hidden `krakenctl bench swarm-client`.
type SwarmClientOptions struct {
	Config bench.SwarmClientConfig
}

// NewCmdSwarmClient returns `krakenctl bench swarm-client`, one client process of `bench swarm
// --processes`, which starts it: hidden, since nobody else has a reason to. runF replaces the
// run function in tests.
func NewCmdSwarmClient(f *cmdutil.Factory, runF func(context.Context, *SwarmClientOptions) error) *cobra.Command {
	opts := &SwarmClientOptions{}
	var d, crc string
	cmd := &cobra.Command{
		Use:   "swarm-client --agent ADDR --digest DIGEST --size BYTES [--crc32c HEX]",
		Short: "One client process of bench swarm --processes",
		Long: `Connect to the agent at --agent, print "ready" on stdout and wait until stdin yields a byte or
ends; then read the blob from the agent's blob API, check its length and, with --crc32c, its
CRC-32C, and print the times of the release, the first and the last byte as one JSON line.
bench swarm --processes starts one per agent and releases them all at once.`,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := &opts.Config
			if c.Agent == "" {
				return cmdutil.FlagErrorf("--agent is required")
			}
			dg, err := digest.Parse(d)
			if err != nil {
				return cmdutil.FlagErrorf("invalid --digest %q: %v", d, err)
			}
			c.Digest = dg
			if c.Size < 1 {
				return cmdutil.FlagErrorf("invalid --size %d: want at least 1 byte", c.Size)
			}
			if crc != "" {
				v, err := strconv.ParseUint(crc, 16, 32)
				if err != nil {
					return cmdutil.FlagErrorf("invalid --crc32c %q: want 8 hex digits", crc)
				}
				c.Verify, c.CRC32C = true, uint32(v)
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			if err := bench.SwarmClient(cmd.Context(), opts.Config, f.IOStreams.In, f.IOStreams.Out); err != nil {
				return fmt.Errorf("bench swarm-client: %w", err)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Config.Agent, "agent", "", "the agent's blob API address (host:port)")
	fl.StringVar(&d, "digest", "", "the blob's digest")
	fl.Int64Var(&opts.Config.Size, "size", 0, "the blob's size in bytes")
	fl.StringVar(&crc, "crc32c", "", "the blob's CRC-32C (Castagnoli) in hex: every byte read is checked against it")
	return cmd
}
