package role

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// PeerGroups are the certificate groups whose holders may take part in a swarm: agents trade
// with agents and fetch from origins; nobody else has a reason to open the peer port.
var PeerGroups = []string{pki.GroupAgent, pki.GroupOrigin}

// Peers is how a role's swarm scheduler reaches and admits its peers; its fields go to
// scheduler.Config.PeerID and scheduler.Deps as they are. Zero fields mean plain TCP and a
// random peer id (a role with a certificate gets a bound peer id even with plain P2P).
type Peers struct {
	// Listener is the peer listener, serving the swarm's TLS (pki.Provider.PeerListener).
	Listener net.Listener
	// Dial connects to a peer over TLS.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Authenticate admits a peer whose certificate is from the cluster CA, in PeerGroups, and
	// whose peer id is bound to the certificate's holder.
	Authenticate func(ctx context.Context, nc net.Conn, id wire.PeerID) (string, error)
	// PeerID is this host's peer id, bound to the holder of its own certificate.
	PeerID wire.PeerID
	// TLS says whether the swarm speaks TLS.
	TLS bool
}

// Peers returns how the role's swarm speaks to its peers through ln: mutual TLS with the role's
// certificate when the role has one and plain is false, else plain TCP on ln. plain is the
// role's explicit choice of plain-text P2P on a network trusted by construction (the CPU of
// encryption is the price of TLS on the swarm's bulk bytes); it is logged as a warning, since
// then anyone who reaches the peer port can join a swarm. dialTimeout bounds each dial.
func (b *Base) Peers(ln net.Listener, plain bool, dialTimeout time.Duration) Peers {
	p := b.tls
	switch {
	case p == nil:
		return Peers{Listener: ln}
	case plain:
		b.log.Warn("the swarm's peer port speaks plain TCP although tls is configured (plain P2P is set): whoever reaches it can join a swarm and read the blobs it serves",
			"peer_addr", ln.Addr().String())
		b.StartedAttrs("peer_tls", false)
		// Still bound to the certificate: the tracker, reached over TLS with it, accepts an
		// agent's or origin's announce only under a peer id bound to its holder.
		return Peers{Listener: ln, PeerID: wire.BoundPeerID(p.Identity().Name)}
	}
	b.StartedAttrs("peer_tls", true)
	d := &net.Dialer{Timeout: dialTimeout}
	return Peers{
		Listener: p.PeerListener(ln),
		Dial:     func(ctx context.Context, addr string) (net.Conn, error) { return p.DialPeer(ctx, d, addr) },
		Authenticate: func(ctx context.Context, nc net.Conn, id wire.PeerID) (string, error) {
			return admitPeer(ctx, p, nc, id)
		},
		PeerID: wire.BoundPeerID(p.Identity().Name),
		TLS:    true,
	}
}

// admitPeer is Peers.Authenticate: it returns the holder of the peer's certificate.
func admitPeer(ctx context.Context, p *pki.Provider, nc net.Conn, id wire.PeerID) (string, error) {
	who, err := p.PeerIdentity(ctx, nc)
	if err != nil {
		return "", err
	}
	if !slices.ContainsFunc(PeerGroups, who.In) {
		return "", fmt.Errorf("certificate %q (groups %v) is not in a swarm group (%v): %w", who.Name, who.Groups, PeerGroups, pki.ErrDenied)
	}
	if !id.BoundTo(who.Name) {
		return "", fmt.Errorf("peer id %s is not bound to certificate %q: a peer with a certificate claims another's id", id, who.Name)
	}
	return who.Name, nil
}
