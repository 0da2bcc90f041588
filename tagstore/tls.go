package tagstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// GroupBuildIndex is the certificate group (an Organization of the Subject) of build-index
// nodes: a Raft peer must be in it, and its certificate must name its server id as the common
// name or a DNS name. It is the cluster PKI's group of the same name; tagstore cannot import
// the server's pki package, so the string is repeated here.
const GroupBuildIndex = "build-index"

// tlsPolicy is the mutual TLS of the Raft transport, built from the TLS configurations the
// Store was given. Those are treated as opaque (they may reload certificates through
// callbacks): they are cloned, never changed, and their own verification runs before the
// checks added here.
type tlsPolicy struct {
	serverCfg *tls.Config
	// clientCfg is completed for each dial by client.
	clientCfg *tls.Config
}

// newTLSPolicy prepares the server and client configurations of the Raft transport:
//
//   - Inbound, a peer must present a certificate that chains to the configured CA (client
//     authentication is required and verified, whatever the configuration given said), in the
//     build-index group, naming a valid server id.
//   - Outbound, the server's certificate must chain to the configured CA (its RootCAs, or the
//     configuration's own VerifyConnection when it has no RootCAs, as a reloading PKI does),
//     be in the build-index group, and name the server id that the Raft configuration puts at
//     the dialed address when the address is in it. Host names are not checked: Raft peers
//     are named by their server id, not by the address they are reached at.
func newTLSPolicy(server, client *tls.Config) (*tlsPolicy, error) {
	if server == nil || client == nil {
		return nil, errors.New("raft TLS needs both a server and a client configuration")
	}
	if client.RootCAs == nil && client.VerifyConnection == nil && client.InsecureSkipVerify {
		return nil, errors.New("raft TLS: the client configuration verifies no server certificate (no RootCAs, no VerifyConnection, InsecureSkipVerify)")
	}
	p := &tlsPolicy{serverCfg: server.Clone(), clientCfg: client.Clone()}
	requireClientCert(p.serverCfg)
	if get := server.GetConfigForClient; get != nil {
		p.serverCfg.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(hi)
			if err != nil || c == nil {
				return c, err
			}
			c = c.Clone()
			requireClientCert(c)
			return c, nil
		}
	}
	return p, nil
}

// requireClientCert makes c require and verify a client certificate, and check that it is a
// build-index node's, after c's own VerifyConnection.
func requireClientCert(c *tls.Config) {
	c.ClientAuth = tls.RequireAndVerifyClientCert
	own := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if own != nil {
			if err := own(cs); err != nil {
				return err
			}
		}
		if len(cs.VerifiedChains) == 0 {
			return errors.New("the raft peer presented no certificate verified by the cluster CA")
		}
		leaf := cs.VerifiedChains[0][0]
		if err := checkPeerCert(leaf, ""); err != nil {
			return fmt.Errorf("raft peer: %w", err)
		}
		if !slices.ContainsFunc(certNames(leaf), func(n string) bool { return ValidateNodeID(n) == nil }) {
			return fmt.Errorf("raft peer: the certificate (%s) names no valid server id", describeCert(leaf))
		}
		return nil
	}
}

// server wraps an accepted connection.
func (p *tlsPolicy) server(c net.Conn) *tls.Conn { return tls.Server(c, p.serverCfg) }

// client wraps a dialed connection to address, whose certificate must name want (when not
// empty).
func (p *tlsPolicy) client(c net.Conn, address string, want raft.ServerID) *tls.Conn {
	cfg := p.clientCfg.Clone()
	own, ownSkips, roots := cfg.VerifyConnection, cfg.InsecureSkipVerify, cfg.RootCAs
	// The chain is verified here against the configured roots, without the host name check
	// that crypto/tls would add: a Raft peer is known by its server id.
	cfg.InsecureSkipVerify = true
	if host, _, err := net.SplitHostPort(address); err == nil && cfg.ServerName == "" {
		cfg.ServerName = host // for SNI, and for a VerifyConnection that checks host names
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the raft peer presented no certificate")
		}
		if roots != nil || !ownSkips {
			chains, err := verifyChain(cs.PeerCertificates, roots)
			if err != nil {
				return fmt.Errorf("raft peer %s: %w", address, err)
			}
			cs.VerifiedChains = chains
		}
		if own != nil {
			if err := own(cs); err != nil {
				return err
			}
		}
		if err := checkPeerCert(cs.PeerCertificates[0], want); err != nil {
			return fmt.Errorf("raft peer %s: %w", address, err)
		}
		return nil
	}
	return tls.Client(c, cfg)
}

// verifyChain verifies a server's chain against roots (the system roots when nil).
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool) ([][]*x509.Certificate, error) {
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return nil, fmt.Errorf("certificate (%s) not verified by the cluster CA: %w", describeCert(certs[0]), err)
	}
	return chains, nil
}

// checkPeerCert checks that a verified certificate is a build-index node's and, when want is
// set, that it names want.
func checkPeerCert(c *x509.Certificate, want raft.ServerID) error {
	if !slices.Contains(c.Subject.Organization, GroupBuildIndex) {
		return fmt.Errorf("the certificate (%s) is not in group %q", describeCert(c), GroupBuildIndex)
	}
	if want != "" && !slices.Contains(certNames(c), string(want)) {
		return fmt.Errorf("the certificate (%s) does not name server %s, which the raft configuration puts at this address", describeCert(c), want)
	}
	return nil
}

// certNames are the names a certificate gives its holder: the common name and DNS names.
func certNames(c *x509.Certificate) []string {
	names := slices.Clone(c.DNSNames)
	if c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	return names
}

func describeCert(c *x509.Certificate) string {
	desc := fmt.Sprintf("CN=%q O=%q", c.Subject.CommonName, c.Subject.Organization)
	if len(c.DNSNames) > 0 {
		desc += " DNS=" + strings.Join(c.DNSNames, ",")
	}
	return desc
}

// checkOwnCertificate refuses to start a node whose own certificate, as its TLS configurations
// present it, is not a build-index node's naming nodeID: its peers would refuse it, or (worse)
// take it for another node.
func checkOwnCertificate(nodeID string, server, client *tls.Config) error {
	var certs []*tls.Certificate
	if c, err := serverCertificate(server); err != nil {
		return fmt.Errorf("server certificate: %w", err)
	} else if c != nil {
		certs = append(certs, c)
	}
	switch {
	case client.GetClientCertificate != nil:
		c, err := client.GetClientCertificate(&tls.CertificateRequestInfo{})
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		certs = append(certs, c)
	case len(client.Certificates) > 0:
		certs = append(certs, &client.Certificates[0])
	}
	if len(certs) == 0 {
		return errors.New("the TLS configuration holds no certificate")
	}
	for _, c := range certs {
		if c == nil || len(c.Certificate) == 0 {
			return errors.New("the TLS configuration holds an empty certificate")
		}
		leaf := c.Leaf
		if leaf == nil {
			var err error
			if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				return fmt.Errorf("parse this node's certificate: %w", err)
			}
		}
		if err := CheckNodeCertificate(nodeID, leaf); err != nil {
			return err
		}
	}
	return nil
}

// CheckNodeCertificate reports whether leaf can be node nodeID's certificate: it names nodeID
// (common name or DNS name) in group build-index. A node checks its own at Open, and its
// server checks every certificate it reloads later, so a rotation cannot swap in one its peers
// would refuse.
func CheckNodeCertificate(nodeID string, leaf *x509.Certificate) error {
	if !slices.Contains(certNames(leaf), nodeID) || !slices.Contains(leaf.Subject.Organization, GroupBuildIndex) {
		return fmt.Errorf("this node's certificate (%s) does not name its server id %q in group %q: "+
			"a build-index node's certificate must carry its raft.node_id as the common name or a DNS name, "+
			"and %q as an organization", describeCert(leaf), nodeID, GroupBuildIndex, GroupBuildIndex)
	}
	return nil
}

// serverCertificate returns the certificate a server configuration presents, through its
// callbacks when it has them (nil when it has none).
func serverCertificate(c *tls.Config) (*tls.Certificate, error) {
	hello := &tls.ClientHelloInfo{}
	if c.GetConfigForClient != nil {
		inner, err := c.GetConfigForClient(hello)
		if err != nil {
			return nil, err
		}
		if inner != nil {
			c = inner
		}
	}
	if c.GetCertificate != nil {
		return c.GetCertificate(hello)
	}
	if len(c.Certificates) > 0 {
		return &c.Certificates[0], nil
	}
	return nil, nil
}
