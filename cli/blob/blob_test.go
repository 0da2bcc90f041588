package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/cmdutil/cmdutiltest"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/dev/devtest"
	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, tagstoretest.IgnoreLeftovers()) // the registry tests run a build-index
}

const hex64 = "4a5c1e6f0d2b3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4"

func Test_NewCmdPush(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    PushOptions
		wantErr string
	}{
		{name: "file", args: []string{"layer.tar"},
			want: PushOptions{Path: "layer.tar", Namespace: "krakenctl", ChunkSize: 32 << 20, Output: "table"}},
		{name: "stdin with flags", args: []string{"-", "--namespace", "team/builds", "--chunk-size", "8MiB", "-o", "json"},
			want: PushOptions{Path: "-", Namespace: "team/builds", ChunkSize: 8 << 20, Output: "json"}},
		{name: "origins comma list and repeated", args: []string{"f", "--origins", "a:1,b:2", "--origins", "c:3", "--endpoints-file", "e.yaml"},
			want: PushOptions{Path: "f", Namespace: "krakenctl", ChunkSize: 32 << 20, Output: "table",
				Endpoints: endpoints.Flags{Origins: []string{"a:1", "b:2", "c:3"}, File: "e.yaml"}}},
		{name: "decimal chunk size", args: []string{"f", "--chunk-size", "1MB"},
			want: PushOptions{Path: "f", Namespace: "krakenctl", ChunkSize: 1000000, Output: "table"}},
		{name: "no file", args: nil, wantErr: "push takes one FILE argument (or - for stdin), got 0 arguments"},
		{name: "two files", args: []string{"a", "b"}, wantErr: "got 2 arguments"},
		{name: "bad namespace", args: []string{"f", "--namespace", "Bad NS"}, wantErr: `invalid --namespace "Bad NS"`},
		{name: "empty namespace", args: []string{"f", "--namespace", ""}, wantErr: "invalid --namespace"},
		{name: "zero chunk size", args: []string{"f", "--chunk-size", "0"}, wantErr: "invalid --chunk-size 0B: must be more than 0 bytes"},
		{name: "garbage chunk size", args: []string{"f", "--chunk-size", "lots"}, wantErr: `invalid argument "lots" for "--chunk-size"`},
		{name: "bad output", args: []string{"f", "-o", "yaml"}, wantErr: `invalid --output "yaml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *PushOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdPush(f, func(_ context.Context, o *PushOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
				require.Nil(t, got, "run must not be called")
				return
			}
			require.NoError(t, err)
			require.NotNil(t, got.IO)
			require.NotNil(t, got.Env)
			got.deps = deps{}
			require.Equal(t, tt.want, *got)
		})
	}
}

func Test_NewCmdPull(t *testing.T) {
	t.Parallel()
	d := digest.Digest("sha256:" + hex64)
	tests := []struct {
		name    string
		args    []string
		want    PullOptions
		wantErr string
	}{
		{name: "prefixed digest", args: []string{"sha256:" + hex64}, want: PullOptions{Digest: d, Namespace: "krakenctl", Output: "table"}},
		{name: "bare hex", args: []string{hex64, "-O", "out.tar"}, want: PullOptions{Digest: d, OutFile: "out.tar", Namespace: "krakenctl", Output: "table"}},
		{name: "file and json", args: []string{hex64, "--file", "out.tar", "-o", "json"}, want: PullOptions{Digest: d, OutFile: "out.tar", Namespace: "krakenctl", Output: "json"}},
		{name: "stdout forced", args: []string{hex64, "--file", "-", "--namespace", "a/b", "--origins", "h:1"},
			want: PullOptions{Digest: d, OutFile: "-", Namespace: "a/b", Endpoints: endpoints.Flags{Origins: []string{"h:1"}}, Output: "table"}},
		{name: "through an agent", args: []string{hex64, "--agent", "10.0.0.7:16000"},
			want: PullOptions{Digest: d, Namespace: "krakenctl", Agent: endpoints.AgentFlags{Addr: "10.0.0.7:16000"}, Output: "table"}},
		{name: "from the origins", args: []string{hex64, "--from-origins"}, want: PullOptions{Digest: d, Namespace: "krakenctl", FromOrigins: true, Output: "table"}},
		// -o named the file before it meant the format (as everywhere else): an old script gets
		// told where the file goes now, not that "out.tar" is an unknown format.
		{name: "old -o FILE", args: []string{hex64, "-o", "out.tar"}, wantErr: `use --file out.tar (-O for short)`},
		{name: "old --output -", args: []string{hex64, "--output", "-"}, wantErr: `use --file -`},
		{name: "json to stdout", args: []string{hex64, "-o", "json"}, wantErr: "write the blob with --file FILE"},
		{name: "agent and origins", args: []string{hex64, "--agent", "h:1", "--origins", "o:1"}, wantErr: "pass one or the other"},
		{name: "agent and from-origins", args: []string{hex64, "--agent", "h:1", "--from-origins"}, wantErr: "pass one or the other"},
		{name: "agent and endpoints file", args: []string{hex64, "--agent", "h:1", "--endpoints-file", "e.yaml"}, wantErr: "pass one or the other"},
		{name: "no digest", wantErr: "pull takes one DIGEST argument, got 0 arguments"},
		{name: "short hex", args: []string{"abc"}, wantErr: `invalid DIGEST argument: "abc" is not a sha256 digest`},
		{name: "upper-case hex", args: []string{strings.ToUpper(hex64)}, wantErr: "invalid DIGEST argument"},
		{name: "other algorithm", args: []string{"sha512:" + strings.Repeat("ab", 64)}, wantErr: "is not a sha256 digest"},
		{name: "unknown algorithm", args: []string{"md5:" + hex64[:32]}, wantErr: "is not a sha256 digest"},
		{name: "bad namespace", args: []string{hex64, "--namespace", "../etc"}, wantErr: "invalid --namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *PullOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdPull(f, func(_ context.Context, o *PullOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			got.deps = deps{}
			require.Equal(t, tt.want, *got)
		})
	}
}

// env is an empty environment with a private HOME, so no real endpoints file is found.
func env(t *testing.T) endpoints.Env {
	home := t.TempDir()
	return func(k string) string {
		if k == "HOME" {
			return home
		}
		return ""
	}
}

// testDeps returns deps on test streams and an HTTP client whose idle connections are closed
// when the test ends.
func testDeps(t *testing.T) (deps, *bytes.Buffer, *bytes.Buffer, *bytes.Buffer) {
	ios, in, out, errOut := iostreams.Test()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	return deps{IO: ios, HTTPClient: func() *http.Client { return hc }, Env: env(t)}, in, out, errOut
}

func writeRandomFile(t *testing.T, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	_, err := rand.Read(data)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "blob.bin")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	return p, data
}

func sha(data []byte) string {
	s := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(s[:])
}

// dirEntries lists the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestPushPullRoundTrip(t *testing.T) {
	t.Parallel()
	c := devtest.Start(t, 3)
	origins := endpoints.Flags{Origins: c.Endpoints()}
	path, data := writeRandomFile(t, 5<<20)

	d, _, out, errOut := testDeps(t)
	err := pushRun(t.Context(), &PushOptions{deps: d, Endpoints: origins, Path: path, Namespace: DefaultNamespace, ChunkSize: 1 << 20, Output: cmdutil.OutputTable})
	require.NoError(t, err)
	require.Equal(t, sha(data)+"\n", out.String(), "stdout carries the digest line only")
	require.Empty(t, errOut.String(), "no progress bar when stderr is not a terminal")
	dg := digest.Digest(strings.TrimSpace(out.String()))

	// To a file: complete, verified, renamed into place, no temporary file left behind.
	dir := t.TempDir()
	dst := filepath.Join(dir, "out.bin")
	d, out, errOut = pullDeps(t)
	require.NoError(t, pullRun(t.Context(), &PullOptions{deps: d, Endpoints: origins, Digest: dg, OutFile: dst, Namespace: DefaultNamespace}))
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "pulled file differs from pushed file")
	require.Equal(t, []string{"out.bin"}, dirEntries(t, dir))
	require.Empty(t, out.String())
	require.Empty(t, errOut.String())

	// To stdout.
	d, out, _ = pullDeps(t)
	require.NoError(t, pullRun(t.Context(), &PullOptions{deps: d, Endpoints: origins, Digest: dg, Namespace: DefaultNamespace}))
	require.True(t, bytes.Equal(data, out.Bytes()), "pulled stdout differs from pushed file")
}

func pullDeps(t *testing.T) (deps, *bytes.Buffer, *bytes.Buffer) {
	d, _, out, errOut := testDeps(t)
	return d, out, errOut
}

func TestPushStdinJSON(t *testing.T) {
	// Not parallel: TMPDIR is set so the spool file can be checked for removal.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	c := devtest.Start(t, 3)
	data := make([]byte, 3<<20+17)
	_, err := rand.Read(data)
	require.NoError(t, err)

	d, in, out, _ := testDeps(t)
	in.Write(data)
	err = pushRun(t.Context(), &PushOptions{deps: d, Endpoints: endpoints.Flags{Origins: c.Endpoints()}, Path: "-", Namespace: "team/builds", ChunkSize: 1 << 20, Output: cmdutil.OutputJSON})
	require.NoError(t, err)
	var res client.PushResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &res), "output: %s", out)
	require.Equal(t, digest.Digest(sha(data)), res.Digest)
	require.Equal(t, int64(len(data)), res.Size)
	require.Len(t, res.Owners, 3)
	require.Contains(t, c.Endpoints(), res.Origin)
	require.Empty(t, dirEntries(t, tmp), "the stdin spool file is removed")

	var got bytes.Buffer
	_, err = client.NewCluster(c.Endpoints(), nil).Pull(t.Context(), "team/builds", res.Digest, &got, nil)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got.Bytes()))
}

func TestPushEmptyFile(t *testing.T) {
	t.Parallel()
	c := devtest.Start(t, 1)
	p := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.WriteFile(p, nil, 0o644))
	d, _, out, _ := testDeps(t)
	require.NoError(t, pushRun(t.Context(), &PushOptions{deps: d, Endpoints: endpoints.Flags{Origins: c.Endpoints()}, Path: p, Namespace: DefaultNamespace, ChunkSize: 1 << 20, Output: cmdutil.OutputTable}))
	require.Equal(t, sha(nil)+"\n", out.String())
}

func TestPushDrawsProgressOnTerminal(t *testing.T) {
	t.Parallel()
	c := devtest.Start(t, 1)
	path, data := writeRandomFile(t, 2<<20)
	d, _, out, errOut := testDeps(t)
	d.IO.SetTTY(false, true)
	require.NoError(t, pushRun(t.Context(), &PushOptions{deps: d, Endpoints: endpoints.Flags{Origins: c.Endpoints()}, Path: path, Namespace: DefaultNamespace, ChunkSize: 512 << 10, Output: cmdutil.OutputTable}))
	require.Equal(t, sha(data)+"\n", out.String(), "the bar never reaches stdout")
	require.Contains(t, errOut.String(), "pushing")
	require.Contains(t, errOut.String(), "100%")
}

func TestPushFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d, _, out, _ := testDeps(t)
	origins := endpoints.Flags{Origins: []string{"127.0.0.1:1"}}

	err := pushRun(t.Context(), &PushOptions{deps: d, Endpoints: origins, Path: filepath.Join(dir, "nope.tar"), Namespace: DefaultNamespace, ChunkSize: 1 << 20})
	require.ErrorContains(t, err, "nope.tar")
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Equal(t, cmdutil.ExitError, cmdutil.ExitCode(err))

	err = pushRun(t.Context(), &PushOptions{deps: d, Endpoints: origins, Path: dir, Namespace: DefaultNamespace, ChunkSize: 1 << 20})
	require.ErrorContains(t, err, "is a directory")
	require.Empty(t, out.String())
}

func TestNoOrigins(t *testing.T) {
	t.Parallel()
	path, _ := writeRandomFile(t, 10)
	d, _, _, _ := testDeps(t)
	err := pushRun(t.Context(), &PushOptions{deps: d, Path: path, Namespace: DefaultNamespace, ChunkSize: 1 << 20})
	require.ErrorIs(t, err, endpoints.ErrNoOrigins)
	require.ErrorContains(t, err, "--origins")
	require.ErrorContains(t, err, "krakenctl dev up")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))

	err = pullRun(t.Context(), &PullOptions{deps: d, FromOrigins: true, Digest: digest.Digest("sha256:" + hex64), OutFile: "-", Namespace: DefaultNamespace})
	require.ErrorIs(t, err, endpoints.ErrNoOrigins)
}

func TestPullNotFound(t *testing.T) {
	t.Parallel()
	c := devtest.Start(t, 3)
	origins := endpoints.Flags{Origins: c.Endpoints()}
	unknown := digest.Digest("sha256:" + hex64)

	dir := t.TempDir()
	dst := filepath.Join(dir, "out.bin")
	require.NoError(t, os.WriteFile(dst, []byte("precious"), 0o600))
	d, out, _ := pullDeps(t)
	err := pullRun(t.Context(), &PullOptions{deps: d, Endpoints: origins, Digest: unknown, OutFile: dst, Namespace: DefaultNamespace})
	require.EqualError(t, err, `blob sha256:`+hex64+` not found on any origin (namespace "krakenctl")`)
	require.ErrorIs(t, err, client.ErrNotFound)
	require.Equal(t, cmdutil.ExitError, cmdutil.ExitCode(err))
	got, rerr := os.ReadFile(dst)
	require.NoError(t, rerr)
	require.Equal(t, "precious", string(got), "a failed pull leaves an existing file untouched")
	require.Equal(t, []string{"out.bin"}, dirEntries(t, dir), "no temporary file is left behind")
	require.Empty(t, out.String())

	d, out, _ = pullDeps(t)
	err = pullRun(t.Context(), &PullOptions{deps: d, Endpoints: origins, Digest: unknown, OutFile: "-", Namespace: DefaultNamespace})
	require.ErrorContains(t, err, "not found on any origin")
	require.Empty(t, out.String())
}

func TestPullRefusesTerminal(t *testing.T) {
	t.Parallel()
	d, out, _ := pullDeps(t)
	d.IO.SetTTY(true, true)
	err := pullRun(t.Context(), &PullOptions{deps: d, Endpoints: endpoints.Flags{Origins: []string{"127.0.0.1:1"}}, Digest: digest.Digest("sha256:" + hex64), Namespace: DefaultNamespace})
	require.ErrorContains(t, err, "refusing to write a blob to a terminal")
	require.ErrorContains(t, err, "--file -")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
	require.Empty(t, out.String())
}

func TestPullIntoDirectoryIsUsageError(t *testing.T) {
	t.Parallel()
	d, _, _ := pullDeps(t)
	dir := t.TempDir()
	err := pullRun(t.Context(), &PullOptions{deps: d, Endpoints: endpoints.Flags{Origins: []string{"127.0.0.1:1"}}, Digest: digest.Digest("sha256:" + hex64), OutFile: dir, Namespace: DefaultNamespace})
	require.ErrorContains(t, err, "is a directory")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
	require.Empty(t, dirEntries(t, dir))
}

func TestStaleEndpointsFileGetsHint(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	require.NoError(t, api.WriteEndpoints(file, api.Endpoints{Origins: []string{dead}}))

	d, _, _ := pullDeps(t)
	err = pullRun(t.Context(), &PullOptions{deps: d, Endpoints: endpoints.Flags{File: file}, Digest: digest.Digest("sha256:" + hex64), OutFile: "-", Namespace: DefaultNamespace})
	require.ErrorContains(t, err, "is `krakenctl dev up` still running?")
	require.ErrorContains(t, err, dead)
}
