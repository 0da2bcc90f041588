package bench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/pki"
)

// Defaults and bounds of SwarmConfig: the issue's reference run, 16 agents pulling 512 MiB at
// 25 MiB/s each.
const (
	DefaultSwarmAgents = 16
	DefaultSwarmSize   = 512 << 20
	DefaultSwarmRate   = 25 << 20
	MaxSwarmAgents     = 256
)

// Phases of the swarm benchmark, in order, as SwarmProgress names them (PhaseStart too).
const (
	PhaseSeed     = "seed"
	PhaseBaseline = "baseline"
	PhaseSwarm    = "swarm"
)

// swarmNamespace is the namespace the benchmark's blobs are uploaded to and pulled from.
const swarmNamespace = "bench"

// spaceMargin is the fraction of free space the stores' blobs may use: the rest covers the
// stores' metadata and whatever else writes to the filesystem meanwhile.
const spaceMargin = 1.1

// maxTimeout bounds the automatic timeout (so that it cannot overflow).
const maxTimeout = 1000 * time.Hour

// ErrNoSpace is wrapped by Swarm when the state directory's filesystem has too little free
// space for every copy of the blob the run stores.
var ErrNoSpace = errors.New("not enough free space")

// SwarmConfig says what Swarm measures. Zero Agents, Size and Rate take the defaults above.
type SwarmConfig struct {
	// Agents is how many agents pull the blob at once, 1 to MaxSwarmAgents.
	Agents int
	// Size is the blob's length in bytes.
	Size int64
	// Rate caps, in bytes per second, the origin's swarm egress and every agent's swarm egress
	// and ingress (what clients read from their agent over HTTP is not capped).
	Rate int64
	// SkipVerify leaves out the clients' check of every byte they receive (a CRC-32C compared
	// with the generated blob's: the agents already check every piece and the whole blob's
	// SHA-256 before they release its last byte, so the clients need only catch a wrong or
	// missing byte, and a CRC does that for a tenth of the CPU a third SHA-256 would take on
	// the machine every agent shares).
	SkipVerify bool
	// SkipBaseline leaves out the baseline: one agent alone pulling a blob of the same size
	// from the origin under the same limits, timed before the swarm runs.
	SkipBaseline bool
	// NoP2P gives every agent a tracker of its own, which knows only the origin: agents then
	// pull from the origin alone and never from each other (the no-swarm reference).
	NoP2P bool
	// TLS runs every link over mutual TLS as a cluster with certificates does: the origin,
	// tracker and agents each present a certificate of their own from a CA made for the run,
	// the swarm's connections included, and the clients pull from the agents over TLS.
	TLS bool
	// PeerPlain, with TLS, keeps the swarm's connections in plain TCP (peer_plain): every other
	// link speaks TLS, so that TLS's cost on the swarm alone shows against a TLS run.
	PeerPlain bool
	// Dir is where a fresh directory for the stores is made; "" means the system's temporary
	// directory. The fresh directory is removed at the end unless Keep.
	Dir  string
	Keep bool
	// EndpointsFile, when set, is written with the cluster's addresses (and, with TLS, the
	// CA and the benchmark's client certificate) once every server is ready, so that
	// `krakenctl top --endpoints-file` can watch the run; it is removed at the end.
	EndpointsFile string
	// Hold keeps the cluster up this long after the run (or until ctx ends), with the result
	// already handed to SwarmDeps.Result, so that it can be inspected (`krakenctl swarm
	// inspect` with EndpointsFile) after every byte has moved.
	Hold time.Duration
	// Timeout bounds the swarm phase; zero means twice the time the origin would take to send
	// every agent a copy at Rate (2·Agents·Size/Rate), plus two minutes.
	Timeout time.Duration
	// Processes runs the origin, the tracker and every agent each as a `krakenctl serve`
	// process of its own, and every client as a `krakenctl bench swarm-client` process: the
	// layout of a cluster, where every host pays for a Go runtime, a GC and a scheduler of its
	// own (procs.go). It needs SkipBaseline, and runs neither TLS, NoP2P nor Hold.
	Processes bool
	// Binary is the krakenctl executable the processes run, with Processes; "" means this
	// process's own executable.
	Binary string
}

func (c *SwarmConfig) defaults() {
	if c.Agents == 0 {
		c.Agents = DefaultSwarmAgents
	}
	if c.Size == 0 {
		c.Size = DefaultSwarmSize
	}
	if c.Rate == 0 {
		c.Rate = DefaultSwarmRate
	}
	if c.Timeout == 0 && c.Rate > 0 {
		s := 2*float64(c.Agents)*float64(c.Size)/float64(c.Rate) + 120
		c.Timeout = time.Duration(min(s, maxTimeout.Seconds()) * float64(time.Second))
	}
}

func (c *SwarmConfig) validate() error {
	var errs []error
	if c.Agents < 1 || c.Agents > MaxSwarmAgents {
		errs = append(errs, fmt.Errorf("agents: want 1..%d, got %d", MaxSwarmAgents, c.Agents))
	}
	if c.Size < 1 {
		errs = append(errs, fmt.Errorf("size: want at least 1 byte, got %d", c.Size))
	}
	if c.Rate < 1 {
		errs = append(errs, fmt.Errorf("rate: want at least 1 byte/s, got %d", c.Rate))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: want 0 (automatic) or more, got %s", c.Timeout))
	}
	if c.PeerPlain && !c.TLS {
		errs = append(errs, errors.New("peer plain: only with tls (without it the swarm is plain anyway)"))
	}
	if c.Processes {
		// What a separate-process run cannot do yet, each said by name rather than ignored.
		if c.TLS {
			errs = append(errs, errors.New("processes: not with tls (every process would need certificate files of its own)"))
		}
		if c.NoP2P {
			errs = append(errs, errors.New("processes: not with no-p2p"))
		}
		if !c.SkipBaseline {
			errs = append(errs, errors.New("processes: not with the baseline (skip it)"))
		}
		if c.Hold > 0 {
			errs = append(errs, errors.New("processes: not with hold (the processes are stopped to read their peak RSS and CPU)"))
		}
	} else if c.Binary != "" {
		errs = append(errs, errors.New("binary: only with processes"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// SwarmDeps are what Swarm needs besides its configuration.
type SwarmDeps struct {
	// Logger receives the servers' logs; nil discards them.
	Logger *slog.Logger
	// Result, when set, is given the result as soon as it is known, before Hold.
	Result func(SwarmResult)
	// Progress, when set, is told how each phase advances: a few times a second while it runs,
	// and once with Done == Total when it ends. Calls come from one goroutine at a time.
	Progress func(SwarmProgress)

	// procStarted, when set, is told the name and PID of every process a separate-process
	// run starts (tests check that none outlives the run).
	procStarted func(name string, pid int)
	// procConfig, when set, may change the config of each server of a separate-process run
	// before it is written (tests make one fail).
	procConfig func(name string, cfg map[string]any)
	// procReadyTimeout, when set, replaces startTimeout as the time a process of a
	// separate-process run has to become ready (tests wait less).
	procReadyTimeout time.Duration
}

// SwarmProgress is a snapshot of one phase: servers started for PhaseStart, bytes for the
// others (uploaded to the origin, or received by the clients of every agent together).
type SwarmProgress struct {
	Phase string
	Done  int64
	Total int64
}

// SwarmAgent is what one agent's client saw, with the agent's own account of its torrent.
type SwarmAgent struct {
	// Agent numbers the agents from 1.
	Agent int `json:"agent"`
	// TimeS is the seconds from the common start to the last byte the client read;
	// FirstByteS to its first byte.
	TimeS      float64 `json:"time_s"`
	FirstByteS float64 `json:"first_byte_s"`
	// Efficiency is (Size/Rate)/TimeS.
	Efficiency float64 `json:"efficiency"`
	// The agent's own account of its torrent, in seconds from the common start (null when it
	// did not say): DownloadedS when it held every piece, CheckedS when the whole blob's digest
	// matched (which releases the last byte), CommittedS when the blob was in its store.
	// TimeS - DownloadedS is the tail the client waited after the last piece arrived.
	DownloadedS *float64 `json:"downloaded_s"`
	CheckedS    *float64 `json:"checked_s"`
	CommittedS  *float64 `json:"committed_s"`
	// BytesIn counts the piece bytes the agent received, BytesInOrigin the part from the
	// origin; BytesOut the piece bytes it sent to other agents; WastedBytes the bytes it
	// received but did not need (duplicates, cancelled requests).
	BytesIn       int64 `json:"bytes_in"`
	BytesInOrigin int64 `json:"bytes_in_origin"`
	BytesOut      int64 `json:"bytes_out"`
	WastedBytes   int64 `json:"wasted_bytes"`
}

// SwarmResult is what Swarm measured. Times are in seconds, from the moment every client was
// released at once to the last byte each read through its agent's blob API. Efficiency is the
// ideal time Size/Rate divided by the measured time: 1 means the agent pulled at the full
// rate from the first moment, 1/Agents is what the origin alone could give everyone.
type SwarmResult struct {
	// Digest is the blob the agents pulled.
	Digest        digest.Digest `json:"digest"`
	Agents        int           `json:"agents"`
	SizeBytes     int64         `json:"size_bytes"`
	RateBytesPerS int64         `json:"rate_bytes_per_s"`
	// Verified says every client hashed what it received (else only the length was checked).
	Verified bool `json:"verified"`
	// NoP2P says agents were kept from talking to each other.
	NoP2P bool `json:"no_p2p"`
	// TLS says every link ran over mutual TLS, and PeerPlain that the swarm's did not
	// (SwarmConfig.TLS, SwarmConfig.PeerPlain).
	TLS       bool `json:"tls"`
	PeerPlain bool `json:"peer_plain"`
	// IdealS is Size/Rate.
	IdealS float64 `json:"ideal_s"`

	// Percentiles of the agents' times (nearest rank: the smallest time at least p% of the
	// agents achieved), and the slowest.
	P50S float64 `json:"p50_s"`
	P90S float64 `json:"p90_s"`
	P99S float64 `json:"p99_s"`
	MaxS float64 `json:"max_s"`
	// EfficiencyP50 and EfficiencyP99 are IdealS/P50S and IdealS/P99S.
	EfficiencyP50 float64 `json:"efficiency_p50"`
	EfficiencyP99 float64 `json:"efficiency_p99"`
	// Medians over the agents of where a client's time went: FirstByteP50S to the first byte,
	// DownloadedP50S until the agent held every piece, TailP50S from then to the client's last
	// byte (0 where no agent said when it held every piece).
	FirstByteP50S  float64 `json:"first_byte_p50_s"`
	DownloadedP50S float64 `json:"downloaded_p50_s"`
	TailP50S       float64 `json:"tail_p50_s"`

	// OriginBytesOut is what the origin sent to the swarm for the blob; OriginCopies is that in
	// copies of the blob.
	OriginBytesOut int64   `json:"origin_bytes_out"`
	OriginCopies   float64 `json:"origin_copies"`

	// BaselineS is the time one agent alone took to pull a blob of the same size from the
	// origin under the same limits, measured in the same run just before the swarm (null when
	// skipped). BaselineEfficiency is IdealS/BaselineS; RatioP50 and RatioP99 are P50S and P99S
	// over BaselineS, the swarm's cost relative to what this machine does for one agent.
	BaselineS          *float64 `json:"baseline_s"`
	BaselineEfficiency *float64 `json:"baseline_efficiency"`
	RatioP50           *float64 `json:"ratio_p50"`
	RatioP99           *float64 `json:"ratio_p99"`

	// PeakRSSBytes is the benchmark process's peak resident set (VmHWM) during the swarm
	// phase: the tracker, the origin, every agent and every client, all in this one process.
	// It is reset just before the phase when the kernel allows it (PeakRSSSinceStart false),
	// else it covers the whole process (true). 0 where /proc/self/status does not exist.
	PeakRSSBytes      int64 `json:"peak_rss_bytes"`
	PeakRSSSinceStart bool  `json:"peak_rss_since_start"`
	// GoHeapPeakBytes is the largest Go heap (bytes in heap objects, live or not yet swept)
	// sampled every 100 ms during the swarm phase.
	GoHeapPeakBytes int64 `json:"go_heap_peak_bytes"`
	// CPUS is the process's user+system CPU time during the swarm phase (0 where unknown), and
	// CPUCores that divided by the phase's wall time.
	CPUS     float64 `json:"cpu_s"`
	CPUCores float64 `json:"cpu_cores"`
	// CPUSPerGiB is CPUS per GiB the agents delivered to their clients (Agents·Size): what the
	// whole cluster spent per GiB, which is what TLS, for one, adds to.
	CPUSPerGiB float64 `json:"cpu_s_per_gib"`

	// Processes says every server and client ran as a process of its own
	// (SwarmConfig.Processes). Then CPUSeconds is the CPU time every one of them used from the
	// common release to the last client's exit, each process's own account (utime+stime), and
	// CPUSecondsPerGiB that per GiB delivered; CPUS, CPUCores and CPUSPerGiB say the same, and
	// Roles splits it by role with each role's peak RSS. PeakRSSBytes and GoHeapPeakBytes, which
	// describe one process, stay 0.
	Processes        bool        `json:"processes,omitempty"`
	CPUSeconds       float64     `json:"cpu_seconds,omitempty"`
	CPUSecondsPerGiB float64     `json:"cpu_seconds_per_gib,omitempty"`
	Roles            *SwarmRoles `json:"roles,omitempty"`

	// PerAgent lists every agent in order.
	PerAgent []SwarmAgent `json:"per_agent"`

	// SeedS is the time taken to generate the blob(s) and upload them to the origin.
	SeedS float64 `json:"seed_s"`
	// ElapsedS is the whole run's wall time, from before the servers started to the end of the
	// last measurement.
	ElapsedS float64 `json:"elapsed_s"`
	// Dir is the kept state directory (only with Keep).
	Dir string `json:"dir,omitempty"`
}

// Swarm runs the swarm benchmark. In this process and on 127.0.0.1 it starts a tracker, an
// origin whose swarm egress is capped at cfg.Rate, and cfg.Agents agents capped at cfg.Rate of
// egress and ingress, each with its own store under a fresh directory. It uploads a
// pseudo-random blob of cfg.Size bytes to the origin (through its blob API; the origin stores it
// with its metainfo) and, unless cfg.SkipBaseline, times one more agent pulling a second such
// blob alone. Then it releases one client per agent at the same moment; each GETs the blob
// from its agent's blob API, and its time is taken when it has read the last byte. Every
// client's bytes are counted, and checked unless cfg.SkipVerify: any wrong byte, short read or
// failed request fails the benchmark, so numbers are only reported for correct runs.
//
// Swarm returns ctx's error when ctx ends first, an error wrapping ErrInvalidConfig for a
// configuration it cannot run, and one wrapping ErrNoSpace when the directory's filesystem
// lacks room for the stores. It stops every server before it returns.
func Swarm(ctx context.Context, cfg SwarmConfig, deps SwarmDeps) (_ SwarmResult, err error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return SwarmResult{}, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Processes {
		return swarmProcesses(ctx, cfg, deps)
	}
	began := time.Now()

	parent := cfg.Dir
	if parent == "" {
		parent = os.TempDir()
	}
	copies := int64(cfg.Agents) + 1 // every agent and the origin
	if !cfg.SkipBaseline {
		copies++ // the origin's baseline blob (the baseline agent's copy is gone by the swarm phase)
	}
	if err := checkSpace(parent, copies, cfg.Size); err != nil {
		return SwarmResult{}, err
	}
	dir, err := os.MkdirTemp(parent, "krakenctl-bench-swarm-*")
	if err != nil {
		return SwarmResult{}, fmt.Errorf("make state directory: %w", err)
	}
	if !cfg.Keep {
		defer func() {
			if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
				err = fmt.Errorf("remove state directory: %w", rerr)
			}
		}()
	}

	extra := 0
	if !cfg.SkipBaseline {
		extra = 1
	}
	reportSwarm(deps, SwarmProgress{Phase: PhaseStart, Total: int64(cfg.Agents + extra + 2)})
	sw, err := startSwarm(ctx, cfg, dir, deps.Logger)
	if err != nil {
		return SwarmResult{}, err
	}
	defer func() {
		if cerr := sw.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	reportSwarm(deps, SwarmProgress{Phase: PhaseStart, Done: int64(cfg.Agents + extra + 2), Total: int64(cfg.Agents + extra + 2)})

	res := SwarmResult{
		Agents: cfg.Agents, SizeBytes: cfg.Size, RateBytesPerS: cfg.Rate, Verified: !cfg.SkipVerify,
		NoP2P: cfg.NoP2P, TLS: cfg.TLS, PeerPlain: cfg.PeerPlain, IdealS: float64(cfg.Size) / float64(cfg.Rate), PerAgent: []SwarmAgent{},
	}

	// Seed the origin before any clock starts.
	seeded := time.Now()
	blobs := []uint64{0}
	if !cfg.SkipBaseline {
		blobs = append(blobs, 1)
	}
	digests := make([]digest.Digest, len(blobs))
	crcs := make([]uint32, len(blobs))
	total := cfg.Size * int64(len(blobs))
	var uploaded atomic.Int64
	stopTick := ticker(func() { reportSwarm(deps, SwarmProgress{Phase: PhaseSeed, Done: uploaded.Load(), Total: total}) })
	for i, id := range blobs {
		digests[i], crcs[i], err = seedBlob(ctx, sw.originClient(), id, cfg.Size, &uploaded)
		if err != nil {
			stopTick()
			return SwarmResult{}, err
		}
	}
	stopTick()
	reportSwarm(deps, SwarmProgress{Phase: PhaseSeed, Done: total, Total: total})
	res.SeedS = time.Since(seeded).Seconds()

	if !cfg.SkipBaseline {
		var got atomic.Int64
		stopTick := ticker(func() { reportSwarm(deps, SwarmProgress{Phase: PhaseBaseline, Done: got.Load(), Total: cfg.Size}) })
		pulls, err := pullAll(ctx, sw.http, []benchAgent{*sw.baseline}, digests[1], crcs[1], cfg.Size, !cfg.SkipVerify, cfg.Timeout, &got)
		stopTick()
		if err != nil {
			return SwarmResult{}, fmt.Errorf("baseline: %w", err)
		}
		reportSwarm(deps, SwarmProgress{Phase: PhaseBaseline, Done: cfg.Size, Total: cfg.Size})
		// The baseline agent holds the other blob: stop it so it takes no CPU, no memory and
		// no disk from the swarm that follows.
		if err := sw.stopBaseline(); err != nil {
			return SwarmResult{}, err
		}
		t1 := pulls[0].last.Seconds()
		eff := res.IdealS / t1
		res.BaselineS, res.BaselineEfficiency = &t1, &eff
	}

	// The swarm.
	outBefore := originBytesOut(sw.c.Origin(0), digests[0])
	res.PeakRSSSinceStart = !resetPeakRSS()
	cpuBefore := processCPU()
	var got atomic.Int64
	var heapPeak int64
	swarmTotal := cfg.Size * int64(cfg.Agents)
	stopTick = ticker(func() {
		heapPeak = max(heapPeak, goHeapBytes())
		reportSwarm(deps, SwarmProgress{Phase: PhaseSwarm, Done: got.Load(), Total: swarmTotal})
	})
	phaseStart := time.Now()
	pulls, err := pullAll(ctx, sw.http, sw.agents, digests[0], crcs[0], cfg.Size, !cfg.SkipVerify, cfg.Timeout, &got)
	wall := time.Since(phaseStart)
	released := phaseStart
	if len(pulls) > 0 {
		released = pulls[0].start
	}
	stopTick()
	if err != nil {
		return SwarmResult{}, err
	}
	reportSwarm(deps, SwarmProgress{Phase: PhaseSwarm, Done: swarmTotal, Total: swarmTotal})
	cpu := processCPU() - cpuBefore
	res.PeakRSSBytes = peakRSS()
	res.GoHeapPeakBytes = max(heapPeak, goHeapBytes())
	if cpu > 0 {
		res.CPUS = cpu.Seconds()
		res.CPUCores = cpu.Seconds() / wall.Seconds()
		res.CPUSPerGiB = cpu.Seconds() / (float64(cfg.Agents) * float64(cfg.Size) / (1 << 30))
	}
	res.OriginBytesOut = originBytesOut(sw.c.Origin(0), digests[0]) - outBefore
	res.OriginCopies = float64(res.OriginBytesOut) / float64(cfg.Size)

	if err := summarize(ctx, sw.http, &res, sw.agents, digests[0], pulls, released); err != nil {
		return SwarmResult{}, err
	}
	if cfg.Keep {
		res.Dir = dir
	}
	res.Digest = digests[0]
	res.ElapsedS = time.Since(began).Seconds()
	if deps.Result != nil {
		deps.Result(res)
	}
	if cfg.Hold > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(cfg.Hold):
		}
	}
	return res, nil
}

// summarize fills res's per-agent accounts, percentiles and medians from the clients' pulls,
// timed from released (the moment every client was let go), and from each agent's own account
// of its torrent of d, read through its API.
func summarize(ctx context.Context, hc *http.Client, res *SwarmResult, agents []benchAgent, d digest.Digest, pulls []pull, released time.Time) error {
	times := make([]float64, len(pulls))
	var firsts, dls, tails []float64
	since := func(t *time.Time) *float64 {
		if t == nil {
			return nil
		}
		s := t.Sub(released).Seconds()
		return &s
	}
	for i, p := range pulls {
		a := SwarmAgent{Agent: i + 1, TimeS: p.last.Seconds(), FirstByteS: p.first.Seconds()}
		a.Efficiency = res.IdealS / a.TimeS
		st, err := client.NewAgent(agents[i].addr, hc).Torrents(ctx, d)
		if err != nil {
			return fmt.Errorf("read agent %d's torrent: %w", i+1, err)
		}
		for _, t := range st {
			if t.Digest == d {
				a.BytesIn, a.BytesInOrigin, a.BytesOut, a.WastedBytes = t.BytesIn, t.BytesInOrigin, t.BytesOut, t.Wasted
				a.DownloadedS, a.CheckedS, a.CommittedS = since(t.Downloaded), since(t.Checked), since(t.Finished)
			}
		}
		firsts = append(firsts, a.FirstByteS)
		if a.DownloadedS != nil {
			dls = append(dls, *a.DownloadedS)
			tails = append(tails, a.TimeS-*a.DownloadedS)
		}
		res.PerAgent = append(res.PerAgent, a)
		times[i] = a.TimeS
	}
	slices.Sort(times)
	res.P50S, res.P90S = percentile(times, 50), percentile(times, 90)
	res.P99S, res.MaxS = percentile(times, 99), times[len(times)-1]
	res.EfficiencyP50, res.EfficiencyP99 = res.IdealS/res.P50S, res.IdealS/res.P99S
	for _, v := range [][]float64{firsts, dls, tails} {
		slices.Sort(v)
	}
	res.FirstByteP50S, res.DownloadedP50S, res.TailP50S = percentile(firsts, 50), percentile(dls, 50), percentile(tails, 50)
	if res.BaselineS != nil {
		r50, r99 := res.P50S / *res.BaselineS, res.P99S / *res.BaselineS
		res.RatioP50, res.RatioP99 = &r50, &r99
	}
	return nil
}

// percentile returns the nearest-rank p-th percentile of sorted: the smallest value that at
// least p% of the values are at or under. It returns 0 for an empty slice.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p / 100 * float64(len(sorted))))
	k = min(max(k, 1), len(sorted))
	return sorted[k-1]
}

// checkSpace fails with ErrNoSpace when dir's filesystem cannot hold copies blobs of size bytes
// with spaceMargin to spare. Where free space cannot be read it lets the run go ahead.
func checkSpace(dir string, copies, size int64) error {
	free, ok, err := freeSpace(dir)
	if err != nil {
		return fmt.Errorf("check free space in %s: %w", dir, err)
	}
	if !ok {
		return nil
	}
	need := uint64(float64(copies) * float64(size) * spaceMargin)
	if free < need {
		return fmt.Errorf("%w in %s: the run stores %d copies of %s (every agent, the origin, the baseline blob), %s with a 10%% margin, and the filesystem has %s free; use a smaller --size or fewer --agents, or --dir elsewhere",
			ErrNoSpace, dir, copies, config.ByteSize(size), humanBytes(need), humanBytes(free))
	}
	return nil
}

// humanBytes formats n with one decimal in the largest binary unit under it.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	v, u := float64(n), 0
	for v >= unit && u < 4 {
		v /= unit
		u++
	}
	return fmt.Sprintf("%.1f %s", v, []string{"B", "KiB", "MiB", "GiB", "TiB"}[u])
}

// blobReader streams the pseudo-random content of blob id: a ChaCha8 stream with a fixed seed,
// so every run pulls the same bytes and generating them costs less than hashing them.
func blobReader(id uint64, size int64) io.Reader {
	var seed [32]byte
	copy(seed[:], "krakenctl bench swarm")
	seed[31] = byte(id)
	return io.LimitReader(rand.NewChaCha8(seed), size)
}

// seedBlob uploads blob id to the origin and returns its digest and CRC-32C once the origin
// holds it and can serve its metainfo. uploaded counts the bytes sent.
func seedBlob(ctx context.Context, o *client.Origin, id uint64, size int64, uploaded *atomic.Int64) (digest.Digest, uint32, error) {
	// Hash first (a cheap second pass over the stream beats holding the blob in memory).
	h, c := sha256.New(), crc32.New(castagnoli)
	if _, err := io.Copy(io.MultiWriter(h, c), blobReader(id, size)); err != nil {
		return "", 0, fmt.Errorf("generate blob: %w", err)
	}
	d := digest.NewDigest(digest.SHA256, h)
	if err := o.Upload(ctx, swarmNamespace, d, &countingReader{r: blobReader(id, size), n: uploaded}, size); err != nil {
		return "", 0, fmt.Errorf("upload blob to the origin: %w", err)
	}
	got, err := o.StatLocal(ctx, swarmNamespace, d)
	if err != nil {
		return "", 0, fmt.Errorf("check blob on the origin: %w", err)
	}
	if got != size {
		return "", 0, fmt.Errorf("check blob on the origin: %d bytes stored, want %d", got, size)
	}
	if _, err := o.Metainfo(ctx, swarmNamespace, d); err != nil {
		return "", 0, fmt.Errorf("check blob's metainfo on the origin: %w", err)
	}
	return d, c.Sum32(), nil
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// pull is one client's timing, from the common start (the moment every client was released).
type pull struct {
	start       time.Time
	first, last time.Duration
}

// castagnoli is the CRC-32C table: the CPU computes it with one instruction per 8 bytes.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errWrongBytes means a client read bytes other than the blob's.
var errWrongBytes = errors.New("wrong bytes")

// pullAll releases one client per agent at the same moment; each reads blob d from its agent's
// blob API to the end, counting into got, and checks the length and (when verify) the digest.
// The first failure cancels the others. It fails when timeout passes first.
func pullAll(ctx context.Context, hc *http.Client, agents []benchAgent, d digest.Digest, crc uint32, size int64, verify bool,
	timeout time.Duration, got *atomic.Int64) ([]pull, error) {
	parent := ctx
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("%w after %s", errTimeout, timeout))
	defer cancel()
	// Connect before the clock starts: each client's request then goes out on a warm
	// connection, as a long-lived client's would.
	for _, a := range agents {
		if err := get(ctx, hc, "http://"+a.addr+"/health"); err != nil {
			return nil, fmt.Errorf("agent %d: %w", a.n, err)
		}
	}
	pulls := make([]pull, len(agents))
	errs := make([]error, len(agents))
	var finished atomic.Int64
	var start time.Time // written before release is closed, read after
	release := make(chan struct{})
	var ready, wg sync.WaitGroup
	for i, a := range agents {
		ready.Add(1)
		wg.Go(func() {
			c := client.NewAgent(a.addr, hc)
			w := &clientWriter{got: got}
			if verify {
				w.h = crc32.New(castagnoli)
			}
			ready.Done()
			<-release
			err := func() error {
				body, n, err := c.Open(ctx, swarmNamespace, d, 0)
				if err != nil {
					return err
				}
				defer func() { _ = body.Close() }() // read side
				if n != size {
					return fmt.Errorf("agent announced %d bytes, want %d", n, size)
				}
				w.start = start
				if _, err := io.Copy(w, body); err != nil {
					return fmt.Errorf("read blob: %w", err)
				}
				pulls[i].last = time.Since(start)
				pulls[i].first = w.first
				pulls[i].start = start
				if w.n != size {
					return fmt.Errorf("read %d bytes, want %d", w.n, size)
				}
				if verify {
					if sum := w.h.Sum32(); sum != crc {
						return fmt.Errorf("%w: CRC-32C of the bytes read is %08x, the blob's is %08x", errWrongBytes, sum, crc)
					}
				}
				return nil
			}()
			if err != nil {
				errs[i] = fmt.Errorf("agent %d: pull %s: %w%s", a.n, d, err, downloadError(hc, a.addr, d))
				cancel()
				return
			}
			finished.Add(1)
		})
	}
	ready.Wait()
	start = time.Now()
	close(release)
	wg.Wait()
	if err := parent.Err(); err != nil {
		return nil, err
	}
	if err := errors.Join(errs...); err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errTimeout) {
			return nil, fmt.Errorf("%d of %d pulls finished, having read %s of %s: %w", finished.Load(), len(agents),
				humanBytes(uint64(got.Load())), humanBytes(uint64(size)*uint64(len(agents))), cause)
		}
		return nil, firstError(errs)
	}
	return pulls, nil
}

// downloadError returns ", the agent's download failed: ..." when the agent at addr reports
// that its download of d failed, else "": it says why a client's stream broke off.
func downloadError(hc *http.Client, addr string, d digest.Digest) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := client.NewAgent(addr, hc).Torrents(ctx, d)
	if err != nil {
		return ""
	}
	for _, t := range st {
		if t.Digest == d && t.Error != "" {
			return "; the agent's download failed: " + t.Error
		}
	}
	return ""
}

// errTimeout is the cause of a pull that outlived its timeout.
var errTimeout = errors.New("timed out: raise the timeout if the swarm is merely slow")

// firstError returns the first error that is not a cancellation caused by another failure,
// else the first error.
func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// clientWriter takes what a client reads: it counts, hashes when h is set, and notes when the
// first byte arrived.
type clientWriter struct {
	start time.Time
	first time.Duration
	n     int64
	h     hash.Hash32
	got   *atomic.Int64
}

func (w *clientWriter) Write(p []byte) (int, error) {
	if w.n == 0 && len(p) > 0 {
		w.first = time.Since(w.start)
	}
	if w.h != nil {
		w.h.Write(p)
	}
	w.n += int64(len(p))
	w.got.Add(int64(len(p)))
	return len(p), nil
}

// get makes a GET that must answer 200, and reads the body so the connection is kept.
func get(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }() // read side
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// originBytesOut returns what the origin's swarm sent of blob d so far.
func originBytesOut(o *origin.Server, d digest.Digest) int64 {
	for _, t := range o.Swarm().Stats() {
		if t.Digest == d {
			return t.BytesOut
		}
	}
	return 0
}

// ticker calls fn every 100 ms from one goroutine until stop is called; stop waits for it.
func ticker(fn func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fn()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func reportSwarm(deps SwarmDeps, p SwarmProgress) {
	if deps.Progress != nil {
		deps.Progress(p)
	}
}

// goHeapBytes returns the bytes in Go heap objects, live or not yet swept.
func goHeapBytes() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}

// peakRSS returns the process's peak resident set (VmHWM) from /proc/self/status, 0 where
// there is no such file.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return n << 10
				}
			}
		}
	}
	return 0
}

// resetPeakRSS resets VmHWM to the current resident set (Linux: "5" to /proc/self/clear_refs)
// and reports whether it could.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// startTimeout bounds how long a benchmark's cluster may take to start: every role ready and,
// for the tag benchmark, a leader with every node voting.
const startTimeout = time.Minute

// benchAgent is one agent as the benchmark's clients see it.
type benchAgent struct {
	n    int // from 1; 0 for the baseline agent
	addr string
}

// swarmCluster is the benchmark's origin, tracker(s) and agents (the baseline agent last),
// running in this process (server/cluster).
type swarmCluster struct {
	http     *http.Client
	c        *cluster.Cluster
	agents   []benchAgent
	baseline *benchAgent // nil without one, or once stopped
	// baselineDir is the baseline agent's store, removed when it stops.
	baselineDir string
	// endpointsFile is written once the cluster is ready and removed by close ("": none).
	endpointsFile string
	tlsFiles      *api.EndpointsTLS
}

func (s *swarmCluster) originClient() *client.Origin {
	return client.NewOrigin(s.c.Addr(cluster.Origin, 0), s.http)
}

// startSwarm starts the cluster under dir and waits until every server answers /readyz: an
// origin whose swarm egress is capped at cfg.Rate (a ring of one, no storage backend), one
// tracker (one per agent without P2P), and the agents, capped at cfg.Rate both ways, plus the
// baseline agent unless it is skipped. On error it stops what it started.
func startSwarm(ctx context.Context, cfg SwarmConfig, dir string, log *slog.Logger) (*swarmCluster, error) {
	// One client for the benchmark's pulls and every role's calls to the others (closed by
	// close). Dials stay bounded; response headers are not, as in the agent's own client: a
	// pull is bounded by the run's timeout, an agent's tracker call by its scheduler, and the
	// tracker waits for an origin's metainfo. A few idle connections per server are enough:
	// each agent is pulled from by one client.
	o := httpserve.ClientOptions{
		ResponseHeaderTimeout: -1,
		MaxIdleConnsPerHost:   4,
		MaxIdleConns:          4 * (cfg.Agents + 4),
	}
	deps := cluster.Deps{Logger: log}
	var tlsSpec *cluster.TLS
	var tlsFiles *api.EndpointsTLS
	if cfg.TLS {
		// The roles build their clients from their own certificates; the benchmark's client
		// (seeding the origin, pulling from the agents, reading their stats) presents one of
		// its own, of the admin and proxy groups.
		ca, err := pki.NewCA("krakenctl bench swarm CA")
		if err != nil {
			return nil, fmt.Errorf("bench CA: %w", err)
		}
		tlsSpec = &cluster.TLS{CA: ca, Dir: tlsDir(dir)}
		if err := os.MkdirAll(tlsDir(dir), 0o700); err != nil {
			return nil, fmt.Errorf("bench certificates: %w", err)
		}
		pc, err := ca.IssueFiles(tlsDir(dir), "bench", pki.Leaf{Name: ClientName, Groups: []string{pki.GroupAdmin, pki.GroupProxy}})
		if err != nil {
			return nil, fmt.Errorf("bench client certificate: %w", err)
		}
		p, err := pki.Load(pc)
		if err != nil {
			return nil, fmt.Errorf("bench client certificate: %w", err)
		}
		o.DialTLS = p.DialTLS
		tlsFiles = &api.EndpointsTLS{CAFile: absPath(pc.CAFile), CertFile: absPath(pc.CertFile), KeyFile: absPath(pc.KeyFile)}
	}
	hc := httpserve.NewClient(o)
	if !cfg.TLS {
		deps.HTTPClient = hc
	}
	n := cfg.Agents
	if !cfg.SkipBaseline {
		n++
	}
	agentDir := func(i int) string {
		if i == cfg.Agents {
			return filepath.Join(dir, "agent-baseline")
		}
		return filepath.Join(dir, fmt.Sprintf("agent-%03d", i+1))
	}
	c, err := cluster.New(cluster.Spec{
		Dir: dir, Origins: 1, Agents: n, NoP2P: cfg.NoP2P, NoBackend: true, Rate: config.ByteSize(cfg.Rate), TLS: tlsSpec,
		OriginConfig: func(_ int, oc *origin.Config) {
			oc.Store.Dir = filepath.Join(dir, "origin")
			oc.Store.MaxBlobSize = config.ByteSize(cfg.Size)
			oc.Peer.Plain = cfg.PeerPlain
		},
		AgentConfig: func(i int, ac *agent.Config) {
			ac.StoreDir = agentDir(i)
			ac.PeerPlain = cfg.PeerPlain
		},
	}, deps)
	if err != nil {
		hc.CloseIdleConnections()
		return nil, fmt.Errorf("start swarm: %w", err)
	}
	sw := &swarmCluster{http: hc, c: c, endpointsFile: cfg.EndpointsFile, tlsFiles: tlsFiles}
	for i, a := range c.Addrs(cluster.Agent) {
		if i == cfg.Agents {
			sw.baseline, sw.baselineDir = &benchAgent{n: 0, addr: a}, agentDir(i)
		} else {
			sw.agents = append(sw.agents, benchAgent{n: i + 1, addr: a})
		}
	}
	if err := c.Start(); err != nil {
		return nil, errors.Join(err, sw.close())
	}
	wctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := c.WaitReady(wctx); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		} else {
			err = fmt.Errorf("start swarm: %w", err)
		}
		return nil, errors.Join(err, sw.close())
	}
	if err := sw.writeEndpoints(); err != nil {
		return nil, errors.Join(err, sw.close())
	}
	return sw, nil
}

// writeEndpoints writes the endpoints file, if there is one: the servers running now.
func (s *swarmCluster) writeEndpoints() error {
	if s.endpointsFile == "" {
		return nil
	}
	agents := make([]string, 0, len(s.agents)+1)
	for _, a := range s.agents {
		agents = append(agents, a.addr)
	}
	if s.baseline != nil {
		agents = append(agents, s.baseline.addr)
	}
	e := api.Endpoints{Origins: s.c.Addrs(cluster.Origin), Trackers: s.c.Addrs(cluster.Tracker), Agents: agents, TLS: s.tlsFiles}
	if err := api.WriteEndpoints(s.endpointsFile, e); err != nil {
		return fmt.Errorf("write endpoints file: %w", err)
	}
	return nil
}

// absPath is p made absolute (an endpoints file is read from anywhere), or p if that fails.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// stopBaseline stops the baseline agent and removes its store.
func (s *swarmCluster) stopBaseline() error {
	if s.baseline == nil {
		return nil
	}
	s.baseline = nil
	if err := s.c.Stop(cluster.Agent, len(s.agents)); err != nil {
		return fmt.Errorf("stop the baseline agent: %w", err)
	}
	if err := os.RemoveAll(s.baselineDir); err != nil {
		return fmt.Errorf("remove the baseline agent's store: %w", err)
	}
	// What reads the file from now on (swarm inspect, a top started later) leaves it out.
	return s.writeEndpoints()
}

// close stops every server, agents first, and the client's idle connections.
func (s *swarmCluster) close() error {
	err := errors.Join(s.stopBaseline(), s.c.Close())
	if s.endpointsFile != "" {
		if rerr := os.Remove(s.endpointsFile); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("remove endpoints file: %w", rerr))
		}
	}
	s.http.CloseIdleConnections()
	return err
}
