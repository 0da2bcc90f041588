package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
)

// The swarm's peer connections (P2P) are mutual TLS like every other link, with two differences
// that come from how peers find each other. A peer is dialled at the address the tracker handed
// out, which its certificate need not name (one certificate may serve a whole fleet of agents),
// so the dialler verifies the chain against the CA but not a host name; who the peer is, is
// decided after the swarm's own handshake, from the certificate's holder and groups and the peer
// id it claims (PeerIdentity's caller checks that the id is bound to the holder). And both sides
// speak TLS 1.3 only, with a protocol name of their own, so that neither a browser nor an HTTPS
// client of another port ever gets as far as the swarm's handshake.

// PeerProtocol is the ALPN name of the swarm's protocol over TLS.
const PeerProtocol = "krakenctl-p2p/1"

// Errors of PeerIdentity.
var (
	// ErrNotTLS: the connection is plain TCP where the swarm expects TLS.
	ErrNotTLS = errors.New("not a TLS connection")
)

// PeerListener returns ln serving the swarm's TLS: the current certificate, and a client
// certificate from the current CA required of every peer. The handshake runs on the first
// Read or Write of an accepted connection (or its HandshakeContext), so the acceptor bounds it
// with a deadline of its own.
func (p *Provider) PeerListener(ln net.Listener) net.Listener {
	return tls.NewListener(ln, &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return p.mat.Load().peer, nil
		},
	})
}

// DialPeer connects to a swarm peer at addr and completes the TLS handshake: the current
// certificate presented, and the peer's verified against the current CA (not against addr's
// host; see above). d makes the TCP connection; ctx bounds both.
func (p *Provider) DialPeer(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &p.mat.Load().cert, nil
		},
		NextProtos:                  []string{PeerProtocol},
		DynamicRecordSizingDisabled: true,
		// The chain is verified in VerifyConnection, against the CA as it is at this handshake,
		// without the host name check that InsecureSkipVerify turns off.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := p.verifyPeer(cs)
			return err
		},
	}
	c, err := (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tls dial peer %s: %w", addr, err)
	}
	return c, nil
}

// PeerIdentity returns who holds the certificate the other side of a swarm connection
// presented, once the connection's TLS handshake is done (it runs it, bounded by ctx, if not).
// It fails for a plain connection, one without the swarm's protocol name, and a certificate
// the current CA did not issue or that is outside its validity.
func (p *Provider) PeerIdentity(ctx context.Context, nc net.Conn) (Identity, error) {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return Identity{}, ErrNotTLS
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return Identity{}, fmt.Errorf("tls handshake: %w", err)
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != PeerProtocol {
		return Identity{}, fmt.Errorf("the peer does not speak %s over TLS (ALPN %q)", PeerProtocol, cs.NegotiatedProtocol)
	}
	// An accepting side's handshake verified the client's chain against the CA of that moment
	// (PeerListener requires it): use it rather than verify it a second time. A dialling side
	// has no verified chains (InsecureSkipVerify, for want of a host name to check), though
	// VerifyConnection checked the same chain: verify it here, which costs one more Verify per
	// dialled connection and keeps this function right for any connection it is given.
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		return identityOf(cs.VerifiedChains[0][0]), nil
	}
	return p.verifyPeer(cs)
}

// verifyPeer checks the chain the other side presented against the current CA, for any use
// (both sides of a swarm connection are client and server alike).
func (p *Provider) verifyPeer(cs tls.ConnectionState) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, ErrNoCertificate
	}
	leaf := cs.PeerCertificates[0]
	if err := checkValidity(leaf, p.now()); err != nil {
		return Identity{}, fmt.Errorf("the peer's %w", err)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.mat.Load().pool, Intermediates: inter, CurrentTime: p.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return Identity{}, fmt.Errorf("the peer's certificate %q (issued by %q) is not from the cluster CA: %w",
			leaf.Subject.CommonName, leaf.Issuer.CommonName, err)
	}
	return identityOf(leaf), nil
}
