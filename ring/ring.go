package ring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/ring/members"
)

// ErrRunning is returned by Run when another Run of the same Ring has not returned yet.
var ErrRunning = errors.New("ring health checks already running")

// Deps are the Ring's collaborators. The zero value is usable.
type Deps struct {
	// Checker probes members; nil means HTTPChecker{} (GET http://member/health with
	// http.DefaultClient).
	Checker Checker
	// Logger receives health flips and check failures; nil discards them.
	Logger *slog.Logger
	// Registerer, when set, receives krakenctl_ring_member_healthy{member} and
	// krakenctl_ring_health_checks_total{member,result}.
	Registerer prometheus.Registerer
	// StartEmpty lets New build a ring of no members, for a role whose origins come from DNS
	// and have not resolved yet: every key has no owner until SetMembers gives some.
	StartEmpty bool
}

// MemberStatus is a snapshot of one member's health.
type MemberStatus struct {
	// Addr is the member's "host:port".
	Addr string
	// Healthy is whether the Ring currently routes to the member. Members start healthy.
	Healthy bool
	// ConsecutiveFailures and ConsecutiveSuccesses count the current run of check results;
	// at most one of them is non-zero.
	ConsecutiveFailures  int
	ConsecutiveSuccesses int
	// LastCheck is when the latest check finished; zero before the first one.
	LastCheck time.Time
	// LastError is why the latest check failed; empty when it succeeded or none ran yet.
	LastError string
	// Since is when Healthy last changed, or when the Ring was created if it never did.
	Since time.Time
}

type memberState struct {
	healthy   bool
	failures  int
	successes int
	lastCheck time.Time
	lastErr   string
	since     time.Time
}

// Ring is the origin hash ring: members (fixed, or replaced with SetMembers when they come
// from DNS), rendezvous placement and active health checks.
//
// All methods are safe for concurrent use. Placement queries (Locations, Owners, IsOwner) do no
// I/O and never block on health checks for longer than it takes to read the current state.
type Ring struct {
	cfg     Config
	checker Checker
	log     *slog.Logger
	metrics *metrics
	round   chan struct{} // capacity 1: held while a round of checks runs
	running atomic.Bool

	mu      sync.RWMutex
	members []string // distinct, sorted
	seeds   []uint64 // memberSeed of members[i]
	index   map[string]int
	states  []memberState // parallel to members
	subs    map[*subscription]struct{}
}

// New returns a Ring over cfg.Members with every member healthy. It applies cfg.Defaults to
// a copy of cfg and returns an error wrapping ErrInvalidConfig when the result does not
// validate, or an error from registering the metrics. New starts nothing: call Run for
// periodic health checks, or CheckNow for one round.
func New(cfg Config, deps Deps) (*Ring, error) {
	cfg.Members = slices.Clone(cfg.Members)
	cfg.Defaults()
	if err := cfg.validate(deps.StartEmpty); err != nil {
		return nil, fmt.Errorf("new ring: %w", err)
	}
	if members.HasDNS(cfg.Members) {
		return nil, fmt.Errorf("new ring: %w: ring.members holds %s entries; resolve them (members.List) and pass the addresses",
			ErrInvalidConfig, members.Scheme)
	}
	addrs := dedupe(cfg.Members)
	m, err := newMetrics(deps.Registerer, addrs)
	if err != nil {
		return nil, fmt.Errorf("new ring: %w", err)
	}
	r := &Ring{
		cfg:     cfg,
		members: addrs,
		seeds:   make([]uint64, len(addrs)),
		index:   make(map[string]int, len(addrs)),
		checker: deps.Checker,
		log:     deps.Logger,
		metrics: m,
		round:   make(chan struct{}, 1),
		states:  make([]memberState, len(addrs)),
		subs:    make(map[*subscription]struct{}),
	}
	if r.checker == nil {
		r.checker = HTTPChecker{}
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	now := time.Now()
	for i, mb := range addrs {
		r.seeds[i] = memberSeed(mb)
		r.index[mb] = i
		r.states[i] = memberState{healthy: true, since: now}
	}
	return r, nil
}

// replicasLocked is R capped at the number of members; r.mu must be held.
func (r *Ring) replicasLocked() int {
	return min(r.cfg.Replicas, len(r.members))
}

// Replicas returns how many members hold each key: the configured R, capped at the number of
// members.
func (r *Ring) Replicas() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.replicasLocked()
}

// IsMember reports whether addr is one of the ring's members.
func (r *Ring) IsMember(addr string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.index[addr]
	return ok
}

// Rank returns every member ordered by preference for key (see the package-level Rank).
func (r *Ring) Rank(key string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return rankSeeded(key, r.members, r.seeds)
}

// Locations returns the key's nominal owners: the first R members in rank order, regardless of
// health. The caller owns the returned slice.
func (r *Ring) Locations(key string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return rankSeeded(key, r.members, r.seeds)[:r.replicasLocked()]
}

// Owners returns the members that should hold key now: the first R healthy members in rank
// order, so a down member's keys move to the next-ranked healthy members and return when it
// recovers. With fewer than R healthy members it returns the healthy ones; with none it
// returns the nominal Locations, since trying a member that may be down beats failing. The
// caller owns the returned slice.
func (r *Ring) Owners(key string) []string {
	r.mu.RLock()
	rank := rankSeeded(key, r.members, r.seeds)
	want := r.replicasLocked()
	out := make([]string, 0, want)
	for i := 0; i < len(rank) && len(out) < want; i++ {
		if r.states[r.index[rank[i]]].healthy {
			out = append(out, rank[i])
		}
	}
	r.mu.RUnlock()
	if len(out) == 0 {
		return rank[:want]
	}
	return out
}

// RankHealthyFirst returns every member for key: the healthy ones in rank order, then the
// others in rank order (trying a member that may be down beats failing). The caller owns the
// returned slice.
func (r *Ring) RankHealthyFirst(key string) []string {
	r.mu.RLock()
	rank := rankSeeded(key, r.members, r.seeds)
	out := make([]string, 0, len(rank))
	var sick []string
	for _, m := range rank {
		if r.states[r.index[m]].healthy {
			out = append(out, m)
		} else {
			sick = append(sick, m)
		}
	}
	r.mu.RUnlock()
	return append(out, sick...)
}

// IsOwner reports whether member is among Owners(key).
func (r *Ring) IsOwner(member, key string) bool {
	return slices.Contains(r.Owners(key), member)
}

// Members returns every member's health, sorted by address.
func (r *Ring) Members() []MemberStatus {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]MemberStatus, len(r.members))
	for i, mb := range r.members {
		st := r.states[i]
		out[i] = MemberStatus{
			Addr:                 mb,
			Healthy:              st.healthy,
			ConsecutiveFailures:  st.failures,
			ConsecutiveSuccesses: st.successes,
			LastCheck:            st.lastCheck,
			LastError:            st.lastErr,
			Since:                st.since,
		}
	}
	return out
}

// Run checks every member at once every HealthInterval, starting immediately, until ctx ends;
// then it waits for the checks in flight to return and returns nil. A second Run while one is
// active returns ErrRunning.
func (r *Ring) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)
	ticker := time.NewTicker(r.cfg.HealthInterval)
	defer ticker.Stop()
	for {
		if err := r.CheckNow(ctx); err != nil {
			return nil // CheckNow fails only when ctx has ended
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// CheckNow runs one round of health checks: every member concurrently, each bounded by
// HealthTimeout, and returns when all have finished. Results update member state, metrics and
// subscribers exactly as Run's rounds do. Rounds never overlap: CheckNow waits for a round in
// progress (from Run or another CheckNow) to finish first.
//
// Check failures are recorded, not returned. CheckNow returns an error wrapping ctx.Err() when
// ctx ends before the round completes; checks cut short by ctx are not recorded, because they
// say nothing about the member.
func (r *Ring) CheckNow(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("check ring: %w", err)
	}
	select {
	case r.round <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("check ring: %w", ctx.Err())
	}
	defer func() { <-r.round }()
	r.mu.RLock()
	current := slices.Clone(r.members)
	r.mu.RUnlock()
	var wg sync.WaitGroup
	for _, mb := range current {
		wg.Go(func() { r.checkOne(ctx, mb) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("check ring: %w", err)
	}
	return nil
}

func (r *Ring) checkOne(ctx context.Context, member string) {
	cctx, cancel := context.WithTimeout(ctx, r.cfg.HealthTimeout)
	defer cancel()
	err := r.checker.Check(cctx, member)
	if ctx.Err() != nil {
		return
	}
	if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("no answer within %s: %w", r.cfg.HealthTimeout, err)
	}
	r.record(member, err, time.Now())
}

// record applies one check result to member's state and announces a flip.
func (r *Ring) record(member string, checkErr error, at time.Time) {
	result := resultSuccess
	if checkErr != nil {
		result = resultFailure
	}
	r.mu.Lock()
	i, ok := r.index[member]
	if !ok {
		r.mu.Unlock()
		return // removed by SetMembers while its check ran
	}
	r.metrics.checks.WithLabelValues(member, result).Inc()
	st := &r.states[i]
	st.lastCheck = at
	flipped := false
	if checkErr == nil {
		st.failures = 0
		st.successes++
		st.lastErr = ""
		if !st.healthy && st.successes >= r.cfg.PassThreshold {
			st.healthy, st.since, flipped = true, at, true
		}
	} else {
		st.successes = 0
		st.failures++
		st.lastErr = checkErr.Error()
		if st.healthy && st.failures >= r.cfg.FailThreshold {
			st.healthy, st.since, flipped = false, at, true
		}
	}
	healthy, failures, successes := st.healthy, st.failures, st.successes
	if flipped {
		gauge := 0.0
		if healthy {
			gauge = 1
		}
		r.metrics.healthy.WithLabelValues(member).Set(gauge)
		// Publish under mu so every subscriber sees flips in the same order.
		for s := range r.subs {
			s.push(Event{Member: member, Healthy: healthy})
		}
	}
	r.mu.Unlock()

	switch {
	case flipped && healthy:
		r.log.Info("ring member up", "member", member, "successes", successes)
	case flipped:
		r.log.Warn("ring member down", "member", member, "failures", failures, "error", checkErr)
	case checkErr != nil:
		r.log.Debug("ring health check failed", "member", member, "failures", failures, "error", checkErr)
	}
}

// SetMembers replaces the ring's members with addrs (each "host:port", in any order,
// duplicates ignored), as a member list from DNS changes. Members that stay keep their health;
// new ones start healthy. Subscribers receive an Event with Joined for every new member and
// with Left for every removed one, so an origin repairs placement after the change. It
// returns an error wrapping ErrInvalidConfig, and changes nothing, when addrs is empty or
// holds an address CheckMember refuses.
func (r *Ring) SetMembers(addrs []string) error {
	if len(addrs) == 0 {
		return fmt.Errorf("set ring members: %w: no members", ErrInvalidConfig)
	}
	for _, a := range addrs {
		if err := CheckMember(a); err != nil {
			return fmt.Errorf("set ring members: %w", invalidError{err})
		}
	}
	next := dedupe(addrs)
	now := time.Now()

	r.mu.Lock()
	if slices.Equal(next, r.members) {
		r.mu.Unlock()
		return nil
	}
	old := r.index
	oldStates := r.states
	seeds := make([]uint64, len(next))
	index := make(map[string]int, len(next))
	states := make([]memberState, len(next))
	var joined, left []string
	for i, mb := range next {
		seeds[i] = memberSeed(mb)
		index[mb] = i
		if j, ok := old[mb]; ok {
			states[i] = oldStates[j]
			continue
		}
		states[i] = memberState{healthy: true, since: now}
		joined = append(joined, mb)
		r.metrics.addMember(mb)
	}
	for _, mb := range r.members {
		if _, ok := index[mb]; !ok {
			left = append(left, mb)
			r.metrics.removeMember(mb)
		}
	}
	r.members, r.seeds, r.index, r.states = next, seeds, index, states
	for s := range r.subs {
		for _, mb := range joined {
			s.push(Event{Member: mb, Healthy: true, Joined: true})
		}
		for _, mb := range left {
			s.push(Event{Member: mb, Left: true})
		}
	}
	r.mu.Unlock()
	r.log.Info("ring members changed", "joined", joined, "left", left, "members", len(next))
	return nil
}
