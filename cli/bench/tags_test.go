package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/bench"
	"github.com/krakenctl/krakenctl/server/pki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, tagstoretest.IgnoreLeftovers())
}

func Test_NewCmdTags(t *testing.T) {
	t.Parallel()
	def := bench.TagsConfig{Nodes: 3, Clients: 32, Puts: 20000, Gets: 100000, List: 100000}
	tests := []struct {
		name    string
		args    []string
		want    bench.TagsConfig
		wantOut string
		wantErr string
	}{
		{name: "defaults", want: def, wantOut: "table"},
		{name: "all flags", args: []string{"--nodes", "5", "--clients", "8", "--leader-only", "--puts", "10", "--gets", "0", "--list", "0", "--tls", "-o", "json"},
			want: bench.TagsConfig{Nodes: 5, Clients: 8, LeaderOnly: true, Puts: 10, TLS: true}, wantOut: "json"},
		{name: "zero nodes", args: []string{"--nodes", "0"}, wantErr: "invalid --nodes 0: want 1 to 9"},
		{name: "ten nodes", args: []string{"--nodes", "10"}, wantErr: "invalid --nodes 10"},
		{name: "zero clients", args: []string{"--clients", "0"}, wantErr: "invalid --clients 0"},
		{name: "zero puts", args: []string{"--puts", "0"}, wantErr: "invalid --puts 0: want at least 1"},
		{name: "negative gets", args: []string{"--gets", "-1"}, wantErr: "invalid --gets -1"},
		{name: "negative list", args: []string{"--list", "-5"}, wantErr: "invalid --list -5"},
		{name: "bad output", args: []string{"-o", "csv"}, wantErr: `invalid --output "csv"`},
		{name: "argument", args: []string{"now"}, wantErr: `unknown command "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ios, _, _, _ := iostreams.Test()
			f := &cmdutil.Factory{IOStreams: ios, HTTPClient: func() *http.Client { return &http.Client{} }, Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) }}
			var got *TagsOptions
			cmd := NewCmdTags(f, func(_ context.Context, o *TagsOptions) error { got = o; return nil })
			cmd.SetArgs(tt.args)
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			cmd.SilenceErrors, cmd.SilenceUsage = true, true
			cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
			err := cmd.ExecuteContext(t.Context())
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, got)
				if !strings.Contains(tt.wantErr, "unknown command") {
					require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got.Config)
			require.Equal(t, tt.wantOut, got.Output)
			require.Empty(t, got.CPUProfile)
		})
	}
}

func tinyOptions(t *testing.T, output string) (*TagsOptions, *bytes.Buffer, *bytes.Buffer) {
	ios, _, out, errOut := iostreams.Test()
	return &TagsOptions{
		IO:     ios,
		Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) },
		Config: bench.TagsConfig{Nodes: 3, Clients: 3, Puts: 12, Gets: 20, List: 30, Dir: t.TempDir()},
		Output: output,
	}, out, errOut
}

func TestTagsTable(t *testing.T) {
	t.Parallel()
	opts, out, errOut := tinyOptions(t, cmdutil.OutputTable)
	require.NoError(t, tagsRun(t.Context(), opts))
	lines := strings.Split(out.String(), "\n")
	require.Regexp(t, `^MEASURE\s+COUNT\s+RESULT\s+P50\s+P99\s+CPU/OP$`, lines[0])
	require.Regexp(t, `^tag puts\s+12\s+\d+/s\s+\d+(\.\d+)? ms\s+\d+(\.\d+)? ms\s+\d+ µs$`, lines[1])
	require.Regexp(t, `^linearizable gets\s+20\s+\d+/s\s+\d+(\.\d+)? ms\s+\d+(\.\d+)? ms\s+\d+ µs$`, lines[2])
	require.Regexp(t, `^tag puts \(filling the listed repository\)\s+30\s+\d+/s\s+-\s+-\s+-$`, lines[3])
	require.Regexp(t, `^list a repository's tags \(HTTP, 1 page\)\s+30\s+\d+(\.\d+)? ms\s+-\s+-\s+-$`, lines[4])
	require.Regexp(t, `^list a repository's tags \(in the store\)\s+30\s+\d+(\.\d+)? ms\s+-\s+-\s+-$`, lines[5])
	require.Contains(t, out.String(), "3 build-index nodes on 127.0.0.1 over plain text, 3 concurrent clients spread over them")
	require.Contains(t, out.String(), "CPU/op is the process's CPU time (nodes and clients together) per operation.\n")
	require.Contains(t, out.String(), "Listings are the median of 5 runs through the leader (HTTP: ")

	// Not a terminal: one line per phase on stderr, and nothing else.
	require.Equal(t, "starting nodes (3)...\nputting tags (12)...\ngetting tags (20)...\nfilling the listed repository (30)...\nlisting (5)...\n", errOut.String())
}

func TestTagsJSONSkippingPhases(t *testing.T) {
	t.Parallel()
	opts, out, _ := tinyOptions(t, cmdutil.OutputJSON)
	opts.Config.Nodes, opts.Config.Gets, opts.Config.List = 1, 0, 0
	require.NoError(t, tagsRun(t.Context(), opts))
	var m map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &m), "one JSON object: %s", out)
	for _, k := range []string{"puts_per_s", "gets_per_s", "list_100k_ms", "nodes", "clients", "puts", "gets", "list_tags"} {
		require.Contains(t, m, k)
	}
	require.Equal(t, 1.0, m["nodes"])
	require.Equal(t, 12.0, m["puts"])
	require.Equal(t, 0.0, m["gets"], "--gets 0 skips the reads")
	require.Equal(t, 0.0, m["list_tags"], "--list 0 skips the listing")
	require.Nil(t, m["list_100k_ms"])
	require.Positive(t, m["puts_per_s"])
	if runtime.GOOS == "linux" {
		require.Positive(t, m["put_cpu_us"], "Linux says how much CPU the process used")
	}
	require.Equal(t, 0.0, m["get_cpu_us"], "no gets, no CPU per get")
	require.Equal(t, false, m["tls"])
	require.Len(t, m["endpoints"], 1)
	require.Regexp(t, `^http://127\.0\.0\.1:\d+$`, m["endpoints"].([]any)[0])
}

// --tls runs the benchmark over mutual TLS for real: the clients called https:// endpoints and
// every request succeeded, which the nodes only allow over TLS with a certificate from the
// run's CA (server/bench's TestTagClusterTLS shows them refusing plain text and callers
// without one); the certificates are in the state directory, the clients' in group proxy.
func TestTagsTLS(t *testing.T) {
	t.Parallel()
	opts, out, _ := tinyOptions(t, cmdutil.OutputJSON)
	opts.Config.TLS = true
	require.NoError(t, tagsRun(t.Context(), opts))
	var r bench.TagsResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &r), "one JSON object: %s", out)
	require.True(t, r.TLS)
	require.Contains(t, out.String(), `"tls": true`)
	require.Len(t, r.Endpoints, 3)
	for _, e := range r.Endpoints {
		require.Regexp(t, `^https://127\.0\.0\.1:\d+$`, e)
	}
	require.Equal(t, 12, r.Puts)
	require.Equal(t, 20, r.Gets)
	require.Equal(t, 30, r.ListTags)
	require.Positive(t, r.PutsPerS)
	require.Positive(t, r.GetsPerS)

	tlsDir := filepath.Join(opts.Config.Dir, "tls")
	for _, f := range []string{"ca.pem", "build-index-0.pem", "build-index-1.pem", "build-index-2.pem", "admin.pem", "bench.pem"} {
		require.FileExists(t, filepath.Join(tlsDir, f))
	}
	cfg := pki.Config{CertFile: filepath.Join(tlsDir, "bench.pem"), KeyFile: filepath.Join(tlsDir, "bench-key.pem"), CAFile: filepath.Join(tlsDir, "ca.pem")}
	p, err := pki.Load(cfg)
	require.NoError(t, err)
	require.Equal(t, pki.Identity{Name: bench.ClientName, Groups: []string{pki.GroupProxy}}, p.Identity())

	// The table says so too.
	opts, out, _ = tinyOptions(t, cmdutil.OutputTable)
	opts.Config.TLS, opts.Config.Nodes, opts.Config.Gets, opts.Config.List = true, 1, 0, 0
	require.NoError(t, tagsRun(t.Context(), opts))
	require.Contains(t, out.String(), "1 build-index node on 127.0.0.1 over mutual TLS, 3 concurrent clients spread over them")
}

func TestTagsCPUProfile(t *testing.T) {
	t.Parallel()
	opts, _, _ := tinyOptions(t, cmdutil.OutputJSON)
	opts.Config.Nodes, opts.Config.Gets, opts.Config.List = 1, 0, 0
	opts.CPUProfile = filepath.Join(t.TempDir(), "cpu.prof")
	require.NoError(t, tagsRun(t.Context(), opts))
	fi, err := os.Stat(opts.CPUProfile)
	require.NoError(t, err)
	require.Positive(t, fi.Size(), "a profile was written")

	opts.CPUProfile = filepath.Join(t.TempDir(), "missing", "cpu.prof")
	require.ErrorContains(t, tagsRun(t.Context(), opts), "create CPU profile")
}

func TestPrintTagsWithoutOptionalPhases(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	require.NoError(t, printTags(&out, bench.TagsResult{Nodes: 1, Clients: 2, Puts: 5, PutsPerS: 1234.4, PutP50Ms: 0.5, PutP99Ms: 123.4, ElapsedS: 1.25}))
	require.Equal(t, "MEASURE   COUNT  RESULT  P50      P99     CPU/OP\ntag puts  5      1234/s  0.50 ms  123 ms  -\n\n"+
		"1 build-index node on 127.0.0.1 over plain text, 2 concurrent clients spread over them, 1.2s in all.\n", out.String())
}
