package ring

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/dev/devtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const hex64 = "4a5c1e6f0d2b3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4"

func Test_NewCmdStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantDigest digest.Digest
		wantOut    string
		wantFlags  endpoints.Flags
		wantErr    string
	}{
		{name: "defaults", wantOut: "table"},
		{name: "digest and json", args: []string{"--digest", hex64, "-o", "json", "--origins", "a:1,b:2"},
			wantDigest: digest.Digest("sha256:" + hex64), wantOut: "json", wantFlags: endpoints.Flags{Origins: []string{"a:1", "b:2"}}},
		{name: "bad digest", args: []string{"--digest", "sha256:xyz"}, wantErr: `invalid --digest: "sha256:xyz" is not a sha256 digest`},
		{name: "bad output", args: []string{"-o", "wide"}, wantErr: `invalid --output "wide"`},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ios, _, _, _ := iostreams.Test()
			f := &cmdutil.Factory{IOStreams: ios, HTTPClient: func() *http.Client { return &http.Client{} }, Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) }}
			var got *StatusOptions
			cmd := NewCmdStatus(f, func(_ context.Context, o *StatusOptions) error { got = o; return nil })
			cmd.SetArgs(tt.args)
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
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
			require.Equal(t, tt.wantDigest, got.Digest)
			require.Equal(t, tt.wantOut, got.Output)
			require.Equal(t, tt.wantFlags, got.Endpoints)
			require.NotNil(t, got.Now)
		})
	}
}

func testOptions(t *testing.T, addrs []string) (*StatusOptions, *bytes.Buffer) {
	ios, _, out, _ := iostreams.Test()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	return &StatusOptions{
		IO:         ios,
		HTTPClient: func() *http.Client { return hc },
		Env:        func(string) string { return "" },
		Now:        time.Now,
		Endpoints:  endpoints.Flags{Origins: addrs},
		Output:     cmdutil.OutputTable,
	}, out
}

func TestStatusAgainstCluster(t *testing.T) {
	t.Parallel()
	c := devtest.Start(t, 3)
	addrs := c.Endpoints()

	opts, out := testOptions(t, addrs)
	require.NoError(t, statusRun(t.Context(), opts))
	table := out.String()
	require.Regexp(t, `^ADDR\s+HEALTHY\s+FAILURES\s+LAST CHECK\s+LAST ERROR\n`, table)
	for _, a := range addrs {
		require.Regexp(t, `(?m)^`+a+`( \(answered\))?\s+yes\s+0\s`, table, "member %s", a)
	}
	require.Contains(t, table, addrs[0]+" (answered)", "the first origin answers")
	require.Contains(t, table, "3 of 3 members healthy; each blob is held by 3 of them.")
	require.NotContains(t, table, "Digest:")

	// JSON is the API document.
	opts, out = testOptions(t, addrs)
	opts.Output = cmdutil.OutputJSON
	require.NoError(t, statusRun(t.Context(), opts))
	var st api.RingStatus
	require.NoError(t, json.Unmarshal(out.Bytes(), &st), "output: %s", out)
	require.Equal(t, addrs[0], st.Self)
	require.Equal(t, 3, st.Replicas)
	require.Len(t, st.Members, 3)
	require.Empty(t, st.Digest)

	// With a digest that is stored: owners, locations and whether the answering origin holds it.
	data := make([]byte, 64<<10)
	_, err := rand.Read(data)
	require.NoError(t, err)
	d := digest.FromBytes(data)
	_, err = client.NewCluster(addrs, opts.HTTPClient()).Push(t.Context(), "krakenctl", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)

	opts, out = testOptions(t, addrs)
	opts.Digest = d
	require.NoError(t, statusRun(t.Context(), opts))
	text := out.String()
	require.Contains(t, text, "Digest:     "+d.String())
	require.Regexp(t, `Owners:     \S+:\d+, \S+:\d+, \S+:\d+\n`, text)
	require.Regexp(t, `Locations:  \S+:\d+, \S+:\d+, \S+:\d+\n`, text)
	require.Contains(t, text, "Held by "+addrs[0]+": yes")

	opts, out = testOptions(t, addrs)
	opts.Digest, opts.Output = d, cmdutil.OutputJSON
	require.NoError(t, statusRun(t.Context(), opts))
	st = api.RingStatus{}
	require.NoError(t, json.Unmarshal(out.Bytes(), &st))
	require.Equal(t, d, st.Digest)
	require.ElementsMatch(t, addrs, st.Owners)
	require.NotNil(t, st.Local)
	require.True(t, *st.Local)
}

func TestStatusFailsOverToAnAnsweringOrigin(t *testing.T) {
	t.Parallel()
	c := devtest.Start(t, 2)
	opts, out := testOptions(t, append([]string{"127.0.0.1:1"}, c.Endpoints()...))
	require.NoError(t, statusRun(t.Context(), opts))
	require.Contains(t, out.String(), c.Endpoints()[0]+" (answered)")
}

func TestStatusNoOriginAnswers(t *testing.T) {
	t.Parallel()
	opts, out := testOptions(t, []string{"127.0.0.1:1"})
	err := statusRun(t.Context(), opts)
	require.ErrorContains(t, err, "get ring status")
	require.ErrorContains(t, err, "127.0.0.1:1")
	require.Empty(t, out.String())
}

func TestPrintStatus(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	local := false
	st := api.RingStatus{
		Self:     "o1:1",
		Replicas: 3,
		Members: []api.RingMember{
			{Addr: "o1:1", Healthy: true, LastCheck: now.Add(-1500 * time.Millisecond)},
			{Addr: "o2:2", Healthy: false, ConsecutiveFailures: 4, LastCheck: now.Add(-90 * time.Second),
				LastError: "dial tcp o2:2: connect: connection refused\nand a second line " + strings.Repeat("x", 100)},
			{Addr: "o3:3", Healthy: true},
		},
		Digest:    digest.Digest("sha256:" + hex64),
		Owners:    []string{"o1:1", "o3:3"},
		Locations: []string{"o2:2", "o1:1", "o3:3"},
		Local:     &local,
	}
	opts, out := testOptions(t, nil)
	opts.Now = func() time.Time { return now }
	require.NoError(t, printStatus(opts, st))
	lines := strings.Split(out.String(), "\n")
	require.Regexp(t, `^o1:1 \(answered\)\s+yes\s+0\s+2s ago\s+-$`, lines[1])
	require.Regexp(t, `^o2:2\s+no\s+4\s+1m30s ago\s+dial tcp o2:2: connect: connection refused and a sec.*…$`, lines[2])
	require.Regexp(t, `^o3:3\s+yes\s+0\s+never\s+-$`, lines[3])
	errCell := lines[2][strings.Index(lines[0], "LAST ERROR"):]
	require.Len(t, []rune(errCell), maxErrorWidth, "long errors are cut to one short line")
	require.Contains(t, out.String(), "2 of 3 members healthy; each blob is held by 3 of them.")
	require.Contains(t, out.String(), "Owners:     o1:1, o3:3\n")
	require.Contains(t, out.String(), "Locations:  o2:2, o1:1, o3:3\n")
	require.Contains(t, out.String(), "Held by o1:1: no\n")
}
