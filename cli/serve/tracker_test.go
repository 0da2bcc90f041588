package serve

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/roles"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

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
		var overrides []config.Override
		if tc.listen != "" {
			overrides = append(overrides, set("listen", "listen", tc.listen))
		}
		err := run(t.Context(), t, "tracker", path, overrides...)
		require.Error(t, err, tc.doc)
		require.ErrorContains(t, err, tc.want)
		if tc.listen == "" {
			require.ErrorContains(t, err, path)
		}
		require.ErrorIs(t, err, config.ErrInvalid)
	}
	r, err := roles.Lookup("tracker")
	require.NoError(t, err)
	err = Run(t.Context(), factory(), &Options{Role: r, ConfigPath: "x", LogLevel: "loud"})
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
	err = run(t.Context(), t, "tracker", filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorContains(t, err, "missing.yaml")
}

// TestRunTracker starts a tracker from a config file with --listen overriding the address,
// announces two peers that then find each other, and stops it.
func TestRunTracker(t *testing.T) {
	t.Parallel()
	listen, origin := freePort(t), freePort(t) // no origin listens there: handouts have peers only
	path := filepath.Join(t.TempDir(), "tracker.yaml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf("listen: 127.0.0.1:1\norigins: [%s]\nannounce_interval: 2s\n"+
		// The peers stand for hosts in 10.0.0.0/8 that reach the tracker through NAT (here: loopback).
		"announce: {nat_cidrs: [127.0.0.0/8, 10.0.0.0/8]}\n"+adminAny, origin)), 0o600))
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, t, "tracker", path, set("listen", "listen", listen)) }()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	require.Eventually(t, func() bool {
		return httpStatus(t.Context(), t, hc, "http://"+listen+"/readyz") == http.StatusOK
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

// TestRunTrackerWithOrigin runs `serve origin` (seeding on a peer port, with a filesystem
// backend) and `serve tracker` from config files: handouts lead with the origin's swarm
// identity, metainfo is pulled through from the backend by the origin, and a blob nobody has
// is ErrNotFound.
func TestRunTrackerWithOrigin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	originAddr, peerAddr, trackerAddr := freePort(t), freePort(t), freePort(t)
	root := filepath.Join(dir, "backend")
	originCfg := filepath.Join(dir, "origin.yaml")
	require.NoError(t, os.WriteFile(originCfg, []byte(fmt.Sprintf(`listen: %s
store: {dir: %s}
peer: {listen: %s}
backends:
  - namespace: ".*"
    fs: {root: %s}
admin_listen: 127.0.0.1:0
`, originAddr, filepath.Join(dir, "store"), peerAddr, root)), 0o600))
	trackerCfg := filepath.Join(dir, "tracker.yaml")
	require.NoError(t, os.WriteFile(trackerCfg, []byte(fmt.Sprintf("listen: %s\norigins: [%s]\nannounce: {allow_loopback: true}\n"+adminAny, trackerAddr, originAddr)), 0o600))

	be, err := fs.New(fs.Config{Root: root})
	require.NoError(t, err)
	data := bytes.Repeat([]byte("krakenctl "), 50_000)
	d := digest.FromBytes(data)
	require.NoError(t, be.Upload(t.Context(), "library/app", d.Encoded(), bytes.NewReader(data), int64(len(data))))

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	originDone, trackerDone := make(chan error, 1), make(chan error, 1)
	go func() { originDone <- run(ctx, t, "origin", originCfg) }()
	oc := client.NewOrigin(originAddr, hc)
	require.Eventually(t, func() bool { return oc.Ready(ctx) == nil }, 30*time.Second, 20*time.Millisecond)
	pi, err := oc.Peer(ctx)
	require.NoError(t, err)
	require.Equal(t, peerAddr, pi.Addr)
	go func() { trackerDone <- run(ctx, t, "tracker", trackerCfg) }()

	c, err := announce.NewClient([]string{trackerAddr}, hc)
	require.NoError(t, err)
	req := announce.Request{Namespace: "library/app", Digest: d, PeerID: wire.RandomPeerID().String(), Addr: "127.0.0.2:7000"}
	require.Eventually(t, func() bool {
		resp, err := c.Announce(ctx, req)
		return err == nil && len(resp.Peers) == 1 // the tracker has read the origin's identity
	}, 30*time.Second, 20*time.Millisecond)
	resp, err := c.Announce(ctx, req)
	require.NoError(t, err)
	require.Equal(t, []announce.Peer{{ID: pi.ID, Addr: pi.Addr, Origin: true, Complete: true}}, resp.Peers)

	mi, err := c.Metainfo(ctx, "library/app", d)
	require.NoError(t, err)
	want, err := metainfo.Generate(ctx, bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	require.Equal(t, want, mi)
	_, err = c.Metainfo(ctx, "library/app", digest.FromString("nobody has this"))
	require.ErrorIs(t, err, announce.ErrNotFound)

	cancel()
	require.NoError(t, <-trackerDone)
	require.NoError(t, <-originDone)
}
