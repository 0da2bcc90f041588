package replicate

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/cmdutil/cmdutiltest"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/dev"
	"github.com/krakenctl/krakenctl/server/dev/devtest"
	"github.com/krakenctl/krakenctl/server/replicate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testDeps() deps {
	ios, _, _, _ := iostreams.Test()
	tr := &http.Transport{}
	return deps{IO: ios, HTTPClient: func() *http.Client { return &http.Client{Transport: tr} },
		Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) },
		Env:    func(string) string { return "" }}
}

func out(d deps) string { return d.IO.Out.(*bytes.Buffer).String() }

func Test_NewCmdRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    replicate.Target
		check   func(t *testing.T, o *RunOptions)
		wantErr string
	}{
		{name: "tag", args: []string{"team/app:v1", "--to", "b.yaml"}, want: replicate.Target{Repo: "team/app", Tag: "v1"},
			check: func(t *testing.T, o *RunOptions) {
				require.Equal(t, "b.yaml", o.To)
				require.Equal(t, replicate.DefaultParallel, o.Parallel)
				require.Equal(t, "table", o.Output)
			}},
		{name: "latest", args: []string{"app", "--to", "b.yaml"}, want: replicate.Target{Repo: "app", Tag: "latest"}},
		{name: "all flags", args: []string{"team/app:v1", "--to", "b.yaml", "--endpoints-file", "a.yaml", "--parallel", "8", "-o", "json"},
			want: replicate.Target{Repo: "team/app", Tag: "v1"},
			check: func(t *testing.T, o *RunOptions) {
				require.Equal(t, "a.yaml", o.Endpoints.File)
				require.Equal(t, 8, o.Parallel)
				require.Equal(t, "json", o.Output)
			}},
		{name: "no --to", args: []string{"team/app:v1"}, wantErr: "--to FILE is required"},
		{name: "no argument", args: []string{"--to", "b.yaml"}, wantErr: "run takes one REPOSITORY[:TAG]"},
		{name: "two arguments", args: []string{"a:1", "b:2", "--to", "b.yaml"}, wantErr: "run takes one REPOSITORY[:TAG]"},
		{name: "digest", args: []string{"team/app@sha256:" + strings.Repeat("a", 64), "--to", "b.yaml"}, wantErr: "not a digest"},
		{name: "bad repository", args: []string{"Team/app:v1", "--to", "b.yaml"}, wantErr: `invalid argument "Team/app:v1": repository`},
		{name: "bad tag", args: []string{"team/app:-x", "--to", "b.yaml"}, wantErr: `invalid argument "team/app:-x": tag`},
		{name: "zero parallel", args: []string{"a:1", "--to", "b.yaml", "--parallel", "0"}, wantErr: "invalid --parallel 0"},
		{name: "bad output", args: []string{"a:1", "--to", "b.yaml", "-o", "wide"}, wantErr: `invalid --output "wide"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *RunOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdRun(f, func(_ context.Context, o *RunOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				cmdutiltest.RequireUsageError(t, err, tt.wantErr, got != nil)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got.Target)
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

func Test_NewCmdRetry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    api.RetryRequest
		wantErr string
	}{
		{name: "everything"},
		{name: "one remote", args: []string{"--remote", "eu"}, want: api.RetryRequest{Remote: "eu"}},
		{name: "one tag", args: []string{"--remote", "eu", "team/app:v1"}, want: api.RetryRequest{Remote: "eu", Repo: "team/app", Tag: "v1"}},
		{name: "no tag", args: []string{"team/app"}, wantErr: "name the tag"},
		{name: "two tags", args: []string{"a:1", "b:2"}, wantErr: "at most one"},
		{name: "bad tag", args: []string{"team/app:-x"}, wantErr: "tag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *RetryOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdRetry(f, func(_ context.Context, o *RetryOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				cmdutiltest.RequireUsageError(t, err, tt.wantErr, got != nil)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got.Request)
		})
	}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "endpoints.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func TestReadDestination(t *testing.T) {
	t.Parallel()
	d, err := ReadDestination(writeFile(t, "origins: [127.0.0.1:1, 127.0.0.1:2]\nbuild_index: [127.0.0.1:3]\n"))
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1:1", "127.0.0.1:2"}, d.Origins)
	require.Equal(t, []string{"127.0.0.1:3"}, d.BuildIndex)
	require.Nil(t, d.TLS)

	_, err = ReadDestination(writeFile(t, "origins: [127.0.0.1:1]\n"))
	require.ErrorContains(t, err, "lists no build_index")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
	_, err = ReadDestination(writeFile(t, "origins: [nope]\nbuild_index: [127.0.0.1:3]\n"))
	require.ErrorContains(t, err, `origins: "nope" is not host:port`)
	_, err = ReadDestination(writeFile(t, "origins: [127.0.0.1:1]\nbuild_index: [127.0.0.1:3]\ntls: {ca_file: /nonexistent/ca.pem, cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}\n"))
	require.ErrorContains(t, err, "/nonexistent/")
	require.ErrorContains(t, err, "named by the endpoints file")
	_, err = ReadDestination(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = ReadDestination(writeFile(t, "origins: [127.0.0.1:1]\nbuild_index: [127.0.0.1:3]\nsurprise: 1\n"))
	require.ErrorContains(t, err, "surprise")
}

// biServer answers the replication API as a build-index node would, recording retries.
type biServer struct {
	*httptest.Server
	status api.ReplicationStatus
	mu     sync.Mutex
	got    []api.RetryRequest
}

func newBIServer(t *testing.T, st api.ReplicationStatus, requeued int) *biServer {
	t.Helper()
	s := &biServer{status: st}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.ReplicationPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.status)
	})
	mux.HandleFunc("POST "+api.ReplicationRetry, func(w http.ResponseWriter, r *http.Request) {
		var req api.RetryRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.got = append(s.got, req)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(api.RetryResult{Requeued: requeued})
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func (s *biServer) addr() string { return strings.TrimPrefix(s.URL, "http://") }

// deadAddr is an address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	a := l.Addr().String()
	require.NoError(t, l.Close())
	return a
}

func TestStatus(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	leader := newBIServer(t, api.ReplicationStatus{Node: "bi-0", Leader: true, Remotes: []api.RemoteStatus{
		{Name: "eu", Pending: 3, Parked: 1, OldestPending: now.Add(-90 * time.Second),
			LastError: "copy team/app:v1: permanent replication failure: DENIED", LastErrorAt: now.Add(-10 * time.Second),
			LastSuccess: now.Add(-5 * time.Minute), Replicated: 12, Blobs: 80, Bytes: 3 << 30, BytesPerSecond: 50 << 20},
		{Name: "us", Replicated: 2, Bytes: 1024},
	}}, 0)
	follower := newBIServer(t, api.ReplicationStatus{Node: "bi-1"}, 0)
	dead := deadAddr(t)

	d := testDeps()
	opts := &StatusOptions{deps: d, Output: "table", Now: func() time.Time { return now }}
	opts.BuildIndex.Addrs = []string{leader.addr(), follower.addr(), dead}
	require.NoError(t, statusRun(t.Context(), opts))
	lines := strings.Split(strings.TrimSpace(out(d)), "\n")
	require.Len(t, lines, 5, "a header, two remotes of the leader, the follower without rules, the dead node:\n%s", out(d))
	require.Contains(t, lines[0], "OLDEST PENDING")
	for _, want := range []string{"bi-0 " + leader.addr() + " (leader)", "eu", " 3 ", " 1 ", "1m30s", "10s ago: copy team/app:v1", "5m00s ago", "3.00 GiB", "50.0 MiB/s"} {
		require.Contains(t, lines[1], want)
	}
	require.Contains(t, lines[2], "us")
	require.Contains(t, lines[3], "bi-1 "+follower.addr())
	require.Contains(t, lines[3], "(no rules)")
	require.Contains(t, lines[4], dead)
	require.Contains(t, lines[4], "unreachable: connection refused")

	d = testDeps()
	opts.deps, opts.Output = d, "json"
	require.NoError(t, statusRun(t.Context(), opts))
	var got []NodeStatus
	require.NoError(t, json.Unmarshal([]byte(out(d)), &got))
	require.Len(t, got, 3)
	require.Equal(t, leader.status, got[0].ReplicationStatus)
	require.Equal(t, leader.addr(), got[0].Address)
	require.Empty(t, got[0].Error)
	require.Equal(t, "bi-1", got[1].Node)
	require.Equal(t, dead, got[2].Address)
	require.NotEmpty(t, got[2].Error)

	// With no node answering, the command fails after printing the rows.
	d = testDeps()
	opts.deps, opts.Output = d, "table"
	opts.BuildIndex.Addrs = []string{dead}
	require.ErrorContains(t, statusRun(t.Context(), opts), "no build-index node answered")
	require.Contains(t, out(d), dead)
}

func TestRetry(t *testing.T) {
	a, b := newBIServer(t, api.ReplicationStatus{}, 2), newBIServer(t, api.ReplicationStatus{}, 0)
	dead := deadAddr(t)
	d := testDeps()
	req := api.RetryRequest{Remote: "eu", Repo: "team/app", Tag: "v1"}
	opts := &RetryOptions{deps: d, Request: req, Output: "table"}
	opts.BuildIndex.Addrs = []string{a.addr(), b.addr(), dead}
	require.NoError(t, retryRun(t.Context(), opts))
	require.Equal(t, []api.RetryRequest{req}, a.got)
	require.Equal(t, []api.RetryRequest{req}, b.got)
	o := out(d)
	require.Contains(t, o, "2 items queued again.")
	require.Regexp(t, a.addr()+`\s+2\s+-`, o)
	require.Regexp(t, b.addr()+`\s+0\s+-`, o)
	require.Regexp(t, dead+`\s+-\s+unreachable: connection refused`, o)

	d = testDeps()
	opts.deps, opts.Output = d, "json"
	opts.BuildIndex.Addrs = []string{a.addr(), dead}
	require.NoError(t, retryRun(t.Context(), opts))
	var got []NodeRetry
	require.NoError(t, json.Unmarshal([]byte(out(d)), &got))
	require.Equal(t, NodeRetry{Address: a.addr(), Requeued: 2}, got[0])
	require.NotEmpty(t, got[1].Error)

	opts.BuildIndex.Addrs = []string{dead}
	require.ErrorContains(t, retryRun(t.Context(), opts), "no build-index node answered")
}

// TestRun copies an image between two in-process clusters named by their endpoints files,
// then again: the second run says it is up to date.
func TestRun(t *testing.T) {
	fileA, fileB := filepath.Join(t.TempDir(), "a.yaml"), filepath.Join(t.TempDir(), "b.yaml")
	a := devtest.StartConfig(t, dev.Config{Origins: 2, BuildIndex: true, Proxy: true, Dir: t.TempDir(), EndpointsFile: fileA})
	b := devtest.StartConfig(t, dev.Config{Origins: 2, BuildIndex: true, Dir: t.TempDir(), EndpointsFile: fileB})
	idx, err := random.Index(16<<10, 2, 2)
	require.NoError(t, err)
	ref, err := name.ParseReference(a.ProxyAddr()+"/team/app:v1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.WriteIndex(ref, idx, remote.WithContext(t.Context())))
	want, err := idx.Digest()
	require.NoError(t, err)

	d := testDeps()
	opts := &RunOptions{deps: d, To: fileB, Parallel: 2, Output: "json", Target: replicate.Target{Repo: "team/app", Tag: "v1"}}
	opts.Endpoints.File = fileA
	require.NoError(t, runRun(t.Context(), opts))
	var rep replicate.Report
	require.NoError(t, json.Unmarshal([]byte(out(d)), &rep))
	require.Equal(t, digest.Digest(want.String()), rep.Digest)
	require.Equal(t, 9, rep.Copied)
	require.True(t, rep.TagWritten)
	require.Positive(t, rep.Bytes)
	tag, err := client.NewBuildIndex(b.BuildIndexAddr(), &http.Client{}).GetTag(t.Context(), "team/app", "v1", false)
	require.NoError(t, err)
	require.Equal(t, digest.Digest(want.String()), tag.Digest)

	d = testDeps()
	opts.deps, opts.Output = d, "table"
	require.NoError(t, runRun(t.Context(), opts))
	require.Contains(t, out(d), "team/app:v1 is up to date on "+fileB)
	require.Contains(t, out(d), "nothing sent")

	// A tag the source lacks fails permanently and says so.
	d = testDeps()
	opts.deps, opts.Target = d, replicate.Target{Repo: "team/app", Tag: "nope"}
	err = runRun(t.Context(), opts)
	require.ErrorContains(t, err, "permanent failure, retrying will not fix it")
	require.ErrorContains(t, err, `no tag "nope"`)
}

func TestPrintReport(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	rep := &replicate.Report{Repo: "team/app", Tag: "v1", Digest: "sha256:" + digest.Digest(strings.Repeat("a", 64)), To: "b.yaml",
		Blobs: []*replicate.Blob{
			{Digest: digest.FromString("1"), Kind: "layer", Size: 2 << 20, Copied: true},
			{Digest: digest.FromString("2"), Kind: "config", Size: 10},
			{Digest: digest.FromString("3"), Kind: "layer", Size: -1, Error: "upload: DENIED"},
		},
		Copied: 1, Present: 1, Failed: 1, Bytes: 2 << 20, Duration: 2 * time.Second}
	require.NoError(t, printReport(&buf, rep))
	s := buf.String()
	require.Regexp(t, digest.FromString("1").String()+`\s+layer\s+2.00 MiB\s+copied`, s)
	require.Regexp(t, digest.FromString("2").String()+`\s+config\s+10 B\s+present`, s)
	require.Regexp(t, digest.FromString("3").String()+`\s+layer\s+-\s+failed.*upload: DENIED`, s)
	require.Contains(t, s, "1 copied, 1 already present, 1 failed, of 3")
	require.Contains(t, s, "tag not written")
	require.Contains(t, s, "2.00 MiB in 2s (1.00 MiB/s)")
}

// TestRunToTLSDestination copies from a plain-text cluster to one that runs with mutual TLS:
// the destination is reached with the tls section of its own endpoints file (the admin's
// certificate), while the source is not.
func TestRunToTLSDestination(t *testing.T) {
	fileA, fileB := filepath.Join(t.TempDir(), "a.yaml"), filepath.Join(t.TempDir(), "b.yaml")
	a := devtest.StartConfig(t, dev.Config{Origins: 1, BuildIndex: true, Proxy: true, Dir: t.TempDir(), EndpointsFile: fileA})
	devtest.StartConfig(t, dev.Config{Origins: 1, BuildIndex: true, TLS: true, Dir: t.TempDir(), EndpointsFile: fileB})
	img, err := random.Image(8<<10, 1)
	require.NoError(t, err)
	ref, err := name.ParseReference(a.ProxyAddr()+"/team/app:v1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img, remote.WithContext(t.Context())))

	d := testDeps()
	opts := &RunOptions{deps: d, To: fileB, Parallel: 2, Output: "table", Target: replicate.Target{Repo: "team/app", Tag: "v1"}}
	opts.Endpoints.File = fileA
	require.NoError(t, runRun(t.Context(), opts))
	require.Contains(t, out(d), "3 copied, 0 already present, 0 failed, of 3")
	require.Contains(t, out(d), "(tag written)")
}
