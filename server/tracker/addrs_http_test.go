package tracker_test

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/tracker"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// clientFrom is an HTTP client whose connections come from the loopback address src, as
// another host's would.
func clientFrom(t *testing.T, src string) *http.Client {
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// post announces req and returns the status and the error code of the answer ("" for 200).
func post(t *testing.T, hc *http.Client, tt *testTracker, req announce.Request) (int, string, string) {
	t.Helper()
	b, err := json.Marshal(req)
	require.NoError(t, err)
	resp := send(t, hc, http.MethodPost, "http://"+tt.addr+announce.AnnouncePath, "application/json", bytes.NewReader(b))
	defer func() { require.NoError(t, resp.Body.Close()) }()
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", ""
	}
	var body struct {
		Errors []struct{ Code, Message string }
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Len(t, body.Errors, 1)
	return resp.StatusCode, body.Errors[0].Code, body.Errors[0].Message
}

// TestAnnounceAddressKinds: an address that is a name or that no host has is refused with 400
// and counted by reason; loopback is refused (403) by a tracker not set up for a cluster on one
// host; nothing refused is stored or handed out.
func TestAnnounceAddressKinds(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	tt := startTracker(t, tracker.Config{Origins: []string{o.addr}}, nil)
	hc := httpClient(t)
	d := digest.FromString("kinds")
	for _, tc := range []struct {
		addr   string
		status int
		code   string
		reason string
	}{
		{"127.0.0.1:22", 403, "DENIED", "loopback"},
		{"[::1]:22", 403, "DENIED", "loopback"},
		{"169.254.169.254:80", 400, "BODY_INVALID", "address"},
		{"255.255.255.255:1", 400, "BODY_INVALID", "address"},
		{"evil.example:80", 400, "BODY_INVALID", "address"},
		{"999.1.1.1:80", 400, "BODY_INVALID", "address"},
		{"[ff02::1]:80", 400, "BODY_INVALID", "address"},
		{"0.0.0.0:1", 400, "BODY_INVALID", "address"},
		{"[fe80::1%25lo]:80", 400, "BODY_INVALID", "address"},
		{"10.0.0.1:16001", 403, "DENIED", "not_own_address"},
	} {
		req := announce.Request{Namespace: "library/app", Digest: d, PeerID: wire.RandomPeerID().String(), Addr: tc.addr, Complete: true}
		status, code, msg := post(t, hc, tt, req)
		require.Equal(t, tc.status, status, "%s: %s", tc.addr, msg)
		require.Equal(t, tc.code, code, tc.addr)
	}
	for reason, n := range map[string]float64{"loopback": 2, "address": 7, "not_own_address": 1, "conflict": 0, "malformed": 0} {
		require.Equal(t, n, tt.metric(t, "krakenctl_tracker_announces_rejected_total", reason), reason)
	}
	require.EqualValues(t, 0, tt.metric(t, "krakenctl_tracker_peers", ""), "nothing was stored")
}

// TestAnnounceTakeover: with a cluster on one host (loopback allowed), a peer announced from
// 127.0.0.1 keeps its address against another source address (another host) announcing it
// under a new peer id, and against that host moving its peer id; a new id from its own host
// (a restart) replaces it.
func TestAnnounceTakeover(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.mu.Lock()
	o.peerDown = true // handouts list peers only
	o.mu.Unlock()
	tt := startTracker(t, tracker.Config{Origins: []string{o.addr}, Announce: tracker.AnnounceConfig{AllowLoopback: true}}, nil)
	host, other := clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.66")
	d := digest.FromString("takeover")
	victim := announce.Request{Namespace: "library/app", Digest: d, PeerID: wire.RandomPeerID().String(), Addr: "127.0.0.5:16001", Complete: true}
	me := announce.Request{Namespace: "library/app", Digest: d, PeerID: wire.RandomPeerID().String(), Addr: "127.0.0.6:16001"}
	handout := func() []announce.Peer {
		t.Helper()
		resp, err := announceClient(t, tt.addr).Announce(t.Context(), me)
		require.NoError(t, err)
		return resp.Peers
	}
	status, _, msg := post(t, host, tt, victim)
	require.Equal(t, http.StatusOK, status, msg)

	thief := victim
	thief.PeerID = wire.RandomPeerID().String()
	status, code, msg := post(t, other, tt, thief)
	require.Equal(t, http.StatusConflict, status, msg)
	require.Equal(t, "PEER_CONFLICT", code)
	require.Contains(t, msg, "addr 127.0.0.5:16001 is held by another peer")
	moved := victim
	moved.Addr = "127.0.0.66:16001"
	status, code, _ = post(t, other, tt, moved)
	require.Equal(t, http.StatusConflict, status)
	require.Equal(t, "PEER_CONFLICT", code)
	require.Equal(t, []announce.Peer{{ID: victim.PeerID, Addr: victim.Addr, Complete: true}}, handout())
	require.EqualValues(t, 2, tt.metric(t, "krakenctl_tracker_announces_rejected_total", "conflict"))

	restarted := victim
	restarted.PeerID = wire.RandomPeerID().String()
	status, _, msg = post(t, host, tt, restarted)
	require.Equal(t, http.StatusOK, status, msg)
	require.Equal(t, []announce.Peer{{ID: restarted.PeerID, Addr: victim.Addr, Complete: true}}, handout())
}
