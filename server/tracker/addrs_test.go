package tracker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// verified is the connection state of a client whose certificate (CN cn, organizations
// groups, the given SANs) the handshake verified.
func verified(cn string, groups []string, ips []string, names []string) *tls.ConnectionState {
	leaf := &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: groups}, DNSNames: names}
	for _, ip := range ips {
		leaf.IPAddresses = append(leaf.IPAddresses, net.ParseIP(ip))
	}
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf}}}
}

func TestCheckAnnounce(t *testing.T) {
	t.Parallel()
	agent := verified("agent-7", []string{"agent"}, []string{"192.0.2.7", "2001:db8::7"}, []string{"agent-7.example"})
	ops := verified("ops", []string{"admin"}, nil, nil)
	bound, unbound := wire.BoundPeerID("agent-7").String(), wire.RandomPeerID().String()
	plain := newAddrPolicy(AnnounceConfig{})
	dev := newAddrPolicy(AnnounceConfig{AllowLoopback: true})
	nat := newAddrPolicy(AnnounceConfig{NATCIDRs: []string{"10.0.0.0/8", "192.168.7.1/32"}})
	for _, tc := range []struct {
		name   string
		p      addrPolicy
		cs     *tls.ConnectionState
		remote string
		id     string
		addr   string
		reason string // "" accepts
		want   string // in the refusal's message
	}{
		{"its own host", plain, agent, "198.51.100.1:40000", bound, "198.51.100.1:16001", "", ""},
		{"an IPv4-mapped spelling of it", plain, agent, "[::ffff:198.51.100.1]:40000", bound, "[::ffff:198.51.100.1]:16001", "", ""},
		{"an IP its certificate names", plain, agent, "198.51.100.1:40000", bound, "192.0.2.7:16001", "", ""},
		{"an IPv6 address its certificate names", plain, agent, "198.51.100.1:40000", bound, "[2001:db8::7]:16001", "", ""},
		{"another host", plain, agent, "198.51.100.1:40000", bound, "203.0.113.5:22", reasonNotOwn, "agent-7 may announce only its own addresses"},
		{"a peer id not bound to its certificate", plain, agent, "198.51.100.1:40000", unbound, "198.51.100.1:16001", reasonPeerID, "not bound to the certificate of agent-7"},
		{"a peer id bound to another certificate", plain, agent, "198.51.100.1:40000", wire.BoundPeerID("agent-8").String(), "198.51.100.1:16001", reasonPeerID, "not bound"},
		{"loopback on a tracker of many hosts", plain, agent, "127.0.0.1:40000", bound, "127.0.0.1:16001", reasonLoopback, "allow_loopback"},
		{"loopback in a cluster on one host", dev, agent, "127.0.0.1:40000", bound, "127.0.0.9:16001", "", ""},
		{"loopback from another host, even on one host", dev, nil, "198.51.100.1:40000", unbound, "127.0.0.1:22", reasonNotOwn, "only its own address"},
		{"an operator anywhere", plain, ops, "198.51.100.1:40000", unbound, "203.0.113.5:22", "", ""},
		{"an operator, not at loopback", plain, ops, "198.51.100.1:40000", unbound, "127.0.0.1:22", reasonLoopback, "allow_loopback"},
		{"no TLS: its own host", plain, nil, "198.51.100.1:40000", unbound, "198.51.100.1:16001", "", ""},
		{"no TLS: another host", plain, nil, "198.51.100.1:40000", unbound, "203.0.113.5:22", reasonNotOwn, "only its own address"},
		{"NAT: from the network to the network", nat, nil, "192.168.7.1:40000", unbound, "10.2.0.7:16001", "", ""},
		{"NAT: within the network", nat, agent, "10.9.0.1:40000", bound, "10.2.0.7:16001", "", ""},
		{"NAT: from outside the networks", nat, nil, "198.51.100.1:40000", unbound, "10.2.0.7:16001", reasonNotOwn, "nat_cidrs"},
		{"NAT: to outside the networks", nat, nil, "10.9.0.1:40000", unbound, "203.0.113.5:22", reasonNotOwn, "only its own address"},
		{"a name", plain, ops, "198.51.100.1:40000", unbound, "agent-7.example:16001", reasonAddress, "not a name"},
	} {
		req := announce.Request{PeerID: tc.id, Addr: tc.addr}
		_, ap, reason, err := tc.p.checkAnnounce(tc.cs, tc.remote, req)
		require.Equal(t, tc.reason, reason, "%s: %v", tc.name, err)
		if tc.reason == "" {
			require.NoError(t, err, tc.name)
			want, perr := announce.ParseAddr(tc.addr)
			require.NoError(t, perr)
			require.Equal(t, want, ap, tc.name)
			continue
		}
		var e *errcode.Error
		require.ErrorAs(t, err, &e, tc.name)
		require.Contains(t, e.Message, tc.want, tc.name)
		status := http.StatusForbidden
		if tc.reason == reasonAddress {
			status = http.StatusBadRequest
		}
		require.Equal(t, status, e.Status, tc.name)
	}
}

// TestPeerTableTakeover: a live entry belongs to the host that announced it. Another host can
// neither take its address under a new peer id nor move its peer id; the same host can (a
// restart); and once the entry expires anyone can.
func TestPeerTableTakeover(t *testing.T) {
	t.Parallel()
	p := newAddrPolicy(AnnounceConfig{AllowLoopback: true})
	tbl := newPeerTable(DefaultPeerTTL, 16, p.sameHost, nil)
	d := digest.FromString("takeover")
	now := time.Unix(1_700_000_000, 0)
	hostA := announcer{from: netip.MustParseAddr("10.0.0.1")}
	hostB := announcer{from: netip.MustParseAddr("10.0.0.2")}
	victim := announce.Request{Digest: d, PeerID: wire.RandomPeerID().String(), Addr: "10.0.0.1:16001"}
	me := announce.Request{Digest: d, PeerID: wire.RandomPeerID().String(), Addr: "10.0.0.3:16001"}
	meHost := announcer{from: netip.MustParseAddr("10.0.0.3")}
	handout := func() []announce.Peer {
		t.Helper()
		out, err := tbl.announce(me, meHost, now, nil)
		require.NoError(t, err)
		return out
	}
	_, err := tbl.announce(victim, hostA, now, nil)
	require.NoError(t, err)

	thief := victim
	thief.PeerID = wire.RandomPeerID().String()
	_, err = tbl.announce(thief, hostB, now, nil)
	requireConflict(t, err, "addr 10.0.0.1:16001")
	hijack := victim
	hijack.Addr = "10.0.0.2:16001"
	_, err = tbl.announce(hijack, hostB, now, nil)
	requireConflict(t, err, "peer_id "+victim.PeerID)
	// The same host from another certificate is not the same host.
	_, err = tbl.announce(thief, announcer{from: hostA.from, holder: "agent-9"}, now, nil)
	requireConflict(t, err, "addr")
	require.Equal(t, []announce.Peer{{ID: victim.PeerID, Addr: victim.Addr}}, handout(), "the victim's entry is untouched")

	restarted := victim
	restarted.PeerID = wire.RandomPeerID().String()
	_, err = tbl.announce(restarted, hostA, now, nil)
	require.NoError(t, err)
	require.Equal(t, []announce.Peer{{ID: restarted.PeerID, Addr: victim.Addr}}, handout(), "a restart replaces the entry")

	now = now.Add(DefaultPeerTTL)
	_, err = tbl.announce(me, meHost, now, nil) // keeps the requester alive
	require.NoError(t, err)
	_, err = tbl.announce(thief, hostB, now, nil)
	require.NoError(t, err, "an expired entry is anyone's")
	require.Equal(t, []announce.Peer{{ID: thief.PeerID, Addr: victim.Addr}}, handout())
}

func requireConflict(t *testing.T, err error, want string) {
	t.Helper()
	var e *errcode.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, http.StatusConflict, e.Status)
	require.Equal(t, errcode.CodePeerConflict, e.Code)
	require.Contains(t, e.Message, want)
}

// TestOriginPeerAddr: an origin may advertise a name; the tracker resolves it and hands out an
// IP literal the protocol accepts, so that agents never resolve it.
func TestOriginPeerAddr(t *testing.T) {
	t.Parallel()
	names := map[string][]netip.Addr{
		"origin-0.origin.svc": {netip.MustParseAddr("169.254.1.1"), netip.MustParseAddr("10.4.0.7")},
		"metadata.internal":   {netip.MustParseAddr("169.254.169.254")},
		"localhost":           {netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1")},
	}
	var asked []string
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		asked = append(asked, host)
		if ips, ok := names[host]; ok {
			return ips, nil
		}
		return nil, errors.New("no such host")
	}
	for _, tc := range []struct {
		loopback   bool
		addr, want string // want "" is a refusal
	}{
		{false, "10.4.0.7:16001", "10.4.0.7:16001"},
		{false, "origin-0.origin.svc:16001", "10.4.0.7:16001"},
		{false, "metadata.internal:80", ""},
		{false, "nowhere.example:80", ""},
		{false, "169.254.169.254:80", ""},
		{false, "127.0.0.1:16001", ""},
		{false, "localhost:16001", ""},
		{true, "localhost:16001", "[::1]:16001"},
		{true, "127.0.0.1:16001", "127.0.0.1:16001"},
	} {
		o := &originPeers{policy: newAddrPolicy(AnnounceConfig{AllowLoopback: tc.loopback}), lookup: lookup}
		ap, err := o.peerAddr(t.Context(), tc.addr)
		if tc.want == "" {
			require.Error(t, err, tc.addr)
			continue
		}
		require.NoError(t, err, tc.addr)
		require.Equal(t, tc.want, ap.String(), tc.addr)
	}
	require.NotContains(t, asked, "10.4.0.7", "an IP literal is not looked up")
}

// TestCheckAPI: an announce's API address is kept by the rule of its addr, certificates
// included: an IP the certificate names, anything for an operator, loopback only on one host.
func TestCheckAPI(t *testing.T) {
	t.Parallel()
	agent := verified("agent-7", []string{"agent"}, []string{"192.0.2.7"}, nil)
	ops := verified("ops", []string{"admin"}, nil, nil)
	plain := newAddrPolicy(AnnounceConfig{})
	dev := newAddrPolicy(AnnounceConfig{AllowLoopback: true})
	for _, tc := range []struct {
		name string
		p    addrPolicy
		cs   *tls.ConnectionState
		from string
		api  string
		want string // "" refuses, unless api is ""
	}{
		{"none", plain, agent, "198.51.100.1", "", ""},
		{"its own host", plain, agent, "198.51.100.1", "198.51.100.1:16000", "198.51.100.1:16000"},
		{"an IP its certificate names", plain, agent, "198.51.100.1", "192.0.2.7:16000", "192.0.2.7:16000"},
		{"another host", plain, agent, "198.51.100.1", "203.0.113.5:16000", ""},
		{"no TLS: another host", plain, nil, "198.51.100.1", "203.0.113.5:16000", ""},
		{"an operator anywhere", plain, ops, "198.51.100.1", "203.0.113.5:16000", "203.0.113.5:16000"},
		{"an operator, not at loopback", plain, ops, "198.51.100.1", "127.0.0.1:16000", ""},
		{"loopback on many hosts", plain, nil, "127.0.0.1", "127.0.0.1:16000", ""},
		{"loopback on one host", dev, nil, "127.0.0.1", "127.0.0.3:16000", "127.0.0.3:16000"},
		{"mapped spelling", plain, nil, "198.51.100.1", "[::ffff:198.51.100.1]:16000", "198.51.100.1:16000"},
	} {
		who := announcer{from: netip.MustParseAddr(tc.from)}
		if id, ok := pki.PeerIdentity(tc.cs); ok {
			who.holder, who.admin = id.Name, id.In(pki.GroupAdmin)
		}
		got, err := tc.p.checkAPI(tc.cs, who, tc.api)
		require.Equal(t, tc.want, got, "%s: %v", tc.name, err)
		if tc.want == "" && tc.api != "" {
			require.Error(t, err, tc.name)
		} else {
			require.NoError(t, err, tc.name)
		}
	}
}
