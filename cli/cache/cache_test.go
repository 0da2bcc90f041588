package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/cacheapi"
	"github.com/krakenctl/krakenctl/swarm/castore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testFactory() (*cmdutil.Factory, *bytes.Buffer) {
	ios, _, out, _ := iostreams.Test()
	return &cmdutil.Factory{IOStreams: ios, HTTPClient: func() *http.Client { return &http.Client{} },
		Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) }}, out
}

func execute(t *testing.T, f *cmdutil.Factory, status, evict func(context.Context, *Options) error, args ...string) error {
	t.Helper()
	cmd := NewCmdCache(f, status, evict)
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	return cmd.ExecuteContext(t.Context())
}

const hex = "4f2a5f7c2e1d0b9a8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b"

// Flags become the request the node gets; bad flags are usage errors and run nothing.
func TestEvictFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    api.CacheEvictRequest
		wantErr string
	}{
		{name: "digests", args: []string{"--digest", hex, "--digest", "sha256:" + hex},
			want: api.CacheEvictRequest{Digests: []string{"sha256:" + hex, "sha256:" + hex}}},
		{name: "everything", args: []string{"--idle", "48h", "--older-than", "720h", "--to", "20GiB", "--dry-run", "-o", "json"},
			want: api.CacheEvictRequest{IdleOver: "48h0m0s", OlderThan: "720h0m0s", DownToBytes: new(int64(20 << 30)), DryRun: true}},
		{name: "percent", args: []string{"--to", "60%"}, want: api.CacheEvictRequest{DownToPercent: new(60.0)}},
		{name: "zero bytes", args: []string{"--to", "0"}, want: api.CacheEvictRequest{DownToBytes: new(int64(0))}},
		{name: "policy", args: []string{"--policy", "--dry-run"}, want: api.CacheEvictRequest{Policy: true, DryRun: true}},
		{name: "nothing", args: nil, wantErr: "nothing to evict"},
		{name: "only dry run", args: []string{"--dry-run"}, wantErr: "nothing to evict"},
		{name: "bad digest", args: []string{"--digest", "md5:abc"}, wantErr: "invalid --digest"},
		{name: "negative idle", args: []string{"--idle", "-1h"}, wantErr: "invalid --idle -1h0m0s"},
		{name: "negative age", args: []string{"--older-than", "-1s"}, wantErr: "invalid --older-than"},
		{name: "percent over", args: []string{"--to", "101%"}, wantErr: `invalid --to "101%"`},
		{name: "bad size", args: []string{"--to", "lots"}, wantErr: `invalid --to "lots"`},
		{name: "policy and criteria", args: []string{"--policy", "--idle", "1h"}, wantErr: "none of the others can be"},
		{name: "agent and origin", args: []string{"--idle", "1h", "--agent", "a:1", "--origin", "b:2"}, wantErr: "none of the others can be"},
		{name: "bad origin", args: []string{"--idle", "1h", "--origin", "nope"}, wantErr: "invalid --origin"},
		{name: "bad output", args: []string{"--idle", "1h", "-o", "wide"}, wantErr: `invalid --output "wide"`},
		{name: "an argument", args: []string{"sha256:" + hex}, wantErr: "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, _ := testFactory()
			var got *Options
			err := execute(t, f, nil, func(_ context.Context, o *Options) error { got = o; return nil }, append([]string{"evict"}, tt.args...)...)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got.request)
		})
	}
}

func TestStatusFlags(t *testing.T) {
	t.Parallel()
	f, _ := testFactory()
	var got *Options
	run := func(_ context.Context, o *Options) error { got = o; return nil }
	require.NoError(t, execute(t, f, run, nil, "status", "--origin", "10.0.0.5:15000", "--blobs", "50", "-o", "json"))
	require.Equal(t, "10.0.0.5:15000", got.Origin)
	require.Equal(t, 50, got.Blobs)
	require.Equal(t, cmdutil.OutputJSON, got.Output)
	got = nil
	err := execute(t, f, run, nil, "status", "--blobs", "-1")
	require.ErrorContains(t, err, "invalid --blobs -1")
	var fe *cmdutil.FlagError
	require.ErrorAs(t, err, &fe)
	require.Nil(t, got)
}

// The run functions against a node's real cache API: status as a table and as JSON, a dry
// run that names what the eviction then removes.
func TestRunAgainstANode(t *testing.T) {
	now := time.Date(2026, 12, 8, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s, err := castore.Open(t.TempDir(), castore.Options{Capacity: 1 << 20, Now: clock})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	var ds []digest.Digest
	for i := range 3 {
		data := bytes.Repeat([]byte{byte(i)}, 1000*(i+1))
		d := digest.FromBytes(data)
		_, err := s.Ingest(t.Context(), d, bytes.NewReader(data))
		require.NoError(t, err)
		ds = append(ds, d)
		now = now.Add(4 * time.Hour)
	}
	cfg := cacheapi.Config{}
	cfg.AgentDefaults()
	mux := http.NewServeMux()
	cacheapi.New("agent", s, cfg, cacheapi.Options{Now: clock}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	f, out := testFactory()
	require.NoError(t, execute(t, f, nil, nil, "status", "--agent", srv.URL))
	table := out.String()
	require.Contains(t, table, "agent "+srv.URL+": 3 blobs")
	require.Contains(t, table, "policy: every 5m; tti 6h; ttl off; watermarks 90% -> 80% of the capacity")
	require.Contains(t, table, "would remove  tti") // ds[0], idle 12h, and ds[1], idle 8h
	require.Contains(t, table, "The policy would free 2.93 KiB now.")
	require.Contains(t, table, ds[0].String())

	out.Reset()
	require.NoError(t, execute(t, f, nil, nil, "status", "--agent", srv.URL, "-o", "json", "--blobs", "2"))
	var st api.CacheStatus
	require.NoError(t, json.Unmarshal(out.Bytes(), &st))
	require.Equal(t, 3, st.BlobCount)
	require.Len(t, st.Blobs, 2)

	out.Reset()
	require.NoError(t, execute(t, f, nil, nil, "evict", "--agent", srv.URL, "--idle", "7h", "--dry-run", "-o", "json"))
	var dry api.CacheEvictReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &dry))
	require.Len(t, dry.Removed, 2)
	require.Len(t, s.List(), 3, "a dry run removes nothing")

	out.Reset()
	require.NoError(t, execute(t, f, nil, nil, "evict", "--agent", srv.URL, "--idle", "7h"))
	require.Contains(t, out.String(), "Freed 2.93 KiB in 2 blobs on agent "+srv.URL)
	require.Contains(t, out.String(), ds[1].String())
	left := s.List()
	require.Len(t, left, 1)
	require.Equal(t, ds[2], left[0].Digest)
}
