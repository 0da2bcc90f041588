package announcetest_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

func request(d digest.Digest, addr string, complete bool) announce.Request {
	return announce.Request{Namespace: "library/app", Digest: d, PeerID: wire.RandomPeerID().String(), Addr: addr, Complete: complete}
}

func ids(ps []announce.Peer) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

// Peers that announce a blob are handed to each other, after the extra peers and the origins,
// never to themselves, and only to peers of the same blob.
func TestAnnounceHandsOutPeers(t *testing.T) {
	tr := announcetest.New()
	d, other := digest.FromString("blob"), digest.FromString("other")
	origin, extra := wire.RandomPeerID().String(), announce.Peer{ID: wire.RandomPeerID().String(), Addr: "127.0.0.1:9"}
	tr.AddOrigin(origin, "127.0.0.1:7")
	tr.AddPeers(extra)

	a, b, c := request(d, "127.0.0.1:1", false), request(d, "127.0.0.1:2", true), request(other, "127.0.0.1:3", false)
	resp, err := tr.Announce(t.Context(), a)
	require.NoError(t, err)
	require.Equal(t, []string{extra.ID, origin}, ids(resp.Peers))
	require.Equal(t, announce.Peer{ID: origin, Addr: "127.0.0.1:7", Origin: true, Complete: true}, resp.Peers[1])
	require.EqualValues(t, announcetest.IntervalSeconds, resp.IntervalSeconds)

	resp, err = tr.Announce(t.Context(), b)
	require.NoError(t, err)
	require.Equal(t, []string{extra.ID, origin, a.PeerID}, ids(resp.Peers))
	resp, err = tr.Announce(t.Context(), c)
	require.NoError(t, err)
	require.Equal(t, []string{extra.ID, origin}, ids(resp.Peers), "peers of another blob are not handed out")

	resp, err = tr.Announce(t.Context(), a)
	require.NoError(t, err)
	require.Equal(t, []string{extra.ID, origin, b.PeerID}, ids(resp.Peers))
	require.Equal(t, announce.Peer{ID: b.PeerID, Addr: b.Addr, Complete: true}, resp.Peers[2])

	tr.Forget(d, b.PeerID)
	resp, err = tr.Announce(t.Context(), a)
	require.NoError(t, err)
	require.Equal(t, []string{extra.ID, origin}, ids(resp.Peers), "a forgotten peer is no longer handed out")

	tr.RemoveOrigins()
	resp, err = tr.Announce(t.Context(), b)
	require.NoError(t, err)
	require.Equal(t, []string{extra.ID, a.PeerID}, ids(resp.Peers), "the origins are no longer handed out")
}

// The peers that announced a blob come in the order of their IDs, the same on every call.
func TestAnnounceOrdersPeersByID(t *testing.T) {
	tr := announcetest.New()
	d := digest.FromString("blob")
	origin := wire.RandomPeerID().String()
	tr.AddOrigin(origin, "127.0.0.1:7")
	var want []string
	for i := range 20 {
		req := request(d, fmt.Sprintf("127.0.0.1:%d", 1000+i), false)
		_, err := tr.Announce(t.Context(), req)
		require.NoError(t, err)
		want = append(want, req.PeerID)
	}
	slices.Sort(want)
	asker := request(d, "127.0.0.1:2000", false)
	for range 3 {
		resp, err := tr.Announce(t.Context(), asker)
		require.NoError(t, err)
		require.Equal(t, append([]string{origin}, want...), ids(resp.Peers))
	}
}

func TestMetainfo(t *testing.T) {
	tr := announcetest.New()
	content := "hello, swarm"
	mi, err := metainfo.Generate(t.Context(), strings.NewReader(content), int64(len(content)))
	require.NoError(t, err)

	_, err = tr.Metainfo(t.Context(), "library/app", mi.Digest)
	require.ErrorIs(t, err, announce.ErrNotFound)
	tr.AddMetainfo(mi)
	got, err := tr.Metainfo(t.Context(), "library/app", mi.Digest)
	require.NoError(t, err)
	require.Equal(t, mi, got)
	_, err = tr.Metainfo(t.Context(), "Not A Namespace", mi.Digest)
	require.ErrorIs(t, err, announce.ErrInvalid)
}

// A malformed announce is refused as the tracker's API refuses it, and recorded nowhere.
func TestAnnounceRefusesInvalidRequests(t *testing.T) {
	tr := announcetest.New()
	d := digest.FromString("blob")
	bad := request(d, "127.0.0.1:1", false)
	bad.PeerID = "not hex"
	_, err := tr.Announce(t.Context(), bad)
	require.ErrorIs(t, err, announce.ErrInvalid)

	resp, err := tr.Announce(t.Context(), request(d, "127.0.0.1:2", false))
	require.NoError(t, err)
	require.Empty(t, resp.Peers, "the refused peer was not recorded")
}

// A tracker that is down fails every call as an unreachable one does, until it is back.
func TestDown(t *testing.T) {
	tr := announcetest.New()
	content := "x"
	mi, err := metainfo.Generate(t.Context(), strings.NewReader(content), 1)
	require.NoError(t, err)
	tr.AddMetainfo(mi)

	tr.SetDown(true)
	_, err = tr.Announce(t.Context(), request(mi.Digest, "127.0.0.1:1", false))
	require.ErrorIs(t, err, announce.ErrUnavailable)
	_, err = tr.Metainfo(t.Context(), "library/app", mi.Digest)
	require.ErrorIs(t, err, announce.ErrUnavailable)

	tr.SetDown(false)
	_, err = tr.Announce(t.Context(), request(mi.Digest, "127.0.0.1:1", false))
	require.NoError(t, err)
	_, err = tr.Metainfo(t.Context(), "library/app", mi.Digest)
	require.NoError(t, err)
}
