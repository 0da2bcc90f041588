package swarm

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

const hex64 = "4a5c1e6f0d2b3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4"

func factory() *cmdutil.Factory {
	ios, _, _, _ := iostreams.Test()
	return &cmdutil.Factory{IOStreams: ios, HTTPClient: func() *http.Client { return &http.Client{} }, Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) }}
}

func execute(t *testing.T, cmd *cobra.Command, args ...string) error {
	t.Helper()
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	return cmd.ExecuteContext(t.Context())
}

func TestInspectFlags(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"sha256:xyz"}, `invalid digest`},
		{[]string{hex64, "--discover", "-1"}, "invalid --discover -1"},
		{[]string{hex64, "--timeout", "0s"}, "invalid --timeout 0s"},
		{[]string{hex64, "-o", "wide"}, `invalid --output "wide"`},
	} {
		var got *InspectOptions
		err := execute(t, NewCmdInspect(factory(), func(_ context.Context, o *InspectOptions) error { got = o; return nil }), tt.args...)
		require.ErrorContains(t, err, tt.wantErr)
		require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err), "%v", err)
		require.Nil(t, got)
	}
	var got *InspectOptions
	require.NoError(t, execute(t, NewCmdInspect(factory(), func(_ context.Context, o *InspectOptions) error { got = o; return nil }), hex64, "--agents", "127.0.0.1:1"))
	require.Equal(t, digest.Digest("sha256:"+hex64), got.Digest)
	require.Equal(t, []string{"127.0.0.1:1"}, got.Cluster.Agents)

	err := execute(t, NewCmdList(factory(), func(context.Context, *ListOptions) error { return nil }), "--limit", "0")
	require.ErrorContains(t, err, "invalid --limit 0")
}

// startDev runs an in-process dev cluster of one origin, a tracker and two agents, and
// returns it with its endpoints file.
func startDev(t *testing.T) (*dev.Cluster, string) {
	t.Helper()
	dir := t.TempDir()
	ep := filepath.Join(dir, "endpoints.yaml")
	c := devtest.StartConfig(t, dev.Config{Origins: 1, Agents: 2, Dir: filepath.Join(dir, "state"), EndpointsFile: ep})
	return c, ep
}

func TestAgainstDevCluster(t *testing.T) {
	t.Parallel()
	c, ep := startDev(t)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	data := make([]byte, 3<<20)
	_, err := rand.Read(data)
	require.NoError(t, err)
	d := digest.FromBytes(data)
	_, err = client.NewCluster(c.Endpoints(), hc).Push(t.Context(), "krakenctl", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	for _, a := range c.Agents() {
		_, err := client.NewAgent(a, hc).Pull(t.Context(), "krakenctl", d, io.Discard, nil)
		require.NoError(t, err)
	}
	env := func(string) string { return "" }
	ios, _, out, errOut := iostreams.Test()
	cl := endpoints.ClusterFlags{File: ep}

	// The tracker lists the swarm (the agents announce as they seed).
	lo := &ListOptions{IO: ios, HTTPClient: func() *http.Client { return hc }, Env: env, Now: time.Now, Cluster: cl, Limit: 10, Output: cmdutil.OutputJSON}
	require.Eventually(t, func() bool {
		out.Reset()
		require.NoError(t, listRun(t.Context(), lo))
		var list []snapshot.TrackerSwarm
		require.NoError(t, json.Unmarshal(out.Bytes(), &list), out.String())
		return len(list) == 1 && list[0].Digest == d && list[0].Seeders == 2
	}, 30*time.Second, 50*time.Millisecond, "the tracker lists the swarm with both agents seeding")
	out.Reset()
	lo.Output = cmdutil.OutputTable
	require.NoError(t, listRun(t.Context(), lo))
	require.Regexp(t, `(?m)^DIGEST\s+NAMESPACE\s+SEEDERS\s+LEECHERS\s+LAST ANNOUNCE\n`+d.String()+`\s+krakenctl\s+2\s+0\s`, out.String())

	iopts := &InspectOptions{IO: ios, HTTPClient: func() *http.Client { return hc }, Env: env, Cluster: cl, Digest: d, Discover: 10, Timeout: 5 * time.Second, Output: cmdutil.OutputJSON}
	out.Reset()
	require.NoError(t, inspectRun(t.Context(), iopts))
	var s snapshot.Swarm
	require.NoError(t, json.Unmarshal(out.Bytes(), &s), out.String())
	require.Equal(t, d, s.Digest)
	require.Len(t, s.Peers, 3, "%+v", s.Peers)
	require.Equal(t, "origin", s.Peers[0].Role)
	var fromOrigins int64
	for _, p := range s.Peers[1:] {
		require.Equal(t, "agent", p.Role)
		require.Equal(t, s.Pieces, p.Pieces)
		fromOrigins += p.BytesFromOrigins
	}
	require.Equal(t, s.Peers[0].BytesSent, fromOrigins, "what the agents took from the origin is what it sent")
	require.InDelta(t, float64(fromOrigins)/float64(len(data)), s.OriginCopies, 1e-9)
	require.True(t, s.Done)
	require.Empty(t, errOut.String())

	out.Reset()
	iopts.Output = cmdutil.OutputTable
	require.NoError(t, inspectRun(t.Context(), iopts))
	text := out.String()
	require.Contains(t, text, "Digest:        "+d.String())
	require.Contains(t, text, "Progress:      100.0% (every agent has it)")
	require.Regexp(t, `(?m)^ADDR\s+ROLE\s+STATE\s+PIECES\s+FROM PEERS\s+FROM ORIGINS\s+SENT\s+ORIGIN REASONS`, text)

	iopts.Digest = digest.Digest("sha256:" + hex64)
	err = inspectRun(t.Context(), iopts)
	require.ErrorIs(t, err, ErrUnknownSwarm)
	require.ErrorContains(t, err, hex64)
}

// TestDegraded: a cluster file that names roles that are down still gives an answer that
// names them, and a list without trackers says what is missing.
func TestDegraded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ep := filepath.Join(dir, "endpoints.yaml")
	// Port 1 on loopback: nothing listens, every dial is refused at once.
	require.NoError(t, api.WriteEndpoints(ep, api.Endpoints{Origins: []string{"127.0.0.1:1"}, Agents: []string{"127.0.0.1:1"}}))
	ios, _, _, errOut := iostreams.Test()
	env := func(string) string { return "" }
	hc := func() *http.Client { return &http.Client{} }

	err := listRun(t.Context(), &ListOptions{IO: ios, HTTPClient: hc, Env: env, Now: time.Now, Cluster: endpoints.ClusterFlags{File: ep}, Limit: 10})
	require.ErrorContains(t, err, "names no tracker")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))

	err = inspectRun(t.Context(), &InspectOptions{IO: ios, HTTPClient: hc, Env: env, Cluster: endpoints.ClusterFlags{File: ep},
		Digest: digest.Digest("sha256:" + hex64), Timeout: time.Second})
	require.ErrorIs(t, err, ErrUnknownSwarm)
	require.ErrorContains(t, err, "2 roles could not be read")
	require.Contains(t, errOut.String(), "warning: could not read agent 127.0.0.1:1")
	require.Contains(t, errOut.String(), "warning: could not read origin 127.0.0.1:1")
}
