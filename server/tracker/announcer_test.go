package tracker

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
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

func TestCheckAnnouncedAddr(t *testing.T) {
	t.Parallel()
	agent := verified("agent-7", []string{"agent"}, []string{"192.0.2.7", "2001:db8::7"}, []string{"agent-7.example"})
	for _, tc := range []struct {
		name   string
		cs     *tls.ConnectionState
		remote string
		addr   string
		ok     bool
	}{
		{"the host it connects from", agent, "198.51.100.1:40000", "198.51.100.1:16001", true},
		{"an IPv4-mapped spelling of it", agent, "[::ffff:198.51.100.1]:40000", "198.51.100.1:16001", true},
		{"an IP its certificate names", agent, "198.51.100.1:40000", "192.0.2.7:16001", true},
		{"an IPv6 address its certificate names", agent, "198.51.100.1:40000", "[2001:db8::7]:16001", true},
		{"a DNS name its certificate names", agent, "198.51.100.1:40000", "AGENT-7.example.:16001", true},
		{"another host", agent, "198.51.100.1:40000", "203.0.113.5:22", false},
		{"another name", agent, "198.51.100.1:40000", "victim.example:16001", false},
		{"an operator anywhere", verified("ops", []string{"admin"}, nil, nil), "198.51.100.1:40000", "203.0.113.5:22", true},
		{"no TLS: a trusted network", nil, "198.51.100.1:40000", "203.0.113.5:22", true},
		{"unverified: guardAnnounces refuses it before", &tls.ConnectionState{PeerCertificates: agent.PeerCertificates}, "198.51.100.1:40000", "203.0.113.5:22", true},
	} {
		err := checkAnnouncedAddr(tc.cs, tc.remote, tc.addr)
		if tc.ok {
			require.NoError(t, err, tc.name)
			continue
		}
		var e *errcode.Error
		require.ErrorAs(t, err, &e, tc.name)
		require.Equal(t, http.StatusForbidden, e.Status, tc.name)
		require.Equal(t, errcode.CodeDenied, e.Code, tc.name)
		require.Contains(t, e.Message, "agent-7 may announce only its own addresses", tc.name)
	}
}
