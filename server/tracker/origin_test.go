package tracker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/tracker"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
)

// startOrigin runs a real origin, seeding on a swarm port, whose storage backend is a
// filesystem directory, until the test ends. It returns the origin's blob-API address, its
// swarm identity and its backend.
func startOrigin(t *testing.T) (addr string, peer announce.Peer, be *fs.Backend) {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "backend")
	be, err := fs.New(fs.Config{Root: root})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr = ln.Addr().String()
	srv, err := origin.New(origin.Config{
		Listen: addr, Advertise: addr,
		Store:    origin.StoreConfig{Dir: filepath.Join(dir, "store")},
		Backends: []backends.Config{{Namespace: ".*", FS: &fs.Config{Root: root}}},
		Peer:     origin.PeerConfig{Listen: pln.Addr().String()},
	}, origin.Deps{Listener: ln, PeerListener: pln, Logger: testLogger(t)})
	require.NoError(t, err)
	peer = announce.Peer{ID: srv.Swarm().PeerID().String(), Addr: pln.Addr().String(), Origin: true, Complete: true}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	oc := client.NewOrigin(addr, httpClient(t))
	require.Eventually(t, func() bool { return oc.Ready(t.Context()) == nil }, 10*time.Second, 5*time.Millisecond)
	return addr, peer, be
}

func randomBlob(t *testing.T, n int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b, digest.FromBytes(b)
}

// TestRealOrigin: against a real origin, handouts lead with the origin's swarm identity, the
// tracker's metainfo is the blob's, pulled through from the origin's storage backend, and a
// blob nobody has is ErrNotFound.
func TestRealOrigin(t *testing.T) {
	t.Parallel()
	addr, peer, be := startOrigin(t)
	data, d := randomBlob(t, 300<<10+5)
	const ns = "library/app"
	require.NoError(t, be.Upload(t.Context(), ns, d.Encoded(), bytes.NewReader(data), int64(len(data))))
	tt := startTracker(t, tracker.Config{Origins: []string{addr}}, nil)
	c := announceClient(t, tt.addr)

	resp, err := c.Announce(t.Context(), peerReq(d, 1, false))
	require.NoError(t, err)
	require.Equal(t, []announce.Peer{peer}, resp.Peers)

	got, err := c.Metainfo(t.Context(), ns, d)
	require.NoError(t, err)
	want, err := metainfo.Generate(t.Context(), bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	require.Equal(t, want, got)

	_, err = c.Metainfo(t.Context(), ns, digest.FromString("nobody has this"))
	require.ErrorIs(t, err, announce.ErrNotFound)
	require.EqualValues(t, 1, tt.metric(t, "krakenctl_tracker_metainfo_requests_total", "miss"))
	require.EqualValues(t, 1, tt.metric(t, "krakenctl_tracker_metainfo_requests_total", "error"))
}

// TestClientFailover: two real trackers in front of a real origin. The agents' client asks the
// first tracker in the digest's rank order; while it is down, the second answers announces and
// metainfo; a 404 from a live tracker is final and never reaches the second.
func TestClientFailover(t *testing.T) {
	t.Parallel()
	addr, _, be := startOrigin(t)
	data, d := randomBlob(t, 100<<10)
	const ns = "app"
	require.NoError(t, be.Upload(t.Context(), ns, d.Encoded(), bytes.NewReader(data), int64(len(data))))
	cfg := tracker.Config{Origins: []string{addr}}
	t1, t2 := startTracker(t, cfg, nil), startTracker(t, cfg, nil)
	if ring.Rank(d.String(), []string{t1.addr, t2.addr})[0] != t1.addr {
		t1, t2 = t2, t1
	}
	c := announceClient(t, t2.addr, t1.addr)
	require.Equal(t, []string{t1.addr, t2.addr}, c.Trackers(d))

	// Both up: the first tracker takes everything; a 404 is final.
	seeder := peerReq(d, 1, true)
	_, err := c.Announce(t.Context(), seeder)
	require.NoError(t, err)
	missing := digest.FromString("missing")
	for i := 0; c.Trackers(missing)[0] != t1.addr; i++ {
		missing = digest.FromString(fmt.Sprintf("missing %d", i)) // one that t1 answers for too
	}
	_, err = c.Metainfo(t.Context(), ns, missing)
	require.ErrorIs(t, err, announce.ErrNotFound)
	require.EqualValues(t, 1, t1.metric(t, "krakenctl_tracker_announces_total", "ok"))
	require.EqualValues(t, 0, t2.metric(t, "krakenctl_tracker_announces_total", "ok"))
	require.EqualValues(t, 0, t2.metric(t, "krakenctl_tracker_metainfo_requests_total", "error"))

	// The first tracker stops: its listener is closed.
	t1.stop(t)
	_, err = c.Announce(t.Context(), seeder)
	require.NoError(t, err)
	resp, err := c.Announce(t.Context(), peerReq(d, 2, false))
	require.NoError(t, err)
	require.Equal(t, announce.Peer{ID: seeder.PeerID, Addr: seeder.Addr, Complete: true}, resp.Peers[1],
		"the peers meet on the second tracker")
	mi, err := c.Metainfo(t.Context(), ns, d)
	require.NoError(t, err)
	require.Equal(t, d, mi.Digest)
	require.EqualValues(t, 2, t2.metric(t, "krakenctl_tracker_announces_total", "ok"))
	require.EqualValues(t, 1, t2.metric(t, "krakenctl_tracker_metainfo_requests_total", "miss"))
	require.Equal(t, []string{t2.addr, t1.addr}, c.Trackers(d), "the stopped tracker is asked last")
}
