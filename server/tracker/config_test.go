package tracker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/tracker"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	var cfg tracker.Config
	require.NoError(t, config.Decode(strings.NewReader("origins: [127.0.0.1:15000]\n"), &cfg))
	require.Equal(t, tracker.Config{
		Listen:           tracker.DefaultListen,
		AdminListen:      tracker.DefaultAdminListen,
		Origins:          []string{"127.0.0.1:15000"},
		Replicas:         3,
		PeerTTL:          30 * time.Second,
		AnnounceInterval: 3 * time.Second,
		MaxPeers:         16,
		MetainfoCache:    4096,
	}, cfg)

	doc := `listen: 0.0.0.0:7000
admin_listen: 127.0.0.1:7001
origins: [10.0.0.1:15000, "[fd00::2]:15000", origin-3.example:15000]
replicas: 2
peer_ttl: 1m
announce_interval: 5s
max_peers: 40
metainfo_cache: 10
announce:
  allow_loopback: true
  nat_cidrs: [10.0.0.0/8, "fd00::/8"]
`
	cfg = tracker.Config{}
	require.NoError(t, config.Decode(strings.NewReader(doc), &cfg))
	require.Equal(t, tracker.Config{
		Listen: "0.0.0.0:7000", AdminListen: "127.0.0.1:7001", Origins: []string{"10.0.0.1:15000", "[fd00::2]:15000", "origin-3.example:15000"},
		Replicas: 2, PeerTTL: time.Minute, AnnounceInterval: 5 * time.Second, MaxPeers: 40, MetainfoCache: 10,
		Announce: tracker.AnnounceConfig{AllowLoopback: true, NATCIDRs: []string{"10.0.0.0/8", "fd00::/8"}},
	}, cfg)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ doc, want string }{
		{"", "origins: required"},
		{"origins: [127.0.0.1:1]\nmax_peer: 3\n", "field max_peer not found"},
		{"origins: [127.0.0.1]\n", "origins[0]"},
		{"origins: [http://127.0.0.1:1]\n", "origins[0]"},
		{"origins: [127.0.0.1:1, 127.0.0.1:1]\n", "origins[1]: \"127.0.0.1:1\" is listed twice"},
		{"origins: [127.0.0.1:1]\nlisten: nope\n", "listen"},
		{"origins: [127.0.0.1:1]\nreplicas: -1\n", "replicas"},
		{"origins: [127.0.0.1:1]\npeer_ttl: -1s\n", "peer_ttl"},
		{"origins: [127.0.0.1:1]\npeer_ttl: 3s\n", "peer_ttl: 3s must be longer than announce_interval 3s"},
		{"origins: [127.0.0.1:1]\nannounce_interval: -3s\n", "announce_interval"},
		{"origins: [127.0.0.1:1]\nmax_peers: -1\n", "max_peers"},
		{"origins: [127.0.0.1:1]\nmax_peers: 100000\n", "max_peers"},
		{"origins: [127.0.0.1:1]\nmetainfo_cache: -5\n", "metainfo_cache"},
		{"origins: [127.0.0.1:1]\npeer_ttl: soon\n", "peer_ttl: line 2: cannot unmarshal !!str `soon`"},
		{"origins: [127.0.0.1:1]\nannounce:\n  nat_cidrs: [10.0.0.1]\n", `announce.nat_cidrs: "10.0.0.1" is not a network in CIDR notation`},
		{"origins: [127.0.0.1:1]\nannounce:\n  nat_cidrs: [\"::/0\"]\n", `announce.nat_cidrs: "::/0" is wider than /8`},
		{"origins: [127.0.0.1:1]\nannounce:\n  nat_cidrs: [\"0.0.0.0/1\", \"128.0.0.0/1\"]\n", `announce.nat_cidrs: "0.0.0.0/1" is wider than /8`},
		{"origins: [127.0.0.1:1]\nannounce:\n  allow_lo: true\n", "field allow_lo not found"},
		{"origins: [127.0.0.1:1]\nadmin_listen: nope\n", `admin_listen: "nope" is not host:port`},
		{"origins: [127.0.0.1:1]\nadmin_listen: 0.0.0.0:16100\n", `admin_listen: "0.0.0.0:16100" overlaps listen "127.0.0.1:16100"`},
	} {
		var cfg tracker.Config
		err := config.Decode(strings.NewReader(tc.doc), &cfg)
		require.Error(t, err, tc.doc)
		require.ErrorIs(t, err, config.ErrInvalid)
		require.ErrorContains(t, err, tc.want, tc.doc)
	}
}

func TestNewRefusesBadInput(t *testing.T) {
	t.Parallel()
	_, err := tracker.New(tracker.Config{}, tracker.Deps{})
	require.ErrorContains(t, err, "origins: required")
	_, err = tracker.New(tracker.Config{Origins: []string{"127.0.0.1:1"}}, tracker.Deps{})
	require.ErrorContains(t, err, "no listener")
}
