package tracker_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/tracker"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// originsByRank starts n fake origins and returns them in the rendezvous order of d.
func originsByRank(t *testing.T, n int, d digest.Digest) []*fakeOrigin {
	t.Helper()
	byAddr := map[string]*fakeOrigin{}
	var addrs []string
	for range n {
		o := newFakeOrigin(t)
		byAddr[o.addr] = o
		addrs = append(addrs, o.addr)
	}
	var out []*fakeOrigin
	for _, a := range ring.Rank(d.String(), addrs) {
		out = append(out, byAddr[a])
	}
	return out
}

func addrsOf(origins []*fakeOrigin) []string {
	var out []string
	for _, o := range origins {
		out = append(out, o.addr)
	}
	return out
}

func ids(peers []announce.Peer) []string {
	var out []string
	for _, p := range peers {
		out = append(out, p.ID)
	}
	return out
}

// TestHandoutOrder: the owning origins come first, then every seeder, then leechers; the
// requester is never listed; the handout holds at most max_peers.
func TestHandoutOrder(t *testing.T) {
	t.Parallel()
	d := digest.FromString("order")
	origins := originsByRank(t, 4, d)
	tt := startTracker(t, tracker.Config{Announce: natLab, Origins: addrsOf(origins), Replicas: 2, MaxPeers: 12}, nil)
	c := announceClient(t, tt.addr)

	seeders, leechers := map[string]bool{}, map[string]bool{}
	for i := range 5 {
		r := peerReq(d, i, true)
		seeders[r.PeerID] = true
		_, err := c.Announce(t.Context(), r)
		require.NoError(t, err)
	}
	for i := range 10 {
		r := peerReq(d, 100+i, false)
		leechers[r.PeerID] = true
		_, err := c.Announce(t.Context(), r)
		require.NoError(t, err)
	}
	me := peerReq(d, 200, false)
	resp, err := c.Announce(t.Context(), me)
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, resp.Interval())
	require.Len(t, resp.Peers, 12)
	owners := []announce.Peer{origins[0].announcePeer(), origins[1].announcePeer()}
	require.ElementsMatch(t, owners, resp.Peers[:2], "the two owning origins lead")
	for _, p := range resp.Peers[2:7] {
		require.True(t, seeders[p.ID], "seeders follow the origins: %+v", p)
		require.True(t, p.Complete)
		require.False(t, p.Origin)
	}
	for _, p := range resp.Peers[7:] {
		require.True(t, leechers[p.ID], "leechers come last: %+v", p)
		require.False(t, p.Complete)
	}
	require.NotContains(t, ids(resp.Peers), me.PeerID)
	for _, p := range resp.Peers {
		require.NoError(t, p.Validate())
	}

	// A seeder announcing gets the same shape, without itself.
	for s := range seeders {
		r := peerReq(d, 0, true)
		r.PeerID = s
		resp, err := c.Announce(t.Context(), r)
		require.NoError(t, err)
		require.NotContains(t, ids(resp.Peers), s)
		require.Len(t, resp.Peers, 12)
		break
	}
}

// TestHandoutRandom: the order of every group changes between requests, so peers that announce
// together still build a random graph. 50 requests that all return one order would happen
// with probability 2^-49 for the origins alone.
func TestHandoutRandom(t *testing.T) {
	t.Parallel()
	d := digest.FromString("random")
	origins := originsByRank(t, 2, d)
	tt := startTracker(t, tracker.Config{Announce: natLab, Origins: addrsOf(origins), Replicas: 2, MaxPeers: 8}, nil)
	c := announceClient(t, tt.addr)
	all := map[string]bool{}
	for i := range 20 {
		r := peerReq(d, i, i < 3)
		all[r.PeerID] = true
		_, err := c.Announce(t.Context(), r)
		require.NoError(t, err)
	}
	me := peerReq(d, 999, false)
	originOrders, seederOrders, leecherOrders, leecherSets := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	seen := map[string]bool{}
	for range 50 {
		resp, err := c.Announce(t.Context(), me)
		require.NoError(t, err)
		require.Len(t, resp.Peers, 8)
		originOrders[strings.Join(ids(resp.Peers[:2]), ",")] = true
		seederOrders[strings.Join(ids(resp.Peers[2:5]), ",")] = true
		leechers := ids(resp.Peers[5:])
		leecherOrders[strings.Join(leechers, ",")] = true
		slices.Sort(leechers)
		leecherSets[strings.Join(leechers, ",")] = true
		for _, p := range resp.Peers[2:] {
			require.True(t, all[p.ID])
			seen[p.ID] = true
		}
	}
	require.GreaterOrEqual(t, len(originOrders), 2)
	require.GreaterOrEqual(t, len(seederOrders), 2)
	require.GreaterOrEqual(t, len(leecherOrders), 2)
	require.GreaterOrEqual(t, len(leecherSets), 2, "which leechers are handed out varies too")
	// 17 leechers, 3 of them per handout, 50 handouts: missing one has probability (14/17)^50.
	require.Len(t, seen, 20, "every peer gets handed out")
}

// TestHandoutMaxPeers: origins count against max_peers.
func TestHandoutMaxPeers(t *testing.T) {
	t.Parallel()
	d := digest.FromString("max")
	origins := originsByRank(t, 3, d)
	tt := startTracker(t, tracker.Config{Announce: natLab, Origins: addrsOf(origins), MaxPeers: 4}, nil)
	c := announceClient(t, tt.addr)
	for i := range 10 {
		_, err := c.Announce(t.Context(), peerReq(d, i, i%2 == 0))
		require.NoError(t, err)
	}
	resp, err := c.Announce(t.Context(), peerReq(d, 50, false))
	require.NoError(t, err)
	require.Len(t, resp.Peers, 4)
	for _, p := range resp.Peers[:3] {
		require.True(t, p.Origin)
	}
	require.True(t, resp.Peers[3].Complete && !resp.Peers[3].Origin)

	tt2 := startTracker(t, tracker.Config{Announce: natLab, Origins: addrsOf(origins), MaxPeers: 2}, nil)
	resp, err = announceClient(t, tt2.addr).Announce(t.Context(), peerReq(d, 1, false))
	require.NoError(t, err)
	require.Len(t, resp.Peers, 2, "max_peers below replicas cuts the origins")
}

// TestHandoutSwarmsAreSeparate: peers of one blob are not handed out for another.
func TestHandoutSwarmsAreSeparate(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.mu.Lock()
	o.peerDown = true
	o.mu.Unlock()
	tt := startTracker(t, tracker.Config{Announce: natLab, Origins: []string{o.addr}}, nil)
	c := announceClient(t, tt.addr)
	a, b := digest.FromString("a"), digest.FromString("b")
	ra := peerReq(a, 1, true)
	_, err := c.Announce(t.Context(), ra)
	require.NoError(t, err)
	resp, err := c.Announce(t.Context(), peerReq(b, 2, false))
	require.NoError(t, err)
	require.Empty(t, resp.Peers)
	resp, err = c.Announce(t.Context(), peerReq(a, 3, false))
	require.NoError(t, err)
	require.Equal(t, []announce.Peer{{ID: ra.PeerID, Addr: ra.Addr, Complete: true}}, resp.Peers)
}

// TestUnreachableOriginLeftOut: an origin whose identity cannot be read is not handed out, and
// the next origin in rank order takes its place, as in the origins' own ring.
func TestUnreachableOriginLeftOut(t *testing.T) {
	t.Parallel()
	d := digest.FromString("unreachable")
	origins := originsByRank(t, 3, d)
	origins[0].mu.Lock()
	origins[0].peerDown = true
	origins[0].mu.Unlock()
	bad := origins[2]
	bad.peer.ID = "not-hex" // sends a malformed identity: treated as unreachable
	tt := startTracker(t, tracker.Config{Announce: natLab, Origins: addrsOf(origins), Replicas: 2}, nil)
	resp, err := announceClient(t, tt.addr).Announce(t.Context(), peerReq(d, 1, false))
	require.NoError(t, err)
	require.Equal(t, []announce.Peer{origins[1].announcePeer()}, resp.Peers)
	require.EqualValues(t, 1, tt.metric(t, "krakenctl_tracker_origins_reachable", ""))
}

// TestPeerExpiry: a peer that has not announced within peer_ttl is no longer handed out and is
// dropped; announcing again keeps it alive.
func TestPeerExpiry(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	clk := newClock()
	tt := startTracker(t, tracker.Config{Announce: natLab, Origins: []string{o.addr}, PeerTTL: 30 * time.Second}, clk.Now)
	c := announceClient(t, tt.addr)
	d := digest.FromString("ttl")
	a, b, me := peerReq(d, 1, true), peerReq(d, 2, false), peerReq(d, 3, false)
	for _, r := range []announce.Request{a, b} {
		_, err := c.Announce(t.Context(), r)
		require.NoError(t, err)
	}
	require.EqualValues(t, 2, tt.metric(t, "krakenctl_tracker_peers", ""))

	clk.Advance(20 * time.Second)
	_, err := c.Announce(t.Context(), a) // a stays alive
	require.NoError(t, err)
	clk.Advance(10 * time.Second) // b's TTL is over: expired exactly at the deadline
	resp, err := c.Announce(t.Context(), me)
	require.NoError(t, err)
	require.Equal(t, []string{o.peer.ID, a.PeerID}, ids(resp.Peers))
	require.EqualValues(t, 2, tt.metric(t, "krakenctl_tracker_peers", ""), "b was dropped by the handout that met it")

	clk.Advance(31 * time.Second)
	require.Equal(t, 2, tt.srv.Sweep())
	require.EqualValues(t, 0, tt.metric(t, "krakenctl_tracker_peers", ""))
	resp, err = c.Announce(t.Context(), me)
	require.NoError(t, err)
	require.Equal(t, []string{o.peer.ID}, ids(resp.Peers))
}

// TestPeerUpdates: a peer that moves or completes is updated in place, and a new peer id on an
// address replaces the old one (a restarted agent).
func TestPeerUpdates(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.mu.Lock()
	o.peerDown = true
	o.mu.Unlock()
	tt := startTracker(t, tracker.Config{Announce: natLab, Origins: []string{o.addr}}, nil)
	c := announceClient(t, tt.addr)
	d := digest.FromString("updates")
	a, me := peerReq(d, 1, false), peerReq(d, 2, false)
	_, err := c.Announce(t.Context(), a)
	require.NoError(t, err)

	a.Complete, a.Addr = true, "10.3.0.1:7000"
	_, err = c.Announce(t.Context(), a)
	require.NoError(t, err)
	resp, err := c.Announce(t.Context(), me)
	require.NoError(t, err)
	require.Equal(t, []announce.Peer{{ID: a.PeerID, Addr: a.Addr, Complete: true}}, resp.Peers)

	restarted := a
	restarted.PeerID, restarted.Complete = wire.RandomPeerID().String(), false
	_, err = c.Announce(t.Context(), restarted)
	require.NoError(t, err)
	resp, err = c.Announce(t.Context(), me)
	require.NoError(t, err)
	require.Equal(t, []announce.Peer{{ID: restarted.PeerID, Addr: a.Addr}}, resp.Peers)
	require.EqualValues(t, 2, tt.metric(t, "krakenctl_tracker_peers", ""))
}

// TestAnnounceInvalid: malformed announces get a 400 whose JSON body says what is wrong.
func TestAnnounceInvalid(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	tt := startTracker(t, tracker.Config{Announce: natLab, Origins: []string{o.addr}}, nil)
	hc := httpClient(t)
	good := peerReq(digest.FromString("x"), 1, false)
	mk := func(f func(m map[string]any)) string {
		b, _ := json.Marshal(good)
		var m map[string]any
		require.NoError(t, json.Unmarshal(b, &m))
		f(m)
		b, _ = json.Marshal(m)
		return string(b)
	}
	for _, tc := range []struct {
		body   string
		status int
		code   string
		want   string
	}{
		{`{"digest":`, 400, "BODY_INVALID", "decode announce"},
		{`[1,2]`, 400, "BODY_INVALID", "decode announce"},
		{mk(func(m map[string]any) {}) + `{}`, 400, "BODY_INVALID", "data after"},
		{mk(func(m map[string]any) { m["digest"] = "sha256:1234" }), 400, "DIGEST_INVALID", "digest"},
		{mk(func(m map[string]any) { m["namespace"] = "Bad" }), 400, "NAME_INVALID", "namespace"},
		{mk(func(m map[string]any) { m["peer_id"] = "abc" }), 400, "BODY_INVALID", "peer_id"},
		{mk(func(m map[string]any) { m["addr"] = "0.0.0.0:1" }), 400, "BODY_INVALID", "addr"},
		{mk(func(m map[string]any) { m["complete"] = "yes" }), 400, "BODY_INVALID", "complete"},
		{`{"namespace":"` + strings.Repeat("a", 20<<10) + `"}`, 413, "SIZE_INVALID", "limit"},
	} {
		resp := send(t, hc, http.MethodPost, "http://"+tt.addr+announce.AnnouncePath, "application/json", strings.NewReader(tc.body))
		var body struct {
			Errors []struct{ Code, Message string }
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		require.NoError(t, resp.Body.Close())
		require.Equal(t, tc.status, resp.StatusCode, tc.body)
		require.Len(t, body.Errors, 1)
		require.Equal(t, tc.code, body.Errors[0].Code, tc.body)
		require.Contains(t, body.Errors[0].Message, tc.want, tc.body)
	}
	require.EqualValues(t, 9, tt.metric(t, "krakenctl_tracker_announces_total", "invalid"))
	require.EqualValues(t, 0, tt.metric(t, "krakenctl_tracker_peers", ""), "nothing was recorded")

	resp := send(t, hc, http.MethodPost, "http://"+tt.addr+announce.AnnouncePath, "application/json", strings.NewReader(mk(func(map[string]any) {})))
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.EqualValues(t, 1, tt.metric(t, "krakenctl_tracker_announces_total", "ok"))

	resp = send(t, hc, http.MethodGet, "http://"+tt.addr+announce.AnnouncePath, "", nil)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

// TestAdminEndpoints: /health, /readyz, /metrics and /debug/pprof on the admin listener, with
// the tracker's metrics; the API keeps /health and /readyz (origins and agents probe them) and
// serves neither metrics nor profiles.
func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	tt := startTracker(t, tracker.Config{Announce: natLab, Origins: []string{o.addr}}, nil)
	hc := httpClient(t)
	get := func(addr, p string) int {
		resp := send(t, hc, http.MethodGet, "http://"+addr+p, "", nil)
		require.NoError(t, resp.Body.Close())
		return resp.StatusCode
	}
	for _, p := range []string{"/health", "/readyz", "/metrics", "/debug/pprof/"} {
		require.Equal(t, http.StatusOK, get(tt.admin, p), "admin "+p)
	}
	for _, p := range []string{"/health", "/readyz"} {
		require.Equal(t, http.StatusOK, get(tt.addr, p), "api "+p)
	}
	for _, p := range []string{"/metrics", "/debug/pprof/"} {
		require.Equal(t, http.StatusNotFound, get(tt.addr, p), "api "+p)
	}
	mfs, err := tt.reg.Gather()
	require.NoError(t, err)
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	for _, want := range []string{
		"krakenctl_tracker_announces_total", "krakenctl_tracker_peers", "krakenctl_tracker_metainfo_requests_total",
		"krakenctl_tracker_origins_reachable", "krakenctl_tracker_request_duration_seconds",
	} {
		require.Contains(t, names, want)
	}
}

// TestPathsMatchOrigin: one proxy rule serves the metainfo of trackers and origins.
func TestPathsMatchOrigin(t *testing.T) {
	t.Parallel()
	d := digest.FromString("p")
	for _, ns := range []string{"app", "library/ubuntu", "a.b/c_d-e"} {
		require.Equal(t, api.MetainfoPath(ns, d), announce.MetainfoPath(ns, d))
	}
}
