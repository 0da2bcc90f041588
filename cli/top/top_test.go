package top

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/dev"
	"github.com/krakenctl/krakenctl/server/dev/devtest"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestFlags(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--interval", "10ms"}, "invalid --interval 10ms"},
		{[]string{"--timeout", "0s"}, "invalid --timeout 0s"},
		{[]string{"--discover", "-3"}, "invalid --discover -3"},
		{[]string{"-o", "yaml"}, `invalid --output "yaml"`},
		{[]string{"extra"}, "unknown command"},
	} {
		ios, _, _, _ := iostreams.Test()
		f := &cmdutil.Factory{IOStreams: ios, HTTPClient: func() *http.Client { return &http.Client{} }, Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) }}
		var got *Options
		cmd := NewCmdTop(f, func(_ context.Context, o *Options) error { got = o; return nil })
		cmd.SetArgs(tt.args)
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
		err := cmd.ExecuteContext(t.Context())
		require.ErrorContains(t, err, tt.wantErr)
		require.Nil(t, got)
	}
}

// startDev runs an in-process dev cluster (one origin, a tracker, two agents) with one blob
// pulled through both agents, and returns its endpoints file and the blob's digest.
func startDev(t *testing.T) (string, digest.Digest) {
	t.Helper()
	dir := t.TempDir()
	ep := filepath.Join(dir, "endpoints.yaml")
	c := devtest.StartConfig(t, dev.Config{Origins: 1, Agents: 2, Dir: filepath.Join(dir, "state"), EndpointsFile: ep})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	data := make([]byte, 1<<20)
	_, err := rand.Read(data)
	require.NoError(t, err)
	d := digest.FromBytes(data)
	_, err = client.NewCluster(c.Endpoints(), hc).Push(t.Context(), "krakenctl", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	for _, a := range c.Agents() {
		_, err := client.NewAgent(a, hc).Pull(t.Context(), "krakenctl", d, io.Discard, nil)
		require.NoError(t, err)
	}
	return ep, d
}

func options(t *testing.T, ep string) (*Options, *bytes.Buffer) {
	t.Helper()
	ios, _, out, _ := iostreams.Test()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	return &Options{IO: ios, HTTPClient: func() *http.Client { return hc }, Env: func(string) string { return "" },
		Cluster: endpoints.ClusterFlags{File: ep}, Interval: 100 * time.Millisecond, Timeout: 5 * time.Second, Discover: 64, Output: cmdutil.OutputTable}, out
}

func TestOnceAgainstDevCluster(t *testing.T) {
	t.Parallel()
	ep, d := startDev(t)

	opts, out := options(t, ep)
	opts.Once = true
	require.NoError(t, Run(t.Context(), opts))
	text := out.String()
	require.Contains(t, text, "krakenctl top")
	require.Contains(t, text, d.Encoded()[:12])
	require.Contains(t, text, "ring 1/1 healthy")
	require.NotContains(t, text, "\x1b[", "text for scripts has no escape codes")

	opts, out = options(t, ep)
	opts.Output = cmdutil.OutputJSON
	require.NoError(t, Run(t.Context(), opts))
	var c snapshot.Cluster
	require.NoError(t, json.Unmarshal(out.Bytes(), &c), out.String())
	require.Len(t, c.Swarms, 1)
	require.Equal(t, d, c.Swarms[0].Digest)
	require.True(t, c.Swarms[0].Done)
	require.Len(t, c.Hosts, 3, "one origin, two agents")
	require.Empty(t, c.Errors)
	require.Nil(t, c.BuildIndex, "this cluster has no build-index, and the snapshot says none rather than an error")
}

func TestLiveNeedsATerminal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ep := filepath.Join(dir, "endpoints.yaml")
	require.NoError(t, api.WriteEndpoints(ep, api.Endpoints{Agents: []string{"127.0.0.1:1"}}))

	opts, _ := options(t, ep)
	err := Run(t.Context(), opts)
	require.ErrorIs(t, err, ErrNotATerminal)
	require.ErrorContains(t, err, "use --once (text) or -o json")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))

	// On a terminal the model goes to the program, with NO_COLOR honoured; an unreachable
	// agent is not an error of the command (the view shows it).
	opts, _ = options(t, ep)
	opts.IO.SetTTY(true, true)
	opts.Env = func(k string) string {
		if k == "NO_COLOR" {
			return "1"
		}
		return ""
	}
	ran := false
	opts.Program = func(ctx context.Context, m tea.Model, in io.Reader, out io.Writer) error {
		ran = true
		require.NotNil(t, m)
		require.NotNil(t, m.Init(), "the model starts by asking for a snapshot")
		return nil
	}
	require.NoError(t, Run(t.Context(), opts))
	require.True(t, ran)
}
