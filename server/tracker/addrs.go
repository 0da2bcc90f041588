package tracker

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/announce"
)

// Reasons an announce is refused: the reason label of
// krakenctl_tracker_announces_rejected_total.
const (
	reasonMalformed = "malformed"       // not a valid announce document (400)
	reasonAddress   = "address"         // a name, or an address no host has (400)
	reasonLoopback  = "loopback"        // loopback outside a cluster on one host (403)
	reasonNotOwn    = "not_own_address" // an address of another host (403)
	reasonPeerID    = "unbound_peer_id" // a peer id not bound to the certificate (403)
	reasonDenied    = "denied"          // a certificate that may not announce (403)
	reasonConflict  = "conflict"        // an address or peer id another host holds (409)
)

var rejectReasons = []string{reasonMalformed, reasonAddress, reasonLoopback, reasonNotOwn, reasonPeerID, reasonDenied, reasonConflict}

// announcer is who sent an announce, as far as the tracker can tell: the host the connection
// came from and, with TLS, the certificate it presented.
type announcer struct {
	from   netip.Addr // the connection's remote address, IPv4 unmapped
	holder string     // the verified certificate's name (CN); empty without one
	admin  bool       // the certificate is an operator's (group admin)
}

// addrPolicy is what the tracker's announce section allows.
type addrPolicy struct {
	allowLoopback bool
	nat           []netip.Prefix
}

func newAddrPolicy(c AnnounceConfig) addrPolicy {
	p := addrPolicy{allowLoopback: c.AllowLoopback}
	for _, s := range c.NATCIDRs {
		if pfx, err := netip.ParsePrefix(s); err == nil { // Validate refused the others.
			p.nat = append(p.nat, pfx.Masked())
		}
	}
	return p
}

// inNAT reports whether a is in one of the networks of announce.nat_cidrs.
func (p addrPolicy) inNAT(a netip.Addr) bool {
	for _, pfx := range p.nat {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// own reports whether a connection from from may announce addr without a certificate that
// names addr: addr is the address it came from; or both lie in the NAT networks, where the
// address a tracker sees is not the host's own; or, in a cluster on one host, both are
// loopback addresses (127.0.0.2 is the same host as 127.0.0.1).
func (p addrPolicy) own(from, addr netip.Addr) bool {
	return from == addr || p.inNAT(from) && p.inNAT(addr) || p.allowLoopback && from.IsLoopback() && addr.IsLoopback()
}

// sameHost reports whether two announces came from one host, as far as the tracker can tell:
// the same remote address (or both from the NAT networks, behind which hosts look alike), and
// the same certificate holder (both without one, without TLS).
func (p addrPolicy) sameHost(a, b announcer) bool {
	return a.holder == b.holder && (a.from == b.from || p.inNAT(a.from) && p.inNAT(b.from))
}

// checkAnnounce checks an announce req (which passed Request.Validate) against the connection
// it came on and returns the announcer and req's address in its one spelling, or the reason
// for a refusal and an *errcode.Error that says what is wrong:
//
//   - A loopback address only with announce.allow_loopback (a cluster on one host): on any
//     other tracker it would aim every agent of the swarm at its own host.
//   - An agent's or origin's certificate: a peer id bound to the certificate's name
//     (wire.BoundPeerID), so that nobody else's certificate can announce that id; and only an
//     address of its own: the host it connects from, an IP address its certificate names
//     (a multi-homed host advertising another interface), or one in the NAT networks when it
//     connects from them.
//   - An operator's certificate (group admin): any address, any peer id.
//   - No certificate (no TLS): the host it connects from, or the NAT networks, as above.
//
// Otherwise one announce could aim every agent of a swarm at any host and port.
func (p addrPolicy) checkAnnounce(cs *tls.ConnectionState, remoteAddr string, req announce.Request) (announcer, netip.AddrPort, string, error) {
	ap, err := announce.ParseAddr(req.Addr)
	if err != nil { // Request.Validate has refused it already.
		return announcer{}, ap, reasonAddress, errcode.Errorf(http.StatusBadRequest, errcode.CodeBodyInvalid, "%v", err)
	}
	remote, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return announcer{}, ap, reasonNotOwn, errcode.Errorf(http.StatusForbidden, errcode.CodeDenied, "announce: cannot tell the host the request came from (%q)", remoteAddr)
	}
	who := announcer{from: remote.Addr().Unmap().WithZone("")}
	addr := ap.Addr()
	if addr.IsLoopback() && !p.allowLoopback {
		return who, ap, reasonLoopback, errcode.Errorf(http.StatusForbidden, errcode.CodeDenied,
			"announce: addr %s is a loopback address, which this tracker accepts only for a cluster on one host (announce.allow_loopback)", ap)
	}
	id, ok := pki.PeerIdentity(cs)
	if ok {
		who.holder, who.admin = id.Name, id.In(pki.GroupAdmin)
	}
	if who.admin {
		return who, ap, "", nil
	}
	if ok {
		pid, err := announce.ParsePeerID(req.PeerID)
		if err != nil || !pid.BoundTo(id.Name) {
			return who, ap, reasonPeerID, errcode.Errorf(http.StatusForbidden, errcode.CodeDenied,
				"announce: peer_id %s is not bound to the certificate of %s: a peer announces the id it made for its own certificate (wire.BoundPeerID)", req.PeerID, id.Name)
		}
	}
	if p.owns(who, cs, ok, addr) {
		return who, ap, "", nil
	}
	if ok {
		return who, ap, reasonNotOwn, errcode.Errorf(http.StatusForbidden, errcode.CodeDenied,
			"announce: %s may announce only its own addresses (the host it connects from, %s, or an IP address its certificate names), not %s", id.Name, who.from, ap)
	}
	return who, ap, reasonNotOwn, errcode.Errorf(http.StatusForbidden, errcode.CodeDenied,
		"announce: a peer may announce only its own address (the host it connects from, %s, or one in announce.nat_cidrs from there), not %s", who.from, ap)
}

// owns reports whether addr is an address of who's own: one own accepts, or, when who
// presented a certificate (cert; cs is its connection), an IP address the certificate names.
func (p addrPolicy) owns(who announcer, cs *tls.ConnectionState, cert bool, addr netip.Addr) bool {
	if p.own(who.from, addr) {
		return true
	}
	if cert {
		for _, ip := range cs.VerifiedChains[0][0].IPAddresses {
			if a, valid := netip.AddrFromSlice(ip); valid && a.Unmap() == addr {
				return true
			}
		}
	}
	return false
}

// checkAPI checks the API address of an announce that checkAnnounce accepted from who, by the
// rule of its addr: loopback only with announce.allow_loopback; an operator's certificate any
// address; anyone else only an address of its own (owns). It returns the address in its one
// spelling ("" for none), or an error saying why the tracker does not keep it. Unlike a
// refused addr, a refused api does not refuse the announce: the swarm does not use it (only
// the tracker's swarm list shows it), and an agent whose API address a tracker does not
// accept (one on loopback, by default) must still find its peers.
func (p addrPolicy) checkAPI(cs *tls.ConnectionState, who announcer, api string) (string, error) {
	if api == "" {
		return "", nil
	}
	ap, err := announce.ParseAddr(api)
	if err != nil { // Request.Validate has refused it already.
		return "", err
	}
	addr := ap.Addr()
	if addr.IsLoopback() && !p.allowLoopback {
		return "", fmt.Errorf("api %s is a loopback address, which this tracker accepts only for a cluster on one host (announce.allow_loopback)", ap)
	}
	if who.admin {
		return ap.String(), nil
	}
	_, cert := pki.PeerIdentity(cs)
	if !p.owns(who, cs, cert, addr) {
		return "", fmt.Errorf("api %s is not the announcer's own address (it connects from %s)", ap, who.from)
	}
	return ap.String(), nil
}

// refusalLog logs refused announces at Warn: refusalLogBurst at once and one a second after,
// so that a flood of bad announces is not a flood of log lines. The next line logged counts
// those left out.
type refusalLog struct {
	log     *slog.Logger
	lim     *rate.Limiter
	dropped atomic.Int64
}

const refusalLogBurst = 10

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{log: log, lim: rate.NewLimiter(1, refusalLogBurst)}
}

func (l *refusalLog) refused(reason, remote string, req announce.Request, holder string, err error) {
	if !l.lim.Allow() {
		l.dropped.Add(1)
		return
	}
	attrs := []any{"reason", reason, "addr", req.Addr, "peer_id", req.PeerID, "digest", req.Digest, "remote", remote, "err", err}
	if holder != "" {
		attrs = append(attrs, "certificate", holder)
	}
	if n := l.dropped.Swap(0); n > 0 {
		attrs = append(attrs, "suppressed_before", n)
	}
	l.log.Warn("announce refused", attrs...)
}

// droppedAPI logs, under the same sampling, an announce whose api the tracker did not keep.
func (l *refusalLog) droppedAPI(remote string, req announce.Request, err error) {
	if !l.lim.Allow() {
		l.dropped.Add(1)
		return
	}
	attrs := []any{"api", req.API, "addr", req.Addr, "peer_id", req.PeerID, "digest", req.Digest, "remote", remote, "err", err}
	if n := l.dropped.Swap(0); n > 0 {
		attrs = append(attrs, "suppressed_before", n)
	}
	l.log.Warn("announce accepted without its api address", attrs...)
}

// conflictError is the refusal of an announce whose address or peer id another host holds.
func conflictError(what, value string) error {
	return &errcode.Error{Status: http.StatusConflict, Code: errcode.CodePeerConflict,
		Message: fmt.Sprintf("announce: %s %s is held by another peer, announced from another host; it is free again once that peer stops announcing (peer_ttl)", what, value)}
}
