package announce_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

func validRequest() announce.Request {
	return announce.Request{
		Namespace: "library/ubuntu",
		Digest:    digest.FromString("blob"),
		PeerID:    wire.RandomPeerID().String(),
		Addr:      "10.0.0.1:16001",
	}
}

func TestRequestValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, validRequest().Validate())
	for _, tc := range []struct {
		name   string
		mutate func(*announce.Request)
		want   string // substring naming the field
	}{
		{"no namespace", func(r *announce.Request) { r.Namespace = "" }, "namespace: required"},
		{"upper-case namespace", func(r *announce.Request) { r.Namespace = "Library/ubuntu" }, "namespace"},
		{"traversal namespace", func(r *announce.Request) { r.Namespace = "a/../b" }, "namespace"},
		{"long namespace", func(r *announce.Request) { r.Namespace = strings.Repeat("a", 256) }, "namespace"},
		{"no digest", func(r *announce.Request) { r.Digest = "" }, "digest: required"},
		{"short digest", func(r *announce.Request) { r.Digest = "sha256:abc" }, "digest"},
		{"upper-case digest", func(r *announce.Request) { r.Digest = digest.Digest(strings.ToUpper(string(r.Digest))) }, "digest"},
		{"sha512 digest", func(r *announce.Request) { r.Digest = digest.SHA512.FromString("x") }, "sha256"},
		{"no peer id", func(r *announce.Request) { r.PeerID = "" }, "peer_id"},
		{"short peer id", func(r *announce.Request) { r.PeerID = r.PeerID[:38] }, "peer_id"},
		{"upper-case peer id", func(r *announce.Request) { r.PeerID = strings.Repeat("AB", 20) }, "peer_id"},
		{"non-hex peer id", func(r *announce.Request) { r.PeerID = strings.Repeat("zz", 20) }, "peer_id"},
		{"no addr", func(r *announce.Request) { r.Addr = "" }, "addr"},
		{"addr without port", func(r *announce.Request) { r.Addr = "10.0.0.1" }, "addr"},
		{"named port", func(r *announce.Request) { r.Addr = "10.0.0.1:http" }, "port"},
		{"port 0", func(r *announce.Request) { r.Addr = "10.0.0.1:0" }, "port"},
		{"port too large", func(r *announce.Request) { r.Addr = "10.0.0.1:65536" }, "port"},
		{"unspecified v4", func(r *announce.Request) { r.Addr = "0.0.0.0:1" }, "unspecified"},
		{"unspecified v6", func(r *announce.Request) { r.Addr = "[::]:1" }, "unspecified"},
		{"empty host", func(r *announce.Request) { r.Addr = ":1" }, "host"},
		{"multicast", func(r *announce.Request) { r.Addr = "224.0.0.1:1" }, "multicast"},
		{"zoned", func(r *announce.Request) { r.Addr = "[fe80::1%eth0]:1" }, "zoned"},
		{"bad host name", func(r *announce.Request) { r.Addr = "host_name:1" }, "not a name"},
		{"host name", func(r *announce.Request) { r.Addr = "evil.example:80" }, "not a name"},
		{"localhost", func(r *announce.Request) { r.Addr = "localhost:80" }, "not a name"},
		{"all-numeric name", func(r *announce.Request) { r.Addr = "999.1.1.1:80" }, "not a name"},
		{"leading zeros", func(r *announce.Request) { r.Addr = "010.0.0.1:80" }, "not a name"},
		{"link-local v4", func(r *announce.Request) { r.Addr = "169.254.169.254:80" }, "link-local"},
		{"link-local v6", func(r *announce.Request) { r.Addr = "[fe80::1]:80" }, "link-local"},
		{"mapped link-local", func(r *announce.Request) { r.Addr = "[::ffff:169.254.169.254]:80" }, "link-local"},
		{"broadcast", func(r *announce.Request) { r.Addr = "255.255.255.255:1" }, "broadcast"},
		{"this network", func(r *announce.Request) { r.Addr = "0.1.2.3:1" }, "unspecified"},
		{"mapped unspecified", func(r *announce.Request) { r.Addr = "[::ffff:0.0.0.0]:1" }, "unspecified"},
		{"multicast v6", func(r *announce.Request) { r.Addr = "[ff02::1]:80" }, "multicast"},
		{"class E", func(r *announce.Request) { r.Addr = "240.0.0.1:80" }, "reserved"},
		{"site-local v6", func(r *announce.Request) { r.Addr = "[fec0::1]:80" }, "site-local"},
		{"IPv4-compatible loopback", func(r *announce.Request) { r.Addr = "[::7f00:1]:80" }, "embedded in IPv6"},
		{"NAT64 loopback", func(r *announce.Request) { r.Addr = "[64:ff9b::7f00:1]:80" }, "embedded in IPv6"},
		{"NAT64 local-use link-local", func(r *announce.Request) { r.Addr = "[64:ff9b:1::a9fe:a9fe]:80" }, "embedded in IPv6"},
		{"negative have", func(r *announce.Request) { r.Have, r.Pieces = -1, 4 }, "negative"},
		{"negative pieces", func(r *announce.Request) { r.Pieces = -4 }, "negative"},
		{"have above pieces", func(r *announce.Request) { r.Have, r.Pieces = 5, 4 }, "have: 5 is more than pieces (4)"},
		{"have without pieces", func(r *announce.Request) { r.Have = 1 }, "have: 1 is more than pieces (0)"},
		{"too many pieces", func(r *announce.Request) { r.Have, r.Pieces = 0, metainfo.MaxPieces+1 }, "pieces:"},
		{"api host name", func(r *announce.Request) { r.API = "agent.example:16000" }, "api: "},
		{"api without port", func(r *announce.Request) { r.API = "10.0.0.1" }, "api: "},
		{"api unspecified", func(r *announce.Request) { r.API = "0.0.0.0:16000" }, "api: \"0.0.0.0:16000\": unspecified"},
		{"api link-local", func(r *announce.Request) { r.API = "169.254.169.254:80" }, "api: "},
	} {
		r := validRequest()
		tc.mutate(&r)
		err := r.Validate()
		require.Error(t, err, tc.name)
		require.ErrorIs(t, err, announce.ErrInvalid, "%s: %v", tc.name, err)
		require.ErrorContains(t, err, tc.want, tc.name)
	}
	// Progress and api are optional; when given, within their bounds.
	for _, tc := range []struct {
		have, pieces int
		api          string
	}{{0, 0, ""}, {0, 1, ""}, {3, 3, "10.0.0.1:16000"}, {0, metainfo.MaxPieces, "[2001:db8::7]:16000"}, {7, 9, "127.0.0.1:16000"}} {
		r := validRequest()
		r.Have, r.Pieces, r.API = tc.have, tc.pieces, tc.api
		require.NoError(t, r.Validate(), "%+v", tc)
	}
	for _, addr := range []string{"127.0.0.1:1", "127.0.0.9:16001", "[::1]:65535", "10.0.0.7:16001", "[2001:db8::7]:16001", "223.255.255.254:1"} {
		r := validRequest()
		r.Addr = addr
		require.NoError(t, r.Validate(), addr)
	}
}

// ParseAddr gives each address one spelling, so that a tracker cannot be handed one peer
// address in two forms.
func TestParseAddrCanonical(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"10.0.0.7:16001":           "10.0.0.7:16001",
		"[::ffff:10.0.0.7]:16001":  "10.0.0.7:16001",
		"[2001:DB8:0::7]:00016001": "[2001:db8::7]:16001",
	} {
		ap, err := announce.ParseAddr(in)
		require.NoError(t, err, in)
		require.Equal(t, want, ap.String(), in)
	}
}

// Namespaces follow the origins' grammar, and a bad one is ErrInvalid.
func TestCheckNamespace(t *testing.T) {
	t.Parallel()
	for _, ns := range []string{"a", "library/ubuntu", "a.b_c-d", strings.Repeat("a", 255)} {
		require.NoError(t, announce.CheckNamespace(ns), ns)
	}
	for _, ns := range []string{"", "a..b", "-a", "a//b", "A", "a/../b", strings.Repeat("a", 256)} {
		require.ErrorIs(t, announce.CheckNamespace(ns), announce.ErrInvalid, ns)
	}
}

func TestParsePeerID(t *testing.T) {
	t.Parallel()
	id := wire.RandomPeerID()
	got, err := announce.ParsePeerID(id.String())
	require.NoError(t, err)
	require.Equal(t, id, got)
	_, err = announce.ParsePeerID(id.String() + "00")
	require.ErrorIs(t, err, announce.ErrInvalid)
}

func TestPeerValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, announce.Peer{ID: wire.RandomPeerID().String(), Addr: "10.0.0.2:1"}.Validate())
	require.ErrorIs(t, announce.Peer{ID: "x", Addr: "10.0.0.2:1"}.Validate(), announce.ErrInvalid)
	require.ErrorIs(t, announce.Peer{ID: wire.RandomPeerID().String(), Addr: "10.0.0.2"}.Validate(), announce.ErrInvalid)
}

func TestMetainfoPath(t *testing.T) {
	t.Parallel()
	d := digest.FromString("x")
	require.Equal(t, "/namespace/library%2Fubuntu/blobs/"+d.String()+"/metainfo", announce.MetainfoPath("library/ubuntu", d))
}

func TestResponseInterval(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s    float64
		want time.Duration
	}{
		{3, 3 * time.Second},
		{0.5, 500 * time.Millisecond},
		{0, 0},
		{-1, 0},
		{math.NaN(), 0},
		{math.Inf(1), time.Hour},
		{1e300, time.Hour},
	} {
		require.Equal(t, tc.want, announce.Response{IntervalSeconds: tc.s}.Interval(), "%v", tc.s)
	}
}

// TestJSONKeys pins the wire names of the documents.
func TestJSONKeys(t *testing.T) {
	t.Parallel()
	r := validRequest()
	r.Complete = true
	b, err := json.Marshal(r)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	require.Equal(t, map[string]any{
		"namespace": r.Namespace, "digest": r.Digest.String(), "peer_id": r.PeerID, "addr": r.Addr, "complete": true,
	}, m, "an announce without progress or api is what older announcers send")
	r.Have, r.Pieces, r.API = 2, 5, "10.0.0.1:16000"
	b, err = json.Marshal(r)
	require.NoError(t, err)
	m = nil
	require.NoError(t, json.Unmarshal(b, &m))
	require.Equal(t, map[string]any{
		"namespace": r.Namespace, "digest": r.Digest.String(), "peer_id": r.PeerID, "addr": r.Addr, "complete": true,
		"have": 2.0, "pieces": 5.0, "api": "10.0.0.1:16000",
	}, m)
	b, err = json.Marshal(announce.Response{Peers: []announce.Peer{{ID: "a", Addr: "b", Origin: true, Complete: true}, {ID: "c", Addr: "d"}}, IntervalSeconds: 3})
	require.NoError(t, err)
	require.JSONEq(t, `{"peers":[{"peer_id":"a","addr":"b","origin":true,"complete":true},{"peer_id":"c","addr":"d"}],"interval_s":3}`, string(b))
}
