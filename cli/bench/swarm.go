package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/bench"
	"github.com/krakenctl/krakenctl/server/config"
)

// SwarmOptions are the inputs of `krakenctl bench swarm`.
type SwarmOptions struct {
	IO     *iostreams.IOStreams
	Logger func() *slog.Logger

	Config bench.SwarmConfig
	// Verbose shows the servers' warnings and errors on stderr.
	Verbose bool
	// CPUProfile, when set, is where a CPU profile of the whole run is written (go tool pprof).
	CPUProfile string
	Output     string
}

// NewCmdSwarm returns `krakenctl bench swarm`. runF replaces the run function in tests.
func NewCmdSwarm(f *cmdutil.Factory, runF func(context.Context, *SwarmOptions) error) *cobra.Command {
	opts := &SwarmOptions{IO: f.IOStreams, Logger: f.Logger}
	size, rate := byteFlag(bench.DefaultSwarmSize), cmdutil.RateFlag(bench.DefaultSwarmRate)
	var verify, baseline bool
	cmd := &cobra.Command{
		Use:   "swarm [--agents N] [--size SIZE] [--rate RATE]",
		Short: "Measure the P2P swarm: N agents pulling one blob at once",
		Long: `Start a tracker, an origin and --agents agents in this process, on 127.0.0.1, each with its own
store in a fresh directory under --dir. The origin's swarm egress is capped at --rate, and so
are every agent's swarm egress and ingress (bytes per second). A pseudo-random blob of --size
bytes is uploaded to the origin, which stores it with its metainfo, before any clock starts.

Then one client per agent is released at the same moment; each GETs the blob from its agent's
blob API (/namespace/bench/blobs/DIGEST) and its time is taken at the last byte it read. The
ideal time is size/rate; efficiency is ideal/time (1 is the full rate from the first moment,
1/agents what the origin alone could give everyone). Reported: every agent's time, the
p50/p90/p99/max times (nearest rank), efficiency at p50 and p99, the origin's egress in copies
of the blob, the process's peak RSS (tracker, origin, agents and clients all live in this one
process) and its CPU time.

Baseline: before the swarm, one more agent pulls a second blob of the same size alone, under
the same limits; the swarm's times are also given relative to it, which is fairer on a shared
machine than absolute times (--baseline=false skips it). --no-p2p gives each agent a tracker
of its own that knows only the origin, so agents never talk to each other.

Every client checks the length of what it got and, with --verify (the default), a CRC-32C of
every byte against the generated blob's (the agents verify SHA-256 themselves; a third
SHA-256 would compete with them for this machine's CPUs). Any failure fails the benchmark. All stores share one filesystem and page cache: --dir /dev/shm
takes the disk out of the measurement. The run refuses to start when the filesystem has less
free space than every copy it stores ((agents+2)*size with the baseline) plus 10%. Progress is
drawn on stderr when it is a terminal. The numbers describe this machine under its load.

--processes runs the same measurement the way a cluster runs, one process per host: the
origin, the tracker and every agent are each a 'krakenctl serve' process (of this executable,
or --binary) with a config of its own in the run's directory, the rate limits in it
(peer.egress_rate; egress_rate and ingress_rate), on 127.0.0.1 ports picked free, each ready
(/readyz) before the next starts; every client is a process too, and all are released at
once. Added to the result: the CPU time of every process from the release to the last
client's exit (each process's own account: /proc/PID/stat, and its rusage once reaped), per
delivered GiB, and split by role with each role's peak RSS. There is no baseline phase, and
--tls, --peer-plain, --no-p2p, --hold, --cpu-profile and --verbose are not available. Each
process's stderr goes to the run's logs/ directory (--keep keeps it): a process that exits,
or does not become ready, fails the run with its name, PID and the end of its log, and the
logs are kept. Every process is stopped (SIGTERM, then SIGKILL) however the run ends.`,
		Example: `  krakenctl bench swarm
  krakenctl bench swarm --agents 16 --size 512MiB --rate 25MiB -o json
  krakenctl bench swarm --agents 4 --size 64MiB --rate 10MiB/s --dir /dev/shm --baseline=false
  krakenctl bench swarm --processes --agents 8 --size 512MiB --rate 25MiB -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := &opts.Config
			c.Size, c.Rate = int64(size), int64(rate)
			c.SkipVerify, c.SkipBaseline = !verify, !baseline
			if c.Processes {
				// A separate-process run has no baseline phase: off unless asked for, and
				// then refused below.
				c.SkipBaseline = !cmd.Flags().Changed("baseline") || !baseline
				if err := processesConflict(opts); err != nil {
					return err
				}
			} else if c.Binary != "" {
				return cmdutil.FlagErrorf("--binary is only for --processes")
			}
			switch {
			case c.Agents < 1 || c.Agents > bench.MaxSwarmAgents:
				return cmdutil.FlagErrorf("invalid --agents %d: want 1 to %d", c.Agents, bench.MaxSwarmAgents)
			case c.Size < 1:
				return cmdutil.FlagErrorf("invalid --size %s: want more than 0 bytes", size.String())
			case c.Rate < 1:
				return cmdutil.FlagErrorf("invalid --rate %s: want more than 0 bytes per second", rate.String())
			case c.Timeout < 0:
				return cmdutil.FlagErrorf("invalid --timeout %s: want 0 (automatic) or more", c.Timeout)
			}
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return swarmRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&opts.Config.Agents, "agents", bench.DefaultSwarmAgents, fmt.Sprintf("agents pulling the blob at once (1 to %d)", bench.MaxSwarmAgents))
	fl.Var(&size, "size", "the blob's size, with a unit (512MiB, 1GiB, 100MB)")
	fl.Var(&rate, "rate", "bytes per second the origin may send and every agent may send and receive (25MiB, 25MiB/s)")
	fl.BoolVar(&verify, "verify", true, "check every byte each client receives (CRC-32C against the generated blob; agents verify SHA-256 themselves)")
	fl.BoolVar(&baseline, "baseline", true, "before the swarm, time one agent pulling a blob alone under the same limits")
	fl.BoolVar(&opts.Config.NoP2P, "no-p2p", false, "give each agent its own tracker, so agents pull from the origin only")
	fl.BoolVar(&opts.Config.TLS, "tls", false, "run every link over mutual TLS, the swarm's included, with certificates from a CA made for the run")
	fl.BoolVar(&opts.Config.PeerPlain, "peer-plain", false, "with --tls, keep the swarm's connections plain TCP (peer_plain), so the swarm's share of TLS's cost shows")
	fl.StringVar(&opts.Config.Dir, "dir", "", "make the stores' directory under `DIR` (default: the system's temporary directory)")
	fl.StringVar(&opts.Config.EndpointsFile, "endpoints-file", "", "write the cluster's endpoints to `FILE` while it runs, so that top and swarm inspect (with --endpoints-file) can watch it")
	fl.DurationVar(&opts.Config.Hold, "hold", 0, "keep the cluster up this long after the result is printed (Ctrl-C ends it sooner), to inspect it with --endpoints-file")
	fl.BoolVar(&opts.Config.Keep, "keep", false, "keep the stores' directory instead of removing it at the end")
	fl.DurationVar(&opts.Config.Timeout, "timeout", 0, "give up when the swarm has not finished after this long (0: 2*agents*size/rate + 2m)")
	fl.BoolVar(&opts.Verbose, "verbose", false, "show the servers' warnings and errors on stderr")
	fl.BoolVar(&opts.Config.Processes, "processes", false, "run the origin, the tracker and every agent as `krakenctl serve` processes, and every client as a process, counting each one's CPU and peak RSS")
	fl.StringVar(&opts.Config.Binary, "binary", "", "with --processes, the krakenctl executable the processes run (default: this one)")
	fl.StringVar(&opts.CPUProfile, "cpu-profile", "", "write a CPU profile of the run (every server and client: one process) to `FILE`, for go tool pprof")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	_ = cmd.MarkFlagDirname("dir")
	_ = cmd.MarkFlagFilename("binary")
	return cmd
}

// processesConflict refuses, by name, the flags a separate-process run cannot honour.
func processesConflict(opts *SwarmOptions) error {
	c := opts.Config
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"--tls", c.TLS}, {"--peer-plain", c.PeerPlain}, {"--no-p2p", c.NoP2P}, {"--hold", c.Hold > 0},
		{"--cpu-profile", opts.CPUProfile != ""}, {"--baseline", !c.SkipBaseline},
	} {
		if f.set {
			return cmdutil.FlagErrorf("%s is not available with --processes", f.name)
		}
	}
	if opts.Verbose {
		return cmdutil.FlagErrorf("--verbose is not available with --processes: every process's log is in the run's logs/ directory (--keep keeps it)")
	}
	return nil
}

func swarmRun(ctx context.Context, opts *SwarmOptions) (err error) {
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
	p := newSwarmProgress(opts.IO)
	// The result is printed as soon as it is known: with --hold the cluster then stays up to
	// be inspected, and the result is what the inspection is checked against.
	var printErr error
	printed := false
	show := func(res bench.SwarmResult) {
		p.finish()
		printed = true
		if opts.Output == cmdutil.OutputJSON {
			printErr = cmdutil.PrintJSON(opts.IO.Out, res)
			return
		}
		printErr = printSwarm(opts.IO.Out, res)
		if printErr == nil && opts.Config.Hold > 0 {
			_, _ = fmt.Fprintf(opts.IO.ErrOut, "holding the cluster for %s (Ctrl-C ends it)\n", opts.Config.Hold) // a note; the result is out
		}
	}
	_, err = bench.Swarm(ctx, opts.Config, bench.SwarmDeps{Logger: log, Result: show, Progress: func(pr bench.SwarmProgress) { p.update(pr.Phase, pr.Done, pr.Total) }})
	if !printed {
		p.finish()
	}
	if err != nil {
		return fmt.Errorf("bench swarm: %w", err)
	}
	return printErr
}

func printSwarm(w io.Writer, r bench.SwarmResult) error {
	t := cmdutil.NewTable(w, "agent", "time", "first byte", "efficiency", "from origin", "from peers", "sent to peers", "wasted")
	for _, a := range r.PerAgent {
		t.Row(a.Agent, seconds(a.TimeS), seconds(a.FirstByteS), fmt.Sprintf("%.3f", a.Efficiency),
			bytesCell(a.BytesInOrigin), bytesCell(a.BytesIn-a.BytesInOrigin), bytesCell(a.BytesOut), bytesCell(a.WastedBytes))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	t = cmdutil.NewTable(w, "measure", "result")
	t.Row("time p50 / p90 / p99 / max", fmt.Sprintf("%.2f / %.2f / %.2f / %.2f s", r.P50S, r.P90S, r.P99S, r.MaxS))
	t.Row("efficiency p50 / p99", fmt.Sprintf("%.3f / %.3f (ideal %s: %s at %s/s)", r.EfficiencyP50, r.EfficiencyP99,
		seconds(r.IdealS), bytesCell(r.SizeBytes), bytesCell(r.RateBytesPerS)))
	t.Row("p50: first byte / every piece held / tail", fmt.Sprintf("%s / %s / %s (the tail: from the agent holding every piece to the client's last byte)",
		seconds(r.FirstByteP50S), seconds(r.DownloadedP50S), seconds(r.TailP50S)))
	if r.BaselineS != nil {
		t.Row("baseline: one agent alone", fmt.Sprintf("%s (efficiency %.3f)", seconds(*r.BaselineS), *r.BaselineEfficiency))
		t.Row("p50 / baseline, p99 / baseline", fmt.Sprintf("%.3f, %.3f", *r.RatioP50, *r.RatioP99))
	}
	t.Row("origin egress", fmt.Sprintf("%.3f copies (%s)", r.OriginCopies, bytesCell(r.OriginBytesOut)))
	if r.Roles != nil {
		rl := r.Roles
		t.Row("CPU, every process", fmt.Sprintf("%.1f s (%.2f cores), %.2f s per delivered GiB (from the release to the last client's exit)",
			r.CPUSeconds, r.CPUCores, r.CPUSecondsPerGiB))
		t.Row("CPU by role", fmt.Sprintf("origin %.1f s, tracker %.1f s, agents %.1f s, clients %.1f s",
			rl.Origin.CPUS, rl.Tracker.CPUS, rl.Agents.CPUS, rl.Clients.CPUS))
		t.Row("peak RSS per process", fmt.Sprintf("origin %s, tracker %s, agents %s, clients %s",
			rssCell(rl.Origin.PeakRSSBytes, ""), rssCell(rl.Tracker.PeakRSSBytes, ""), rssCell(rl.Agents.PeakRSSBytes, "up to "), rssCell(rl.Clients.PeakRSSBytes, "up to ")))
	} else {
		rss := "unknown here"
		if r.PeakRSSBytes > 0 {
			rss = bytesCell(r.PeakRSSBytes)
			if r.PeakRSSSinceStart {
				rss += " (since the process started)"
			}
		}
		t.Row("peak RSS, whole process", rss)
		t.Row("Go heap peak", bytesCell(r.GoHeapPeakBytes))
		if r.CPUS > 0 {
			t.Row("CPU, whole process", fmt.Sprintf("%.1f s (%.2f cores), %.2f s per delivered GiB", r.CPUS, r.CPUCores, r.CPUSPerGiB))
		}
	}
	if err := t.Flush(); err != nil {
		return err
	}
	trackers := "1 tracker"
	if r.NoP2P {
		trackers = "a tracker per agent (no P2P)"
	}
	check := "every client checked every byte it read (CRC-32C against the generated blob; agents check SHA-256)"
	if !r.Verified {
		check = "every client checked the length of what it read (not its digest: --verify=false)"
	}
	links := "plain TCP and HTTP"
	switch {
	case r.TLS && r.PeerPlain:
		links = "mutual TLS on every link but the swarm's (plain TCP)"
	case r.TLS:
		links = "mutual TLS on every link, the swarm's included"
	}
	where := "in this process"
	if r.Processes {
		where = "as processes of their own, with a client process per agent"
	}
	_, err := fmt.Fprintf(w, "\n%s, 1 origin and %s on 127.0.0.1 %s, %s; %s. %.1fs in all (seeding the origin %.1fs).\n",
		cmdutil.Plural(r.Agents, "agent"), trackers, where, links, check, r.ElapsedS, r.SeedS)
	if err == nil && r.Dir != "" {
		_, err = fmt.Fprintf(w, "Stores kept in %s.\n", r.Dir)
	}
	return err
}

func seconds(v float64) string { return fmt.Sprintf("%.2f s", v) }

// rssCell is a peak RSS after prefix, or "unknown" where it could not be read (0).
func rssCell(n int64, prefix string) string {
	if n <= 0 {
		return "unknown"
	}
	return prefix + bytesCell(n)
}

// bytesCell formats n in the largest binary unit under it, with one decimal.
func bytesCell(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n), 0
	for v >= unit && u < 4 {
		v /= unit
		u++
	}
	return fmt.Sprintf("%.1f %s", v, []string{"B", "KiB", "MiB", "GiB", "TiB"}[u])
}

// byteFlag is a size flag that takes units ("512MiB", "1GB"), as config files do.
type byteFlag int64

func (b *byteFlag) String() string { return config.ByteSize(*b).String() }
func (b *byteFlag) Type() string   { return "size" }

func (b *byteFlag) Set(v string) error {
	n, err := config.ParseByteSize(v)
	if err != nil {
		return err
	}
	*b = byteFlag(n)
	return nil
}

// Interface guards
var (
	_ pflag.Value = (*byteFlag)(nil)
)

// newSwarmProgress shows the swarm benchmark's phases: bytes for the seed, baseline and swarm
// phases (for the swarm, what every client has received together), servers for the start.
func newSwarmProgress(ios *iostreams.IOStreams) *phaseProgress {
	return &phaseProgress{ios: ios, titles: swarmTitles, unit: func(phase string) ([]progressbar.Option, func(int64) string) {
		if phase == bench.PhaseStart {
			return nil, func(n int64) string { return fmt.Sprint(n) }
		}
		return []progressbar.Option{progressbar.OptionShowBytes(true), progressbar.OptionUseIECUnits(true)}, bytesCell
	}}
}

var swarmTitles = map[string]string{
	bench.PhaseStart:    "starting servers",
	bench.PhaseSeed:     "uploading to the origin",
	bench.PhaseBaseline: "baseline: one agent alone",
	bench.PhaseSwarm:    "swarm: every client",
}
