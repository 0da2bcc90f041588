package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// How often origins' swarm identities are read: every originRefresh for those that answered;
// for those that did not, after originRetryMin, doubling with each failure up to originRetry;
// each read bounded by originTimeout. The short first retries matter when a tracker starts with
// its origins (systemd, compose, a pod rollout): the first read finds nobody listening, and a
// flat 5 s retry left the origins out of handouts (and a 4 MiB pull waiting) for that long.
//
// originRefresh is short because an origin replaced under the same name (a StatefulSet pod
// rolled, with the stable names TLS needs) answers from a new address with a new peer ID while
// the tracker still hands out the old ones: nothing else tells the tracker, and the Kubernetes
// lab's pull after replacing every pod waited 24 s of a one-minute refresh for it. One small
// GET per origin every 10 s is nothing to an origin or a tracker.
const (
	originRefresh  = 10 * time.Second
	originRetryMin = 100 * time.Millisecond
	originRetry    = 5 * time.Second
	originTimeout  = 5 * time.Second
)

// retryAfter is how long to wait before reading again an origin whose last fails reads
// failed: originRetryMin, doubled for each further failure, at most originRetry.
func retryAfter(fails int) time.Duration {
	d := originRetryMin
	for i := 1; i < fails && d < originRetry; i++ {
		d *= 2
	}
	return min(d, originRetry)
}

// originState is what the tracker knows of one origin's swarm identity.
type originState struct {
	peer    announce.Peer // valid when ok
	ok      bool
	checked time.Time // zero before the first read
	fails   int       // consecutive failed reads
	next    time.Time // when the next read is due
}

// due reports whether st should be read at now: never read, or its next read is due, or (on
// demand, when a handout found an owner missing) unreachable and not read in the last
// originRetryMin.
func (st originState) due(now time.Time, urgent bool) bool {
	switch {
	case st.checked.IsZero(), !now.Before(st.next):
		return true
	case urgent && !st.ok:
		return now.Sub(st.checked) >= originRetryMin
	}
	return false
}

// originPeers caches every origin's swarm identity (api.PeerInfo). It is safe for concurrent
// use.
type originPeers struct {
	hc        *http.Client
	log       *slog.Logger
	policy    addrPolicy
	lookup    func(ctx context.Context, host string) ([]netip.Addr, error) // resolves origins' peer addresses
	reachable func(n int)                                                  // told how many origins answered after each round

	now  func() time.Time
	kick chan struct{} // capacity 1: the origin list changed, or a handout lacked an owner
	// urgent is set by wanted (a handout lacked an owner): the next round also reads the
	// unreachable origins that are not due yet.
	urgent atomic.Bool
	// reads counts reads of origins' identities, for tests of the retry schedule.
	reads atomic.Int64

	mu    sync.RWMutex
	addrs []string // sorted; replaced by setAddrs when origins come from DNS
	state map[string]originState

	firstRound atomic.Bool // every origin has been asked once
}

func newOriginPeers(addrs []string, hc *http.Client, log *slog.Logger, policy addrPolicy, reachable func(int)) *originPeers {
	lookup := func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	return &originPeers{addrs: slices.Sorted(slices.Values(addrs)), hc: hc, log: log, policy: policy, lookup: lookup,
		reachable: reachable, state: map[string]originState{}, kick: make(chan struct{}, 1), now: time.Now}
}

// wanted tells the refresher that a handout lacked an owner (an origin not yet read, or
// unreachable): it reads the unreachable origins at once rather than at their next retry,
// at most every originRetryMin per origin.
func (o *originPeers) wanted() {
	if o.urgent.Swap(true) {
		return // a round is already asked for
	}
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// untilNext is how long the refresher may sleep: until the earliest due read, at most
// originRetry (and a little, not zero, when one is due already, so a round cannot spin).
func (o *originPeers) untilNext(now time.Time) time.Duration {
	o.mu.RLock()
	defer o.mu.RUnlock()
	wait := originRetry
	for _, a := range o.addrs {
		st := o.state[a]
		if st.checked.IsZero() {
			return time.Millisecond
		}
		wait = min(wait, st.next.Sub(now))
	}
	return max(wait, time.Millisecond)
}

// setAddrs replaces the origins (a new DNS answer for the tracker's origins): the departed are
// forgotten at once, so no handout names them, and the new ones are read right away.
// known is how many origins the tracker knows the addresses of.
func (o *originPeers) known() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.addrs)
}

func (o *originPeers) setAddrs(addrs []string) {
	next := slices.Sorted(slices.Values(addrs))
	o.mu.Lock()
	o.addrs = slices.Compact(next)
	for a := range o.state {
		if !slices.Contains(o.addrs, a) {
			delete(o.state, a)
		}
	}
	o.mu.Unlock()
	o.log.Info("origins changed", "origins", next)
	if o.reachable != nil {
		o.reachable(o.countReachable())
	}
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// run reads every origin's identity now, then keeps the cache fresh until ctx ends: each
// origin when its next read is due (retryAfter for those that do not answer, originRefresh for
// the others), new origins at once, and unreachable ones on demand (wanted).
func (o *originPeers) run(ctx context.Context) error {
	o.refresh(ctx, func(originState) bool { return true })
	o.firstRound.Store(true)
	t := time.NewTimer(o.untilNext(o.now()))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-o.kick:
			t.Stop()
		}
		o.round(ctx)
		t.Reset(o.untilNext(o.now()))
	}
}

// round reads the origins that are due (and, after wanted, the unreachable ones).
func (o *originPeers) round(ctx context.Context) {
	urgent := o.urgent.Swap(false)
	now := o.now()
	o.refresh(ctx, func(st originState) bool { return st.due(now, urgent) })
}

// refresh reads, concurrently, the identity of every origin whose state due accepts.
func (o *originPeers) refresh(ctx context.Context, due func(originState) bool) {
	o.mu.RLock()
	var todo []string
	for _, a := range o.addrs {
		if due(o.state[a]) {
			todo = append(todo, a)
		}
	}
	o.mu.RUnlock()
	if len(todo) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, a := range todo {
		wg.Go(func() {
			o.reads.Add(1)
			peer, err := o.read(ctx, a)
			if ctx.Err() != nil {
				return // Shutting down: keep what we knew.
			}
			o.mu.Lock()
			if !slices.Contains(o.addrs, a) {
				o.mu.Unlock()
				return // left the list while it was read
			}
			prev := o.state[a]
			now := o.now()
			st := originState{peer: peer, ok: err == nil, checked: now, next: now.Add(originRefresh)}
			if err != nil {
				st.fails = prev.fails + 1
				st.next = now.Add(retryAfter(st.fails))
			}
			o.state[a] = st
			o.mu.Unlock()
			switch {
			case err != nil && (prev.ok || prev.checked.IsZero()):
				o.log.Warn("origin unreachable; left out of handouts", "origin", a, "err", err)
			case err == nil && !prev.ok:
				o.log.Info("origin reachable", "origin", a, "peer_id", peer.ID, "peer_addr", peer.Addr)
			case err == nil && prev.peer != peer:
				o.log.Info("origin changed its swarm identity", "origin", a, "peer_id", peer.ID, "peer_addr", peer.Addr)
			}
		})
	}
	wg.Wait()
	if o.reachable != nil {
		o.reachable(o.countReachable())
	}
}

// read fetches and checks one origin's identity.
func (o *originPeers) read(ctx context.Context, addr string) (announce.Peer, error) {
	ctx, cancel := context.WithTimeout(ctx, originTimeout)
	defer cancel()
	pi, err := client.NewOrigin(addr, o.hc).Peer(ctx)
	if err != nil {
		return announce.Peer{}, err
	}
	if _, err := announce.ParsePeerID(pi.ID); err != nil {
		return announce.Peer{}, fmt.Errorf("origin %s sent a bad peer info: %w", addr, err)
	}
	ap, err := o.peerAddr(ctx, pi.Addr)
	if err != nil {
		return announce.Peer{}, fmt.Errorf("origin %s sent a bad peer info: %w", addr, err)
	}
	return announce.Peer{ID: pi.ID, Addr: ap.String(), Origin: true, Complete: true}, nil
}

// peerAddr turns an origin's swarm address into the IP literal agents are handed. An origin
// may advertise a host name (a StatefulSet's DNS name, say): the tracker resolves it, as it
// resolves the origins' API addresses it was configured with, and hands out the first address
// the protocol accepts (announce.ParseAddr, and loopback only with announce.allow_loopback),
// so that agents never resolve a name themselves.
func (o *originPeers) peerAddr(ctx context.Context, addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("peer address %q is not host:port: %w", addr, err)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return o.allowed(addr)
	}
	ips, err := o.lookup(ctx, host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolve peer address %q: %w", addr, err)
	}
	var errs []error
	for _, ip := range ips {
		ap, err := o.allowed(net.JoinHostPort(ip.String(), port))
		if err == nil {
			return ap, nil
		}
		errs = append(errs, err)
	}
	return netip.AddrPort{}, fmt.Errorf("peer address %q resolves to no address peers may dial: %w", addr, errors.Join(errs...))
}

func (o *originPeers) allowed(addr string) (netip.AddrPort, error) {
	ap, err := announce.ParseAddr(addr)
	if err != nil {
		return ap, err
	}
	if ap.Addr().IsLoopback() && !o.policy.allowLoopback {
		return ap, fmt.Errorf("peer address %s is a loopback address, which this tracker hands out only for a cluster on one host (announce.allow_loopback)", ap)
	}
	return ap, nil
}

func (o *originPeers) countReachable() int {
	o.mu.RLock()
	defer o.mu.RUnlock()
	n := 0
	for _, st := range o.state {
		if st.ok {
			n++
		}
	}
	return n
}

// ranked returns every origin in d's rendezvous order, split into those whose identity is
// known (reachable) and the others.
func (o *originPeers) ranked(d digest.Digest) (up, down []string) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	order := ring.Rank(d.String(), o.addrs)
	for _, a := range order {
		if o.state[a].ok {
			up = append(up, a)
		} else {
			down = append(down, a)
		}
	}
	return up, down
}

// members returns d's first n reachable origins in rendezvous order (owners) as members of
// the tracker's swarm list: role origin, complete, with the API address the tracker reads
// them at.
func (o *originPeers) members(d digest.Digest, n int) []snapshot.TrackerMember {
	o.mu.RLock()
	defer o.mu.RUnlock()
	order := ring.Rank(d.String(), o.addrs)
	out := make([]snapshot.TrackerMember, 0, n)
	for _, a := range order {
		if len(out) == n {
			break
		}
		if st := o.state[a]; st.ok {
			out = append(out, snapshot.TrackerMember{PeerID: st.peer.ID, Addr: st.peer.Addr, API: a, Role: roleOrigin, Complete: true})
		}
	}
	return out
}

// owners returns the swarm identities of d's first n reachable origins in rendezvous order: the
// origins that own d now, as the origins' own ring places it when the same members are down.
func (o *originPeers) owners(d digest.Digest, n int) []announce.Peer {
	o.mu.RLock()
	defer o.mu.RUnlock()
	order := ring.Rank(d.String(), o.addrs)
	out := make([]announce.Peer, 0, n)
	for _, a := range order {
		if len(out) == n {
			break
		}
		if st := o.state[a]; st.ok {
			out = append(out, st.peer)
		}
	}
	return out
}
