package auth

import (
	"crypto/tls"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/krakenctl/krakenctl/server/pki"
)

// Limits of failed password checks per client address: a burst of failBurst, then one every
// failEvery. A client over the limit is refused before its password is checked (429), except
// when it sends a password that recently matched, so clients that already logged in from a
// busy address (a NAT in front of many builders) keep working.
const (
	failBurst    = 10
	failEvery    = 6 * time.Second
	failMaxHosts = 10000
)

// failLimiter counts failed password checks per client address.
//
// A check takes its token before bcrypt runs (reserve) and gives it back when the password
// matched, so that requests sent in parallel cannot all pass a limit that is only recorded
// once each of them has failed.
type failLimiter struct {
	now func() time.Time

	mu    sync.Mutex
	hosts map[string]*rate.Limiter
}

func newFailLimiter(now func() time.Time) *failLimiter {
	return &failLimiter{now: now, hosts: map[string]*rate.Limiter{}}
}

// reserve takes one failure from host's allowance for a password check about to run. When
// host has none left it reports false and when it may try again; otherwise the caller must
// call the returned function once the check is done, with whether the password matched (a
// match gives the failure back).
func (l *failLimiter) reserve(host string) (ok bool, wait time.Duration, done func(matched bool)) {
	host = limitKey(host)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	lim, found := l.hosts[host]
	if !found {
		if len(l.hosts) >= failMaxHosts && !l.pruneLocked() {
			// Every slot holds a host still failing: a spread-out attack. Forget one of them
			// rather than refuse every new client until the table drains.
			for h := range l.hosts {
				delete(l.hosts, h)
				break
			}
		}
		lim = rate.NewLimiter(rate.Every(failEvery), failBurst)
		l.hosts[host] = lim
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); !r.OK() || d > 0 {
		r.CancelAt(now)
		return false, max(d, time.Second), nil
	}
	return true, 0, func(matched bool) {
		if matched {
			l.mu.Lock()
			r.CancelAt(l.now())
			l.mu.Unlock()
		}
	}
}

// pruneLocked forgets hosts whose failures have all been forgiven; it reports whether there is
// room now.
func (l *failLimiter) pruneLocked() bool {
	now := l.now()
	for h, lim := range l.hosts {
		if lim.TokensAt(now) >= failBurst {
			delete(l.hosts, h)
		}
	}
	return len(l.hosts) < failMaxHosts
}

// limitKey is what failures are counted under: the IPv4 address, or the /64 of an IPv6 one
// (a single host is commonly given a whole /64, and could otherwise change address at will).
func limitKey(host string) string {
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// clientHost is the address a request came from, without its port.
func clientHost(remoteAddr string) string {
	if h, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return h
	}
	return remoteAddr
}

// peerIdentity is the identity of the client of a TLS connection, from the certificate the
// handshake verified against the cluster CA (pki.PeerIdentity): its common name, and its
// organizations as groups. It reports false without a verified chain (no TLS, no certificate,
// or one that was not verified).
func peerIdentity(cs *tls.ConnectionState) (Identity, bool) {
	id, ok := pki.PeerIdentity(cs)
	if !ok {
		return Identity{}, false
	}
	name := id.Name
	if name == "" {
		name = "(no common name)"
	}
	return Identity{Cert: name, Groups: id.Groups}, true
}
