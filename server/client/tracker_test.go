package client_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/server/tracker"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// startTracker runs a real tracker on loopback (a cluster on one host) with one origin that
// serves its swarm identity, until the test ends, and returns its address and the origin's.
func startTracker(t *testing.T, tlsCfg pki.Config) (addr string, origin *httptest.Server, originPeer api.PeerInfo) {
	t.Helper()
	originPeer = api.PeerInfo{ID: wire.RandomPeerID().String(), Addr: "127.0.0.9:15001"}
	origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(originPeer)
	}))
	t.Cleanup(origin.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	cfg := tracker.Config{Origins: []string{origin.Listener.Addr().String()}, Replicas: 1, TLS: tlsCfg,
		Announce: tracker.AnnounceConfig{AllowLoopback: true}}
	deps := role.Deps{Listener: ln, AdminListener: aln, Registerer: reg, Gatherer: reg}
	if tlsCfg.Enabled() {
		deps.TLS, err = pki.Load(tlsCfg)
		require.NoError(t, err)
	}
	srv, err := tracker.New(cfg, tracker.Deps{Deps: deps})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	return ln.Addr().String(), origin, originPeer
}

func newHTTPClient(t *testing.T, tr *http.Transport) *http.Client {
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// TestTrackerClient reads the swarm list and one swarm of a real tracker, with the progress
// and API address announced; a digest nobody announced wraps ErrNotFound.
func TestTrackerClient(t *testing.T) {
	t.Parallel()
	addr, origin, originPeer := startTracker(t, pki.Config{})
	hc := newHTTPClient(t, &http.Transport{})
	ac, err := announce.NewClient([]string{addr}, hc)
	require.NoError(t, err)
	d1, d2 := digest.FromString("tracker client 1"), digest.FromString("tracker client 2")
	req := announce.Request{Namespace: "library/app", Digest: d1, PeerID: wire.RandomPeerID().String(),
		Addr: "127.0.0.1:16001", API: "127.0.0.1:16000", Have: 3, Pieces: 8}
	_, err = ac.Announce(t.Context(), req)
	require.NoError(t, err)
	_, err = ac.Announce(t.Context(), announce.Request{Namespace: "library/app", Digest: d2, PeerID: req.PeerID, Addr: req.Addr, Complete: true})
	require.NoError(t, err)

	tc := client.NewTracker(addr, hc)
	list, err := tc.Swarms(t.Context(), 0)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.ElementsMatch(t, []digest.Digest{d1, d2}, []digest.Digest{list[0].Digest, list[1].Digest})
	for _, s := range list {
		require.Empty(t, s.Members)
	}
	list, err = tc.Swarms(t.Context(), 1)
	require.NoError(t, err)
	require.Len(t, list, 1)
	_, err = tc.Swarms(t.Context(), -1)
	require.Error(t, err)

	// The origin is known once the tracker has read it.
	var sw snapshot.TrackerSwarm
	require.Eventually(t, func() bool {
		sw, err = tc.Swarm(t.Context(), d1)
		require.NoError(t, err)
		return len(sw.Members) == 2
	}, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, 0, sw.Seeders)
	require.Equal(t, 1, sw.Leechers)
	require.Equal(t, "library/app", sw.Namespace)
	require.Equal(t, snapshot.TrackerMember{PeerID: originPeer.ID, Addr: originPeer.Addr, API: origin.Listener.Addr().String(), Role: "origin", Complete: true}, sw.Members[0])
	m := sw.Members[1]
	require.False(t, m.LastAnnounce.IsZero())
	m.LastAnnounce = time.Time{}
	require.Equal(t, snapshot.TrackerMember{PeerID: req.PeerID, Addr: req.Addr, API: req.API, Role: "agent", Have: 3, Pieces: 8}, m)

	_, err = tc.Swarm(t.Context(), digest.FromString("nobody"))
	require.ErrorIs(t, err, client.ErrNotFound)
	var apiErr *errcode.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, errcode.CodeBlobUnknown, apiErr.Code)
	_, err = tc.Swarm(t.Context(), "sha256:zz")
	require.Error(t, err)
	require.NotErrorIs(t, err, client.ErrNotFound)
}

// TestTrackerClientTLS: with TLS, an operator's certificate reads the swarm list; a client
// without a certificate is refused by the listener.
func TestTrackerClientTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := pki.NewCA("test-ca")
	require.NoError(t, err)
	trackerTLS, err := ca.IssueFiles(dir, "tracker", pki.Leaf{Name: "tracker", Groups: []string{pki.GroupTracker}, Hosts: []string{"127.0.0.1"}})
	require.NoError(t, err)
	adminTLS, err := ca.IssueFiles(dir, "ops", pki.Leaf{Name: "ops", Groups: []string{pki.GroupAdmin}})
	require.NoError(t, err)
	addr, _, _ := startTracker(t, trackerTLS)
	p, err := pki.Load(adminTLS)
	require.NoError(t, err)
	hc := newHTTPClient(t, &http.Transport{DialTLSContext: p.Dialer(&net.Dialer{Timeout: 5 * time.Second}).DialContext})
	list, err := client.NewTracker("https://"+addr, hc).Swarms(t.Context(), 0)
	require.NoError(t, err)
	require.Empty(t, list)
	_, err = client.NewTracker("https://"+addr, newHTTPClient(t, &http.Transport{})).Swarms(t.Context(), 0)
	require.ErrorIs(t, err, client.ErrNoAnswer, "no certificate, no answer")

	// The list names every peer: a cluster certificate that is not an operator's (an agent's,
	// a proxy's) is refused it, though it may announce or not.
	for _, g := range []string{pki.GroupAgent, pki.GroupProxy} {
		other, err := ca.IssueFiles(dir, g, pki.Leaf{Name: g + "-1", Groups: []string{g}})
		require.NoError(t, err)
		op, err := pki.Load(other)
		require.NoError(t, err)
		oc := newHTTPClient(t, &http.Transport{DialTLSContext: op.Dialer(&net.Dialer{Timeout: 5 * time.Second}).DialContext})
		_, err = client.NewTracker("https://"+addr, oc).Swarms(t.Context(), 0)
		var ce *errcode.Error
		require.ErrorAs(t, err, &ce, "%s", g)
		require.Equal(t, http.StatusForbidden, ce.Status, "%s", g)
		_, err = client.NewTracker("https://"+addr, oc).Swarm(t.Context(), digest.FromString("x"))
		require.ErrorAs(t, err, &ce, "%s", g)
		require.Equal(t, http.StatusForbidden, ce.Status, "%s", g)
	}
}

// TestTrackerClientGarbage: answers that are not the documents asked for give clear errors.
func TestTrackerClientGarbage(t *testing.T) {
	t.Parallel()
	d := digest.FromString("garbage")
	for _, tc := range []struct {
		name string
		one  bool // ask for one swarm, not the list
		body string
		want string
	}{
		{"not json", false, "<html>hello</html>", "malformed answer"},
		{"not json (one)", true, "<html>hello</html>", "malformed answer"},
		{"truncated", false, `[{"digest":"` + d.String() + `"`, "malformed answer"},
		{"an object for the list", false, `{"digest":"` + d.String() + `"}`, "malformed answer"},
		{"a list for one", true, `[{"digest":"` + d.String() + `"}]`, "malformed answer"},
		{"bad digest", false, `[{"digest":"sha256:zz"}]`, "malformed answer"},
		{"negative counts", false, `[{"digest":"` + d.String() + `","seeders":-1}]`, "negative"},
		{"impossible progress", true, `{"digest":"` + d.String() + `","members":[{"addr":"x","have":9,"pieces":1}]}`, "9 of 1 pieces"},
		{"another blob", true, `{"digest":"` + digest.FromString("other").String() + `"}`, "sent the swarm of"},
		{"too large", false, `[` + strings.Repeat(" ", 17<<20) + `]`, "larger than"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(tc.body)) }))
		tcl := client.NewTracker(srv.Listener.Addr().String(), newHTTPClient(t, &http.Transport{}))
		var err error
		if tc.one {
			_, err = tcl.Swarm(t.Context(), d)
		} else {
			_, err = tcl.Swarms(t.Context(), 0)
		}
		srv.Close()
		require.ErrorIs(t, err, client.ErrMalformed, tc.name)
		require.ErrorContains(t, err, tc.want, tc.name)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer srv.Close()
	_, err := client.NewTracker(srv.Listener.Addr().String(), newHTTPClient(t, &http.Transport{})).Swarms(t.Context(), 0)
	var apiErr *errcode.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusBadGateway, apiErr.Status)
	require.NotErrorIs(t, err, client.ErrNotFound)
}
