package tracker_test

import (
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/tracker"
	"github.com/krakenctl/krakenctl/swarm/announce"
)

// TestClientFailover: two trackers in front of an origin. The agents' client asks the first
// tracker in the digest's rank order; while it is down, the second answers announces and
// metainfo; a 404 from a live tracker is final and never reaches the second. (cli/serve runs
// a tracker against a real origin.)
func TestClientFailover(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	mi := o.add(t, "failover blob")
	d := mi.Digest
	const ns = "app"
	cfg := tracker.Config{Announce: natLab, Origins: []string{o.addr}}
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
	require.Equal(t, []announce.Peer{o.announcePeer(), {ID: seeder.PeerID, Addr: seeder.Addr, Complete: true}}, resp.Peers,
		"the peers meet on the second tracker")
	got, err := c.Metainfo(t.Context(), ns, d)
	require.NoError(t, err)
	require.Equal(t, mi, got)
	require.EqualValues(t, 2, t2.metric(t, "krakenctl_tracker_announces_total", "ok"))
	require.EqualValues(t, 1, t2.metric(t, "krakenctl_tracker_metainfo_requests_total", "miss"))
	require.Equal(t, []string{t2.addr, t1.addr}, c.Trackers(d), "the stopped tracker is asked last")
}
