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
type failLimiter struct {
	now func() time.Time

	mu    sync.Mutex
	hosts map[string]*rate.Limiter
}

func newFailLimiter(now func() time.Time) *failLimiter {
	return &failLimiter{now: now, hosts: map[string]*rate.Limiter{}}
}

// blocked reports whether host has used up its failures, and when it may try again.
func (l *failLimiter) blocked(host string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.hosts[host]
	if !ok {
		// A table full of hosts still failing means a spread-out attack: refuse new hosts
		// rather than forget the limits of the old ones.
		return len(l.hosts) >= failMaxHosts && !l.pruneLocked(), failEvery
	}
	tokens := lim.TokensAt(l.now())
	if tokens >= 1 {
		return false, 0
	}
	return true, time.Duration((1 - tokens) * float64(failEvery))
}

// failed records a failed check from host.
func (l *failLimiter) failed(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.hosts[host]
	if !ok {
		if len(l.hosts) >= failMaxHosts && !l.pruneLocked() {
			return
		}
		lim = rate.NewLimiter(rate.Every(failEvery), failBurst)
		l.hosts[host] = lim
	}
	lim.AllowN(l.now(), 1)
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
