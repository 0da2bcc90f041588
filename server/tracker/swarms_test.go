package tracker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/tracker"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// get GETs path on tt and returns the status and body.
func get(t *testing.T, hc *http.Client, tt *testTracker, path string) (int, []byte) {
	t.Helper()
	resp := send(t, hc, http.MethodGet, "http://"+tt.addr+path, "", nil)
	defer func() { require.NoError(t, resp.Body.Close()) }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// errorCode returns the code of an OCI-style error body.
func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var doc struct {
		Errors []struct{ Code, Message string }
	}
	require.NoError(t, json.Unmarshal(body, &doc), string(body))
	require.Len(t, doc.Errors, 1)
	return doc.Errors[0].Code
}

func swarmList(t *testing.T, hc *http.Client, tt *testTracker, query string) []snapshot.TrackerSwarm {
	t.Helper()
	status, body := get(t, hc, tt, api.SwarmsPath+query)
	require.Equal(t, http.StatusOK, status, string(body))
	var raw []map[string]any
	require.NoError(t, json.Unmarshal(body, &raw), string(body))
	for _, m := range raw {
		require.NotContains(t, m, "members", "the list carries no members")
	}
	var out []snapshot.TrackerSwarm
	require.NoError(t, json.Unmarshal(body, &out))
	require.NotNil(t, out, "an empty list is [], not null")
	return out
}

func oneSwarm(t *testing.T, hc *http.Client, tt *testTracker, d digest.Digest) snapshot.TrackerSwarm {
	t.Helper()
	status, body := get(t, hc, tt, api.SwarmsPath+"/"+d.String())
	require.Equal(t, http.StatusOK, status, string(body))
	var out snapshot.TrackerSwarm
	require.NoError(t, json.Unmarshal(body, &out))
	return out
}

func digests(sws []snapshot.TrackerSwarm) []digest.Digest {
	out := make([]digest.Digest, len(sws))
	for i, s := range sws {
		out[i] = s.Digest
	}
	return out
}

// TestSwarmList: the list has every swarm with a live peer, newest announce first, with its
// seeders and leechers counted; ?limit= bounds it and a bad limit is a 400; swarms whose peers
// expired leave it.
func TestSwarmList(t *testing.T) {
	t.Parallel()
	clk := newClock()
	o := newFakeOrigin(t)
	tt := startTracker(t, tracker.Config{Origins: []string{o.addr}, Announce: natLab}, clk.Now)
	hc := httpClient(t)
	require.Empty(t, swarmList(t, hc, tt, ""))

	d1, d2, d3 := digest.FromString("list-1"), digest.FromString("list-2"), digest.FromString("list-3")
	announceOK := func(req announce.Request) {
		t.Helper()
		status, _, msg := post(t, hc, tt, req)
		require.Equal(t, http.StatusOK, status, msg)
	}
	first := peerReq(d1, 1, true)
	announceOK(first)
	announceOK(peerReq(d1, 2, false))
	announceOK(peerReq(d1, 3, false))
	clk.Advance(time.Second)
	announceOK(peerReq(d2, 4, false))
	clk.Advance(time.Second)
	announceOK(peerReq(d3, 5, true))

	list := swarmList(t, hc, tt, "")
	require.Equal(t, []digest.Digest{d3, d2, d1}, digests(list))
	require.Equal(t, snapshot.TrackerSwarm{Digest: d1, Namespace: "library/app", Seeders: 1, Leechers: 2, LastAnnounce: list[2].LastAnnounce}, list[2])
	require.True(t, clk.Now().Add(-2*time.Second).Equal(list[2].LastAnnounce), list[2].LastAnnounce)
	require.Equal(t, 1, list[0].Seeders)
	require.Equal(t, 0, list[0].Leechers)

	require.Equal(t, []digest.Digest{d3, d2}, digests(swarmList(t, hc, tt, "?limit=2")))
	require.Len(t, swarmList(t, hc, tt, fmt.Sprintf("?limit=%d", tracker.MaxSwarmsLimit*10)), 3, "a limit above the cap is the cap")
	for _, bad := range []string{"0", "-1", "ten", "1.5", "99999999999999999999"} {
		status, body := get(t, hc, tt, api.SwarmsPath+"?limit="+bad)
		require.Equal(t, http.StatusBadRequest, status, bad)
		require.Equal(t, "PAGINATION_NUMBER_INVALID", errorCode(t, body), bad)
	}

	// A new announce moves its swarm to the front.
	clk.Advance(time.Second)
	announceOK(first)
	require.Equal(t, []digest.Digest{d1, d3, d2}, digests(swarmList(t, hc, tt, "")))

	// Peers silent for peer_ttl leave the list with their swarms, swept or not.
	clk.Advance(tracker.DefaultPeerTTL - time.Second)
	require.Equal(t, []digest.Digest{d1}, digests(swarmList(t, hc, tt, "")))
	clk.Advance(time.Second)
	require.Empty(t, swarmList(t, hc, tt, ""))
}

// TestSwarmMembers: one swarm lists the blob's owning origin first (role origin, complete,
// the API address the tracker reads it at), then its peers with the progress and API address
// they announced, seeders first; a new announce updates them.
func TestSwarmMembers(t *testing.T) {
	t.Parallel()
	clk := newClock()
	o := newFakeOrigin(t)
	tt := startTracker(t, tracker.Config{Origins: []string{o.addr}, Announce: natLab}, clk.Now)
	hc := httpClient(t)
	d := digest.FromString("members")
	seeder, leecher, old := peerReq(d, 1, true), peerReq(d, 2, false), peerReq(d, 3, false)
	seeder.Have, seeder.Pieces, seeder.API = 9, 9, "10.2.0.2:16000"
	leecher.Have, leecher.Pieces, leecher.API = 4, 9, "10.2.0.3:16000"
	// old is an announcer from before progress and api: neither is sent.
	for _, req := range []announce.Request{leecher, old, seeder} {
		status, _, msg := post(t, hc, tt, req)
		require.Equal(t, http.StatusOK, status, msg)
	}
	now := clk.Now()
	sw := oneSwarm(t, hc, tt, d)
	require.Equal(t, d, sw.Digest)
	require.Equal(t, "library/app", sw.Namespace)
	require.Equal(t, 1, sw.Seeders)
	require.Equal(t, 2, sw.Leechers)
	for i := range sw.Members {
		if sw.Members[i].Role == "agent" {
			require.True(t, now.Equal(sw.Members[i].LastAnnounce), "%+v", sw.Members[i])
			sw.Members[i].LastAnnounce = time.Time{}
		}
	}
	require.Equal(t, []snapshot.TrackerMember{
		{PeerID: o.peer.ID, Addr: o.peer.Addr, API: o.addr, Role: "origin", Complete: true},
		{PeerID: seeder.PeerID, Addr: seeder.Addr, API: seeder.API, Role: "agent", Complete: true, Have: 9, Pieces: 9},
		{PeerID: leecher.PeerID, Addr: leecher.Addr, API: leecher.API, Role: "agent", Have: 4, Pieces: 9},
		{PeerID: old.PeerID, Addr: old.Addr, Role: "agent"},
	}, sw.Members)

	// The leecher progresses and finishes.
	clk.Advance(time.Second)
	leecher.Have, leecher.Complete = 9, true
	status, _, msg := post(t, hc, tt, leecher)
	require.Equal(t, http.StatusOK, status, msg)
	sw = oneSwarm(t, hc, tt, d)
	require.Equal(t, 2, sw.Seeders)
	require.Equal(t, 1, sw.Leechers)
	require.True(t, sw.LastAnnounce.Equal(clk.Now()))
	var got *snapshot.TrackerMember
	for i := range sw.Members {
		if sw.Members[i].PeerID == leecher.PeerID {
			got = &sw.Members[i]
		}
	}
	require.NotNil(t, got)
	require.True(t, got.Complete)
	require.Equal(t, 9, got.Have)
	require.True(t, got.LastAnnounce.Equal(clk.Now()))
}

// TestSwarmNotFound: a digest no live peer announced is a 404 in the tracker's error shape,
// origins or not; a malformed digest is a 400.
func TestSwarmNotFound(t *testing.T) {
	t.Parallel()
	clk := newClock()
	o := newFakeOrigin(t)
	tt := startTracker(t, tracker.Config{Origins: []string{o.addr}, Announce: natLab}, clk.Now)
	hc := httpClient(t)
	status, body := get(t, hc, tt, api.SwarmsPath+"/"+digest.FromString("nobody").String())
	require.Equal(t, http.StatusNotFound, status)
	require.Equal(t, "BLOB_UNKNOWN", errorCode(t, body))

	for path, code := range map[string]string{
		"/sha256:zz": "DIGEST_INVALID",
		"/" + digest.SHA512.FromString("x").String(): "UNSUPPORTED",
		"/md5:abc": "DIGEST_INVALID",
	} {
		status, body := get(t, hc, tt, api.SwarmsPath+path)
		require.Equal(t, http.StatusBadRequest, status, path)
		require.Equal(t, code, errorCode(t, body), path)
	}

	d := digest.FromString("expiring")
	status, _, msg := post(t, hc, tt, peerReq(d, 1, false))
	require.Equal(t, http.StatusOK, status, msg)
	require.Len(t, oneSwarm(t, hc, tt, d).Members, 2, "the origin and the peer")
	clk.Advance(tracker.DefaultPeerTTL)
	status, body = get(t, hc, tt, api.SwarmsPath+"/"+d.String())
	require.Equal(t, http.StatusNotFound, status, "an expired peer is not known")
	require.Equal(t, "BLOB_UNKNOWN", errorCode(t, body))
}

// TestAnnounceAPIAddress: an API address is kept by the rule of addr (the announcer's own, or
// in the NAT networks from them; loopback only in a cluster on one host); one the tracker does
// not accept is dropped, counted and the announce still succeeds; a malformed one or an
// impossible progress refuses the announce (400).
func TestAnnounceAPIAddress(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	nat := startTracker(t, tracker.Config{Origins: []string{o.addr}, Announce: natLab}, nil)
	dev := startTracker(t, tracker.Config{Origins: []string{o.addr}, Announce: tracker.AnnounceConfig{AllowLoopback: true}}, nil)
	hc := httpClient(t)
	d := digest.FromString("api addresses")

	apiOf := func(tt *testTracker, hc *http.Client, req announce.Request) string {
		t.Helper()
		status, _, msg := post(t, hc, tt, req)
		require.Equal(t, http.StatusOK, status, msg)
		for _, m := range oneSwarm(t, hc, tt, d).Members {
			if m.PeerID == req.PeerID {
				return m.API
			}
		}
		t.Fatalf("%s is not a member", req.PeerID)
		return ""
	}
	req := peerReq(d, 1, false)
	for api, want := range map[string]string{
		"10.3.0.9:16000":          "10.3.0.9:16000", // in the NAT networks, from them
		"[::ffff:10.3.0.9]:16000": "10.3.0.9:16000", // one spelling
		"127.0.0.1:16000":         "",               // loopback, on a tracker of many hosts
		"192.0.2.1:16000":         "",               // another host's
	} {
		req.API = api
		require.Equal(t, want, apiOf(nat, hc, req), api)
	}
	require.EqualValues(t, 2, nat.metric(t, "krakenctl_tracker_announce_api_dropped_total", ""))

	from := clientFrom(t, "127.0.0.2")
	req = announce.Request{Namespace: "library/app", Digest: d, PeerID: req.PeerID, Addr: "127.0.0.2:16001", API: "127.0.0.2:16000"}
	require.Equal(t, "127.0.0.2:16000", apiOf(dev, from, req), "loopback in a cluster on one host")
	req.API = "10.0.0.1:16000"
	require.Empty(t, apiOf(dev, from, req), "an IP the announce did not come from")
	require.EqualValues(t, 1, dev.metric(t, "krakenctl_tracker_announce_api_dropped_total", ""))

	for _, tc := range []struct {
		mutate func(*announce.Request)
		reason string
	}{
		{func(r *announce.Request) { r.API = "agent.example:16000" }, "address"},
		{func(r *announce.Request) { r.API = "0.0.0.0:16000" }, "address"},
		{func(r *announce.Request) { r.Have, r.Pieces = 5, 4 }, "malformed"},
		{func(r *announce.Request) { r.Have, r.Pieces = -1, 4 }, "malformed"},
	} {
		bad := peerReq(d, 7, false)
		tc.mutate(&bad)
		status, code, msg := post(t, hc, nat, bad)
		require.Equal(t, http.StatusBadRequest, status, msg)
		require.Equal(t, "BODY_INVALID", code, msg)
	}
	require.EqualValues(t, 2, nat.metric(t, "krakenctl_tracker_announces_rejected_total", "address"))
	require.EqualValues(t, 2, nat.metric(t, "krakenctl_tracker_announces_rejected_total", "malformed"))
}
