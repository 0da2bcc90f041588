package blob

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/cmdutil/cmdutiltest"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// fakeAgent serves the agent's blob API from a map: the real agent is tested with the same
// client in server/agent. A blob stored under a digest it does not hash to makes the agent a
// liar, which only the client's own check catches.
func fakeAgent(t *testing.T, blobs map[digest.Digest][]byte) string {
	t.Helper()
	mux := http.NewServeMux()
	serve := func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("ns") != DefaultNamespace {
			http.Error(w, "wrong namespace", http.StatusBadRequest)
			return
		}
		data, ok := blobs[digest.Digest(r.PathValue("digest"))]
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(errcode.Body{Errors: []errcode.BodyError{{Code: errcode.CodeBlobUnknown, Message: "blob unknown"}}})
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}
	mux.HandleFunc("GET /namespace/{ns}/blobs/{digest}", serve)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// runPull runs `krakenctl pull ARGS` as the root command would.
func runPull(t *testing.T, args ...string) error {
	t.Helper()
	return cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command { return NewCmdPull(f, nil) }, args...)
}

func TestPullThroughAgent(t *testing.T) {
	t.Parallel()
	data := randomBytes(t, 1<<20+3)
	d := digest.FromBytes(data)
	agent := fakeAgent(t, map[digest.Digest][]byte{d: data})

	dir := t.TempDir()
	dst := filepath.Join(dir, "layer.tar")
	require.NoError(t, runPull(t, d.String(), "--agent", agent, "--file", dst))
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))
	require.Equal(t, []string{"layer.tar"}, dirEntries(t, dir))

	// To stdout, with the agent from the environment.
	deps, out, errOut := pullDeps(t)
	deps.Env = func(k string) string {
		if k == endpoints.EnvAgent {
			return agent
		}
		return ""
	}
	require.NoError(t, pullRun(t.Context(), &PullOptions{deps: deps, Digest: d, Namespace: DefaultNamespace}))
	require.True(t, bytes.Equal(data, out.Bytes()))
	require.Empty(t, errOut.String(), "no progress bar when stderr is not a terminal")
}

// With --file, -o json prints a summary of the pull on stdout once the file is in place; the
// default (table) prints nothing.
func TestPullToFileJSONSummary(t *testing.T) {
	t.Parallel()
	data := randomBytes(t, 300_001)
	d := digest.FromBytes(data)
	agent := fakeAgent(t, map[digest.Digest][]byte{d: data})
	dst := filepath.Join(t.TempDir(), "blob")
	deps, out, _ := pullDeps(t)
	require.NoError(t, pullRun(t.Context(), &PullOptions{deps: deps, Agent: endpoints.AgentFlags{Addr: agent}, Digest: d, OutFile: dst, Namespace: DefaultNamespace, Output: cmdutil.OutputJSON}))
	var res PullResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &res), "stdout: %s", out)
	require.Equal(t, d, res.Digest)
	require.Equal(t, int64(len(data)), res.Size)
	require.Equal(t, dst, res.File)
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))

	deps, out, _ = pullDeps(t)
	require.NoError(t, pullRun(t.Context(), &PullOptions{deps: deps, Agent: endpoints.AgentFlags{Addr: agent}, Digest: d, OutFile: dst, Namespace: DefaultNamespace, Output: cmdutil.OutputTable}))
	require.Empty(t, out.String())
}

func TestPullThroughAgentDrawsProgress(t *testing.T) {
	t.Parallel()
	data := randomBytes(t, 2<<20)
	d := digest.FromBytes(data)
	agent := fakeAgent(t, map[digest.Digest][]byte{d: data})
	deps, _, errOut := pullDeps(t)
	deps.IO.SetTTY(false, true)
	dst := filepath.Join(t.TempDir(), "out")
	require.NoError(t, pullRun(t.Context(), &PullOptions{deps: deps, Agent: endpoints.AgentFlags{Addr: agent}, Digest: d, OutFile: dst, Namespace: DefaultNamespace}))
	require.Contains(t, errOut.String(), "pulling")
	require.Contains(t, errOut.String(), "100%")
	require.Contains(t, errOut.String(), "2.0 MiB")
}

// TestPullDigestMismatch: bytes that do not hash to the digest asked for are refused with both
// digests named, and the output file is neither created nor replaced.
func TestPullDigestMismatch(t *testing.T) {
	t.Parallel()
	real := randomBytes(t, 300<<10)
	asked := digest.FromString("what the client asked for")
	agent := fakeAgent(t, map[digest.Digest][]byte{asked: real})

	dir := t.TempDir()
	dst := filepath.Join(dir, "out.bin")
	err := runPull(t, asked.String(), "--agent", agent, "--file", dst)
	require.ErrorContains(t, err, "pull through agent "+agent)
	require.ErrorContains(t, err, "expected "+asked.String()+", got "+digest.FromBytes(real).String())
	require.ErrorContains(t, err, dst+" was left as it was")
	require.ErrorIs(t, err, client.ErrDigestMismatch)
	require.Equal(t, cmdutil.ExitError, cmdutil.ExitCode(err))
	require.Empty(t, dirEntries(t, dir), "no file and no temporary file are left")

	require.NoError(t, os.WriteFile(dst, []byte("precious"), 0o600))
	err = runPull(t, asked.String(), "--agent", agent, "--file", dst)
	require.ErrorIs(t, err, client.ErrDigestMismatch)
	got, rerr := os.ReadFile(dst)
	require.NoError(t, rerr)
	require.Equal(t, "precious", string(got), "an existing file is left untouched")
	require.Equal(t, []string{"out.bin"}, dirEntries(t, dir))

	deps, _, _ := pullDeps(t)
	err = pullRun(t.Context(), &PullOptions{deps: deps, Agent: endpoints.AgentFlags{Addr: agent}, Digest: asked, OutFile: "-", Namespace: DefaultNamespace})
	require.ErrorContains(t, err, "the bytes written to stdout are not the blob")
}

func TestPullThroughAgentNotFound(t *testing.T) {
	t.Parallel()
	agent := fakeAgent(t, nil)
	unknown := digest.Digest("sha256:" + hex64)
	dst := filepath.Join(t.TempDir(), "out")
	err := runPull(t, unknown.String(), "--agent", agent, "--file", dst)
	require.EqualError(t, err, "blob sha256:"+hex64+` not found (namespace "krakenctl"): agent `+agent+" found it on no tracker or origin")
	require.ErrorIs(t, err, client.ErrNotFound)
	require.Equal(t, cmdutil.ExitError, cmdutil.ExitCode(err))
	require.NoFileExists(t, dst)
}

func TestPullNoAgent(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())
	err = runPull(t, "sha256:"+hex64, "--agent", dead, "--file", filepath.Join(t.TempDir(), "out"))
	require.ErrorContains(t, err, "no agent answers at "+dead+", from --agent")
	require.ErrorContains(t, err, "krakenctl serve agent")
	require.ErrorContains(t, err, "--from-origins")

	err = runPull(t, "sha256:"+hex64, "--agent", "nohost", "--file", "x")
	require.ErrorContains(t, err, "invalid --agent")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
}
