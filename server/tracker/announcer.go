package tracker

import (
	"crypto/tls"
	"net"
	"net/http"
	"strings"

	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// checkAnnouncedAddr refuses, with TLS, an announce that puts a peer at an address its caller
// does not hold. An agent's or origin's certificate may announce only an address on the host
// the request came from, or one its certificate names (an IP address or DNS name of its
// Subject Alternative Names, which is how a multi-homed host advertises another interface):
// otherwise one stolen agent certificate could aim every agent of a swarm at any host and port.
// An operator (group admin) may announce any address. Without TLS nothing is checked: the
// network is trusted by construction, as everywhere else.
func checkAnnouncedAddr(cs *tls.ConnectionState, remoteAddr, addr string) error {
	id, ok := pki.PeerIdentity(cs)
	if !ok || id.In(pki.GroupAdmin) {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return errcode.Errorf(http.StatusBadRequest, errcode.CodeBodyInvalid, "announce: addr %q is not host:port", addr)
	}
	if from, _, err := net.SplitHostPort(remoteAddr); err == nil && sameHost(host, from) {
		return nil
	}
	leaf := cs.VerifiedChains[0][0]
	for _, ip := range leaf.IPAddresses {
		if sameHost(host, ip.String()) {
			return nil
		}
	}
	for _, name := range leaf.DNSNames {
		if strings.EqualFold(strings.TrimSuffix(host, "."), strings.TrimSuffix(name, ".")) {
			return nil
		}
	}
	return errcode.Errorf(http.StatusForbidden, errcode.CodeDenied,
		"%s may announce only its own addresses (the host it connects from, or one its certificate names), not %s", id.Name, addr)
}

// sameHost reports whether a and b are the same IP address, in any spelling (an IPv4 address
// and its IPv4-mapped IPv6 form included).
func sameHost(a, b string) bool {
	ia, ib := net.ParseIP(a), net.ParseIP(b)
	return ia != nil && ib != nil && ia.Equal(ib)
}
