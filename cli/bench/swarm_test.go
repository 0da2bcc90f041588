package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/cmdutil/cmdutiltest"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/bench"
)

func Test_NewCmdSwarm(t *testing.T) {
	t.Parallel()
	def := bench.SwarmConfig{Agents: 16, Size: 512 << 20, Rate: 25 << 20}
	tests := []struct {
		name    string
		args    []string
		want    bench.SwarmConfig
		wantOut string
	}{
		{name: "defaults", want: def, wantOut: "table"},
		{name: "units", args: []string{"--agents", "4", "--size", "1GiB", "--rate", "25MiB/s"},
			want: bench.SwarmConfig{Agents: 4, Size: 1 << 30, Rate: 25 << 20}, wantOut: "table"},
		{name: "decimal units", args: []string{"--size", "100MB", "--rate", "1.5MB"},
			want: bench.SwarmConfig{Agents: 16, Size: 100e6, Rate: 1.5e6}, wantOut: "table"},
		{name: "all flags", args: []string{"--agents", "256", "--size", "4096", "--rate", "1KiB", "--verify=false", "--baseline=false",
			"--no-p2p", "--dir", "/dev/shm", "--keep", "--timeout", "90s", "-o", "json"},
			want: bench.SwarmConfig{Agents: 256, Size: 4096, Rate: 1024, SkipVerify: true, SkipBaseline: true, NoP2P: true,
				Dir: "/dev/shm", Keep: true, Timeout: 90 * time.Second}, wantOut: "json"},
		{name: "processes skip the baseline", args: []string{"--processes", "--agents", "4"},
			want: bench.SwarmConfig{Agents: 4, Size: 512 << 20, Rate: 25 << 20, SkipBaseline: true, Processes: true}, wantOut: "table"},
		{name: "processes with what they honour", args: []string{"--processes", "--binary", "/opt/krakenctl", "--baseline=false", "--verify=false",
			"--dir", "/dev/shm", "--keep", "--timeout", "90s", "--endpoints-file", "/tmp/e.json"},
			want: bench.SwarmConfig{Agents: 16, Size: 512 << 20, Rate: 25 << 20, SkipBaseline: true, SkipVerify: true, Processes: true,
				Binary: "/opt/krakenctl", Dir: "/dev/shm", Keep: true, Timeout: 90 * time.Second, EndpointsFile: "/tmp/e.json"}, wantOut: "table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *SwarmOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdSwarm(f, func(_ context.Context, o *SwarmOptions) error { got = o; return nil })
			}, tt.args...)
			require.NoError(t, err)
			require.Equal(t, tt.want, got.Config)
			require.Equal(t, tt.wantOut, got.Output)
			require.Empty(t, got.CPUProfile)
		})
	}
}

func Test_NewCmdSwarmRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"zero agents", []string{"--agents", "0"}, "invalid --agents 0: want 1 to 256"},
		{"too many agents", []string{"--agents", "257"}, "invalid --agents 257: want 1 to 256"},
		{"zero size", []string{"--size", "0"}, "invalid --size 0B: want more than 0 bytes"},
		{"zero rate", []string{"--rate", "0/s"}, "invalid --rate 0B/s: want more than 0 bytes per second"},
		{"size without a number", []string{"--size", "MiB"}, `invalid argument "MiB" for "--size" flag`},
		{"negative size", []string{"--size", "-1MiB"}, "want a non-negative number"},
		{"rate in an unknown unit", []string{"--rate", "25Mbit"}, `invalid argument "25Mbit" for "--rate" flag`},
		{"negative timeout", []string{"--timeout", "-1s"}, "invalid --timeout -1s"},
		{"bad output", []string{"-o", "csv"}, `invalid --output "csv"`},
		{"binary without processes", []string{"--binary", "/opt/krakenctl"}, "--binary is only for --processes"},
		{"processes with tls", []string{"--processes", "--tls"}, "--tls is not available with --processes"},
		{"processes with peer plain", []string{"--processes", "--peer-plain"}, "--peer-plain is not available with --processes"},
		{"processes without p2p", []string{"--processes", "--no-p2p"}, "--no-p2p is not available with --processes"},
		{"processes holding", []string{"--processes", "--hold", "1m"}, "--hold is not available with --processes"},
		{"processes profiled", []string{"--processes", "--cpu-profile", "x.pprof"}, "--cpu-profile is not available with --processes"},
		{"processes with a baseline", []string{"--processes", "--baseline"}, "--baseline is not available with --processes"},
		{"processes verbose", []string{"--processes", "--verbose"}, "--verbose is not available with --processes: every process's log is in the run's logs/ directory"},
		{"processes with no agents", []string{"--processes", "--agents", "0"}, "invalid --agents 0: want 1 to 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ran := false
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdSwarm(f, func(context.Context, *SwarmOptions) error { ran = true; return nil })
			}, tt.args...)
			cmdutiltest.RequireUsageError(t, err, tt.want, ran)
		})
	}
}

func TestSwarmJSON(t *testing.T) {
	t.Parallel()
	ios, _, out, errOut := iostreams.Test()
	opts := &SwarmOptions{
		IO:     ios,
		Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) },
		Config: bench.SwarmConfig{Agents: 2, Size: 1 << 20, Rate: 16 << 20, Dir: t.TempDir()},
		Output: cmdutil.OutputJSON,
	}
	require.NoError(t, swarmRun(t.Context(), opts))
	var m map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &m), "one JSON object: %s", out)
	for _, k := range []string{"agents", "size_bytes", "rate_bytes_per_s", "p50_s", "p90_s", "p99_s", "max_s",
		"efficiency_p50", "efficiency_p99", "origin_copies", "peak_rss_bytes", "per_agent", "baseline_s"} {
		require.Contains(t, m, k)
	}
	require.Equal(t, 2.0, m["agents"])
	require.Len(t, m["per_agent"], 2)
	require.Positive(t, m["origin_copies"])
	// Not a terminal: one line per phase on stderr.
	require.Equal(t, "starting servers (5)...\nuploading to the origin (2.0 MiB)...\nbaseline: one agent alone (1.0 MiB)...\nswarm: every client (2.0 MiB)...\n", errOut.String())
}

func TestPrintSwarm(t *testing.T) {
	t.Parallel()
	base, eff, r50, r99 := 20.0, 1.024, 1.05, 1.1
	r := bench.SwarmResult{
		Agents: 2, SizeBytes: 512 << 20, RateBytesPerS: 25 << 20, Verified: true, IdealS: 20.48,
		P50S: 21, P90S: 22, P99S: 22, MaxS: 22, EfficiencyP50: 20.48 / 21, EfficiencyP99: 20.48 / 22,
		OriginBytesOut: 600 << 20, OriginCopies: 600.0 / 512,
		BaselineS: &base, BaselineEfficiency: &eff, RatioP50: &r50, RatioP99: &r99,
		PeakRSSBytes: 300 << 20, GoHeapPeakBytes: 40 << 20, CPUS: 30, CPUCores: 1.4, CPUSPerGiB: 30,
		PerAgent: []bench.SwarmAgent{
			{Agent: 1, TimeS: 21, FirstByteS: 0.25, Efficiency: 20.48 / 21, BytesIn: 512 << 20, BytesInOrigin: 300 << 20, BytesOut: 200 << 20},
			{Agent: 2, TimeS: 22, FirstByteS: 0.5, Efficiency: 20.48 / 22, BytesIn: 513 << 20, BytesInOrigin: 300 << 20, BytesOut: 212 << 20, WastedBytes: 1 << 20},
		},
		SeedS: 3.5, ElapsedS: 50, FirstByteP50S: 0.25, DownloadedP50S: 20.6, TailP50S: 0.4,
	}
	var out bytes.Buffer
	require.NoError(t, printSwarm(&out, r))
	want := `AGENT  TIME     FIRST BYTE  EFFICIENCY  FROM ORIGIN  FROM PEERS  SENT TO PEERS  WASTED
1      21.00 s  0.25 s      0.975       300.0 MiB    212.0 MiB   200.0 MiB      0 B
2      22.00 s  0.50 s      0.931       300.0 MiB    213.0 MiB   212.0 MiB      1.0 MiB

MEASURE                                    RESULT
time p50 / p90 / p99 / max                 21.00 / 22.00 / 22.00 / 22.00 s
efficiency p50 / p99                       0.975 / 0.931 (ideal 20.48 s: 512.0 MiB at 25.0 MiB/s)
p50: first byte / every piece held / tail  0.25 s / 20.60 s / 0.40 s (the tail: from the agent holding every piece to the client's last byte)
baseline: one agent alone                  20.00 s (efficiency 1.024)
p50 / baseline, p99 / baseline             1.050, 1.100
origin egress                              1.172 copies (600.0 MiB)
peak RSS, whole process                    300.0 MiB
Go heap peak                               40.0 MiB
CPU, whole process                         30.0 s (1.40 cores), 30.00 s per delivered GiB

2 agents, 1 origin and 1 tracker on 127.0.0.1 in this process, plain TCP and HTTP; every client checked every byte it read (CRC-32C against the generated blob; agents check SHA-256). 50.0s in all (seeding the origin 3.5s).
`
	require.Equal(t, want, out.String())

	// Without a baseline, verification or P2P, and with the stores kept.
	r.BaselineS, r.Verified, r.NoP2P, r.Dir, r.PeakRSSSinceStart = nil, false, true, "/tmp/x", true
	out.Reset()
	require.NoError(t, printSwarm(&out, r))
	s := out.String()
	require.NotContains(t, s, "baseline")
	require.Contains(t, s, "300.0 MiB (since the process started)")
	require.Contains(t, s, "2 agents, 1 origin and a tracker per agent (no P2P) on 127.0.0.1")
	require.Contains(t, s, "(not its digest: --verify=false)")
	require.True(t, strings.HasSuffix(s, "Stores kept in /tmp/x.\n"), s)

	// Over TLS, and over TLS but for the swarm.
	r.TLS = true
	out.Reset()
	require.NoError(t, printSwarm(&out, r))
	require.Contains(t, out.String(), "on 127.0.0.1 in this process, mutual TLS on every link, the swarm's included;")
	r.PeerPlain = true
	out.Reset()
	require.NoError(t, printSwarm(&out, r))
	require.Contains(t, out.String(), "on 127.0.0.1 in this process, mutual TLS on every link but the swarm's (plain TCP);")
}

func TestPrintSwarmProcesses(t *testing.T) {
	t.Parallel()
	r := bench.SwarmResult{
		Agents: 2, SizeBytes: 512 << 20, RateBytesPerS: 25 << 20, Verified: true, IdealS: 20.48,
		P50S: 21, P90S: 22, P99S: 22, MaxS: 22, EfficiencyP50: 20.48 / 21, EfficiencyP99: 20.48 / 22,
		OriginBytesOut: 512 << 20, OriginCopies: 1,
		Processes: true, CPUS: 12, CPUCores: 0.5, CPUSPerGiB: 12, CPUSeconds: 12, CPUSecondsPerGiB: 12,
		Roles: &bench.SwarmRoles{
			Origin:  bench.SwarmRoleUsage{Processes: 1, CPUS: 2, CPULifeS: 4, PeakRSSBytes: 40 << 20},
			Tracker: bench.SwarmRoleUsage{Processes: 1, CPUS: 0.05, CPULifeS: 0.1, PeakRSSBytes: 20 << 20},
			Agents:  bench.SwarmRoleUsage{Processes: 2, CPUS: 8.95, CPULifeS: 9, PeakRSSBytes: 36 << 20},
			Clients: bench.SwarmRoleUsage{Processes: 2, CPUS: 1, CPULifeS: 1},
		},
		PerAgent: []bench.SwarmAgent{{Agent: 1, TimeS: 21}, {Agent: 2, TimeS: 22}},
		SeedS:    3.5, ElapsedS: 30,
	}
	var out bytes.Buffer
	require.NoError(t, printSwarm(&out, r))
	s := out.String()
	require.Contains(t, s, "CPU, every process                         12.0 s (0.50 cores), 12.00 s per delivered GiB (from the release to the last client's exit)\n")
	require.Contains(t, s, "CPU by role                                origin 2.0 s, tracker 0.1 s, agents 8.9 s, clients 1.0 s\n")
	require.Contains(t, s, "peak RSS per process                       origin 40.0 MiB, tracker 20.0 MiB, agents up to 36.0 MiB, clients unknown\n")
	require.NotContains(t, s, "whole process")
	require.NotContains(t, s, "Go heap")
	require.Contains(t, s, "2 agents, 1 origin and 1 tracker on 127.0.0.1 as processes of their own, with a client process per agent, plain TCP and HTTP;")
}

func Test_NewCmdSwarmClient(t *testing.T) {
	t.Parallel()
	d := "sha256:" + strings.Repeat("ab", 32)
	var got *SwarmClientOptions
	err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
		return NewCmdSwarmClient(f, func(_ context.Context, o *SwarmClientOptions) error { got = o; return nil })
	}, "--agent", "127.0.0.1:5000", "--digest", d, "--size", "4096", "--crc32c", "0a0b0c0d")
	require.NoError(t, err)
	require.Equal(t, bench.SwarmClientConfig{Agent: "127.0.0.1:5000", Digest: digest.Digest(d), Size: 4096, Verify: true, CRC32C: 0x0a0b0c0d}, got.Config)

	err = cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
		return NewCmdSwarmClient(f, func(_ context.Context, o *SwarmClientOptions) error { got = o; return nil })
	}, "--agent", "127.0.0.1:5000", "--digest", d, "--size", "1")
	require.NoError(t, err)
	require.False(t, got.Config.Verify, "without --crc32c only the length is checked")

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no agent", []string{"--digest", d, "--size", "1"}, "--agent is required"},
		{"bad digest", []string{"--agent", "a:1", "--digest", "sha256:xyz", "--size", "1"}, `invalid --digest "sha256:xyz"`},
		{"no size", []string{"--agent", "a:1", "--digest", d}, "invalid --size 0: want at least 1 byte"},
		{"bad crc", []string{"--agent", "a:1", "--digest", d, "--size", "1", "--crc32c", "xyz"}, `invalid --crc32c "xyz": want 8 hex digits`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ran := false
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdSwarmClient(f, func(context.Context, *SwarmClientOptions) error { ran = true; return nil })
			}, tt.args...)
			cmdutiltest.RequireUsageError(t, err, tt.want, ran)
		})
	}
}
