package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

func TestNewCmdTracker(t *testing.T) {
	t.Parallel()
	ios, _, _, _ := iostreams.Test()
	f := &cmdutil.Factory{IOStreams: ios}
	for _, tc := range []struct {
		args    []string
		want    TrackerOptions
		wantErr string
	}{
		{args: []string{"--config", "t.yaml"}, want: TrackerOptions{ConfigPath: "t.yaml", LogLevel: "info"}},
		{args: []string{"-c", "t.yaml", "--listen", "127.0.0.1:1", "--log-level", "warn"}, want: TrackerOptions{ConfigPath: "t.yaml", Listen: "127.0.0.1:1", LogLevel: "warn"}},
		{args: nil, wantErr: "--config is required"},
		{args: []string{"-c", "t.yaml", "extra"}, wantErr: "unknown command"},
		{args: []string{"-c", "t.yaml", "--origins", "x"}, wantErr: "unknown flag"},
	} {
		var got *TrackerOptions
		cmd := NewCmdTracker(f, func(_ context.Context, o *TrackerOptions) error { got = o; return nil })
		cmd.SetArgs(tc.args)
		cmd.SetOut(ios.Out)
		cmd.SetErr(ios.ErrOut)
		err := cmd.Execute()
		if tc.wantErr != "" {
			require.ErrorContains(t, err, tc.wantErr)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, *got)
	}
}

// TestRunTrackerBadConfig: a malformed config is refused with the file and the key named, and
// a bad --listen with the flag named, before anything listens.
func TestRunTrackerBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ doc, listen, want string }{
		{"origins: [127.0.0.1:1]\npeer_tll: 1m\n", "", "field peer_tll not found"},
		{"listen: 127.0.0.1:1\n", "", "origins: required"},
		{"origins: [127.0.0.1:1]\nmax_peers: -3\n", "", "max_peers"},
		{"origins: [127.0.0.1:1]\n", "nope", "--listen: listen"},
	} {
		path := filepath.Join(t.TempDir(), "tracker.yaml")
		require.NoError(t, os.WriteFile(path, []byte(tc.doc), 0o600))
		ios, _, _, _ := iostreams.Test()
		err := runTracker(t.Context(), &cmdutil.Factory{IOStreams: ios}, &TrackerOptions{ConfigPath: path, Listen: tc.listen, LogLevel: "info"})
		require.Error(t, err, tc.doc)
		require.ErrorContains(t, err, tc.want)
		if tc.listen == "" {
			require.ErrorContains(t, err, path)
		}
		require.True(t, errors.Is(err, config.ErrInvalid), "%v", err)
	}
	ios, _, _, _ := iostreams.Test()
	err := runTracker(t.Context(), &cmdutil.Factory{IOStreams: ios}, &TrackerOptions{ConfigPath: "x", LogLevel: "loud"})
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
	err = runTracker(t.Context(), &cmdutil.Factory{IOStreams: ios}, &TrackerOptions{ConfigPath: filepath.Join(t.TempDir(), "missing.yaml"), LogLevel: "info"})
	require.ErrorContains(t, err, "missing.yaml")
}

// TestRunTracker starts a tracker from a config file with --listen overriding the address,
// announces two peers that then find each other, and stops it.
func TestRunTracker(t *testing.T) {
	t.Parallel()
	listen, origin := freePort(t), freePort(t) // no origin listens there: handouts have peers only
	path := filepath.Join(t.TempDir(), "tracker.yaml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf("listen: 127.0.0.1:1\norigins: [%s]\nannounce_interval: 2s\n", origin)), 0o600))
	ios, _, _, _ := iostreams.Test()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		errc <- runTracker(ctx, &cmdutil.Factory{IOStreams: ios}, &TrackerOptions{ConfigPath: path, Listen: listen, LogLevel: "info"})
	}()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	require.Eventually(t, func() bool {
		resp, err := hc.Get("http://" + listen + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond)

	c, err := announce.NewClient([]string{listen}, hc)
	require.NoError(t, err)
	d := digest.FromString("blob")
	a := announce.Request{Namespace: "app", Digest: d, PeerID: wire.RandomPeerID().String(), Addr: "10.0.0.1:7000", Complete: true}
	b := announce.Request{Namespace: "app", Digest: d, PeerID: wire.RandomPeerID().String(), Addr: "10.0.0.2:7000"}
	_, err = c.Announce(ctx, a)
	require.NoError(t, err)
	resp, err := c.Announce(ctx, b)
	require.NoError(t, err)
	require.Equal(t, []announce.Peer{{ID: a.PeerID, Addr: a.Addr, Complete: true}}, resp.Peers)
	require.Equal(t, 2*time.Second, resp.Interval())
	cancel()
	require.NoError(t, <-errc)
}
