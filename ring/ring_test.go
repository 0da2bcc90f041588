package ring_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/ring/ringtest"
)

// checkFunc adapts a function to ring.Checker.
type checkFunc func(ctx context.Context, member string) error

func (f checkFunc) Check(ctx context.Context, member string) error { return f(ctx, member) }

// newRing builds a ring over fiveMembers with R=3, fail threshold 2 and pass threshold 2,
// checked by a ringtest.Checker.
func newRing(t *testing.T, mutate ...func(*ring.Config)) (*ring.Ring, *ringtest.Checker) {
	t.Helper()
	cfg := ring.Config{Members: slices.Clone(fiveMembers), Replicas: 3, FailThreshold: 2, PassThreshold: 2}
	for _, m := range mutate {
		m(&cfg)
	}
	chk := &ringtest.Checker{}
	r, err := ring.New(cfg, ring.Deps{Checker: chk})
	require.NoError(t, err)
	return r, chk
}

func checkRounds(t *testing.T, r *ring.Ring, n int) {
	t.Helper()
	for range n {
		require.NoError(t, r.CheckNow(t.Context()))
	}
}

func status(t *testing.T, r *ring.Ring, member string) ring.MemberStatus {
	t.Helper()
	for _, s := range r.Members() {
		if s.Addr == member {
			return s
		}
	}
	t.Fatalf("member %s not in ring", member)
	return ring.MemberStatus{}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := ring.New(ring.Config{}, ring.Deps{})
	require.ErrorIs(t, err, ring.ErrInvalidConfig)
	require.ErrorContains(t, err, "ring.members")
	_, err = ring.New(ring.Config{Members: []string{"a:1"}, Replicas: -3}, ring.Deps{})
	require.ErrorContains(t, err, "ring.replicas must be >= 1, got -3")

	// Defaults are applied to New's copy, not to the caller's value.
	cfg := ring.Config{Members: []string{"a:1", "b:2"}}
	r, err := ring.New(cfg, ring.Deps{})
	require.NoError(t, err)
	require.Zero(t, cfg.Replicas)
	require.Equal(t, 2, r.Replicas(), "R=3 is capped at two members")
	require.True(t, r.IsMember("a:1"))
	require.False(t, r.IsMember("c:3"))
}

// TestStartEmpty: a ring allowed to start without members owns nothing until SetMembers.
func TestStartEmpty(t *testing.T) {
	t.Parallel()
	r, err := ring.New(ring.Config{}, ring.Deps{StartEmpty: true})
	require.NoError(t, err)
	require.Empty(t, r.Owners("k"))
	require.Empty(t, r.RankHealthyFirst("k"))
	require.Empty(t, r.Members())
	require.Zero(t, r.Replicas())
	_, err = ring.New(ring.Config{Replicas: -1}, ring.Deps{StartEmpty: true})
	require.ErrorContains(t, err, "ring.replicas", "the rest is still checked")

	require.NoError(t, r.SetMembers([]string{"a:1", "b:2"}))
	require.Len(t, r.Owners("k"), 2)
	require.ErrorIs(t, r.SetMembers(nil), ring.ErrInvalidConfig, "never back to empty")
}

func TestPlacementMatchesRank(t *testing.T) {
	t.Parallel()
	r, _ := newRing(t)
	for _, k := range digestKeys(100) {
		rank := ring.Rank(k, fiveMembers)
		require.Equal(t, rank, r.Rank(k))
		require.Equal(t, rank[:3], r.Locations(k))
		require.Equal(t, rank[:3], r.Owners(k))
		for i, m := range rank {
			require.Equal(t, i < 3, r.IsOwner(m, k))
		}
	}
	require.False(t, r.IsOwner("10.9.9.9:1", "k"))
}

func TestLocationsWithFewerMembersThanReplicas(t *testing.T) {
	t.Parallel()
	r, _ := newRing(t, func(c *ring.Config) { c.Members = []string{"a:1", "b:1"}; c.Replicas = 5 })
	require.ElementsMatch(t, []string{"a:1", "b:1"}, r.Locations("k"))
	require.ElementsMatch(t, []string{"a:1", "b:1"}, r.Owners("k"))
}

// TestOwnersFollowHealth is the ring's main promise: while a member is down, each key it
// owned is owned by the member ranked right after the key's top 3, and everything else stays
// put; when it recovers, the original placement returns.
func TestOwnersFollowHealth(t *testing.T) {
	t.Parallel()
	r, chk := newRing(t)
	keys := digestKeys(2000)
	before := make(map[string][]string, len(keys))
	for _, k := range keys {
		before[k] = r.Owners(k)
	}
	dead := fiveMembers[1]

	chk.SetDown(dead)
	checkRounds(t, r, 1)
	require.True(t, status(t, r, dead).Healthy, "one failure is below fail_threshold=2")
	for _, k := range keys {
		require.Equal(t, before[k], r.Owners(k))
	}

	checkRounds(t, r, 1)
	require.False(t, status(t, r, dead).Healthy)
	moved := 0
	for _, k := range keys {
		rank := ring.Rank(k, fiveMembers)
		owners := r.Owners(k)
		require.Equal(t, rank[:3], r.Locations(k), "Locations ignores health")
		require.False(t, r.IsOwner(dead, k))
		if !slices.Contains(before[k], dead) {
			require.Equal(t, before[k], owners, "key %s did not involve %s but moved", k, dead)
			continue
		}
		moved++
		require.Equal(t, append(without(before[k], dead), rank[3]), owners, "key %s", k)
	}
	require.Positive(t, moved)

	chk.SetUp(dead)
	checkRounds(t, r, 1)
	require.False(t, status(t, r, dead).Healthy, "one success is below pass_threshold=2")
	checkRounds(t, r, 1)
	require.True(t, status(t, r, dead).Healthy)
	for _, k := range keys {
		require.Equal(t, before[k], r.Owners(k))
	}
}

func TestOwnersWithFewOrNoHealthyMembers(t *testing.T) {
	t.Parallel()
	r, chk := newRing(t)
	alive := []string{fiveMembers[0], fiveMembers[3]}
	for _, m := range fiveMembers {
		if !slices.Contains(alive, m) {
			chk.SetDown(m)
		}
	}
	checkRounds(t, r, 2)
	for _, k := range digestKeys(200) {
		var want []string
		for _, m := range ring.Rank(k, fiveMembers) {
			if slices.Contains(alive, m) {
				want = append(want, m)
			}
		}
		require.Equal(t, want, r.Owners(k), "the healthy members, in rank order")
	}

	for _, m := range alive {
		chk.SetDown(m)
	}
	checkRounds(t, r, 2)
	for _, s := range r.Members() {
		require.False(t, s.Healthy)
	}
	for _, k := range digestKeys(200) {
		require.Equal(t, r.Locations(k), r.Owners(k), "with nobody healthy, try the nominal owners")
	}
}

func TestThresholds(t *testing.T) {
	t.Parallel()
	r, chk := newRing(t, func(c *ring.Config) { c.FailThreshold = 3; c.PassThreshold = 2 })
	m := fiveMembers[2]
	step := func(up bool, wantHealthy bool, wantFails, wantPasses int) {
		t.Helper()
		if up {
			chk.SetUp(m)
		} else {
			chk.SetError(m, errors.New("disk on fire"))
		}
		checkRounds(t, r, 1)
		s := status(t, r, m)
		require.Equal(t, wantHealthy, s.Healthy)
		require.Equal(t, wantFails, s.ConsecutiveFailures)
		require.Equal(t, wantPasses, s.ConsecutiveSuccesses)
		if up {
			require.Empty(t, s.LastError)
		} else {
			require.Contains(t, s.LastError, "disk on fire")
		}
	}
	step(false, true, 1, 0)
	step(false, true, 2, 0)
	step(true, true, 0, 1) // a success resets the failure run
	step(false, true, 1, 0)
	step(false, true, 2, 0)
	step(false, false, 3, 0) // third consecutive failure: down
	step(false, false, 4, 0)
	step(true, false, 0, 1)
	step(false, false, 1, 0) // a failure resets the success run
	step(true, false, 0, 1)
	step(true, true, 0, 2) // second consecutive success: up
	step(true, true, 0, 3)
	require.Equal(t, 12, chk.Checks(m))
	// The other members were checked too and stayed healthy.
	for _, s := range r.Members() {
		if s.Addr != m {
			require.True(t, s.Healthy)
			require.Equal(t, 12, s.ConsecutiveSuccesses)
		}
	}
}

func TestMembersSnapshot(t *testing.T) {
	t.Parallel()
	r, chk := newRing(t, func(c *ring.Config) {
		c.Members = []string{"c:1", "a:1", "b:1"}
		c.FailThreshold = 1
	})
	created := r.Members()
	require.Equal(t, []string{"a:1", "b:1", "c:1"}, addrs(created), "sorted by address")
	for _, s := range created {
		require.True(t, s.Healthy, "members start healthy")
		require.True(t, s.LastCheck.IsZero())
		require.False(t, s.Since.IsZero())
	}
	chk.SetDown("b:1")
	checkRounds(t, r, 1)
	got := r.Members()
	require.Equal(t, []string{"a:1", "b:1", "c:1"}, addrs(got))
	b := got[1]
	require.False(t, b.Healthy)
	require.False(t, b.LastCheck.IsZero())
	require.Equal(t, b.LastCheck, b.Since, "went down at its last check")
	require.Contains(t, b.LastError, ringtest.ErrDown.Error())
	require.Equal(t, created[0].Since, got[0].Since, "a healthy member's Since does not move")
}

func addrs(ss []ring.MemberStatus) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.Addr
	}
	return out
}

// recv returns the next event, failing when none is ready once every goroutine in the bubble
// is blocked.
func recv(t *testing.T, ch <-chan ring.Event) ring.Event {
	t.Helper()
	synctest.Wait()
	select {
	case ev, ok := <-ch:
		require.True(t, ok, "channel closed")
		return ev
	default:
		t.Fatal("no event")
		return ring.Event{}
	}
}

func requireNoEvent(t *testing.T, ch <-chan ring.Event) {
	t.Helper()
	synctest.Wait()
	select {
	case ev := <-ch:
		t.Fatalf("unexpected event %+v", ev)
	default:
	}
}

func TestEventsFireExactlyOnFlips(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r, chk := newRing(t)
		ch, cancel := r.Subscribe()
		defer cancel()
		other, cancelOther := r.Subscribe()
		defer cancelOther()
		m := fiveMembers[4]

		checkRounds(t, r, 3)
		requireNoEvent(t, ch) // healthy members staying healthy

		chk.SetDown(m)
		checkRounds(t, r, 1)
		requireNoEvent(t, ch) // below the threshold
		checkRounds(t, r, 1)
		require.Equal(t, ring.Event{Member: m, Healthy: false}, recv(t, ch))
		require.Equal(t, ring.Event{Member: m, Healthy: false}, recv(t, other), "every subscriber is told")
		checkRounds(t, r, 3)
		requireNoEvent(t, ch) // staying down

		chk.SetUp(m)
		checkRounds(t, r, 1)
		requireNoEvent(t, ch)
		checkRounds(t, r, 1)
		require.Equal(t, ring.Event{Member: m, Healthy: true}, recv(t, ch))
		require.Equal(t, ring.Event{Member: m, Healthy: true}, recv(t, other))
		checkRounds(t, r, 2)
		requireNoEvent(t, ch)
		requireNoEvent(t, other)
	})
}

// TestSlowSubscriberCoalesces checks that a subscriber that is not receiving neither blocks the
// health checks nor piles up events: it gets every member's latest state, in the order of
// those latest flips.
func TestSlowSubscriberCoalesces(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r, chk := newRing(t, func(c *ring.Config) { c.FailThreshold = 1; c.PassThreshold = 1 })
		ch, cancel := r.Subscribe()
		defer cancel()
		a, b, c := fiveMembers[0], fiveMembers[1], fiveMembers[2]
		flip := func(m string, up bool) {
			if up {
				chk.SetUp(m)
			} else {
				chk.SetDown(m)
			}
			checkRounds(t, r, 1)
			synctest.Wait() // let the subscription's goroutine settle, so the queue below is exact
		}

		flip(a, false) // taken by the subscription's goroutine, which waits on the channel
		flip(c, false) // queue: c↓
		flip(a, true)  // queue: c↓ a↑
		flip(b, false) // queue: c↓ a↑ b↓
		flip(a, false) // a's newer flip replaces a↑ and goes last: c↓ b↓ a↓
		for range 50 { // many more flips of a, none of which blocks CheckNow or grows the queue
			flip(a, true)
			flip(a, false)
		}

		require.Equal(t, ring.Event{Member: a, Healthy: false}, recv(t, ch))
		require.Equal(t, ring.Event{Member: c, Healthy: false}, recv(t, ch))
		require.Equal(t, ring.Event{Member: b, Healthy: false}, recv(t, ch))
		require.Equal(t, ring.Event{Member: a, Healthy: false}, recv(t, ch))
		requireNoEvent(t, ch)
	})
}

func TestSubscribeCancel(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r, chk := newRing(t, func(c *ring.Config) { c.FailThreshold = 1 })
		ch, cancel := r.Subscribe()
		chk.SetDown(fiveMembers[0])
		checkRounds(t, r, 1) // leaves an undelivered event
		cancel()
		cancel() // idempotent
		_, ok := <-ch
		require.False(t, ok, "cancel closes the channel and drops undelivered events")

		// Cancelling from the receiving goroutine, with an event pending, does not deadlock.
		ch2, cancel2 := r.Subscribe()
		chk.SetUp(fiveMembers[0])
		checkRounds(t, r, 2)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range ch2 {
				cancel2()
			}
		}()
		<-done

		// Flips after cancellation reach nobody and block nothing.
		chk.SetDown(fiveMembers[0])
		checkRounds(t, r, 1)
	})
}

func TestRunChecksEveryIntervalUntilCancelled(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r, chk := newRing(t, func(c *ring.Config) { c.HealthInterval = 10 * time.Second; c.HealthTimeout = time.Second })
		ch, cancelSub := r.Subscribe()
		defer cancelSub()
		ctx, cancel := context.WithCancel(t.Context())
		runErr := make(chan error, 1)
		go func() { runErr <- r.Run(ctx) }()

		synctest.Wait()
		m := fiveMembers[0]
		require.Equal(t, 1, chk.Checks(m), "Run checks immediately")
		require.ErrorIs(t, r.Run(ctx), ring.ErrRunning)

		chk.SetDown(m)
		time.Sleep(9 * time.Second)
		synctest.Wait()
		require.Equal(t, 1, chk.Checks(m), "not before the interval")
		time.Sleep(time.Second)
		synctest.Wait()
		require.Equal(t, 2, chk.Checks(m))
		require.True(t, status(t, r, m).Healthy)
		time.Sleep(10 * time.Second)
		require.Equal(t, ring.Event{Member: m, Healthy: false}, recv(t, ch))
		require.Equal(t, 3, chk.Checks(m))
		for _, other := range fiveMembers[1:] {
			require.Equal(t, 3, chk.Checks(other))
		}

		cancel()
		synctest.Wait()
		select {
		case err := <-runErr:
			require.NoError(t, err)
		default:
			t.Fatal("Run did not return after cancel")
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		require.Equal(t, 3, chk.Checks(m), "no checks after Run returned")

		// The ring can be run again once the previous Run returned.
		ctx2, cancel2 := context.WithCancel(t.Context())
		go func() { runErr <- r.Run(ctx2) }()
		synctest.Wait()
		require.Equal(t, 4, chk.Checks(m))
		cancel2()
		require.NoError(t, <-runErr)
	})
}

func TestCheckTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		hang := fiveMembers[3]
		chk := checkFunc(func(ctx context.Context, member string) error {
			if member != hang {
				return nil
			}
			<-ctx.Done()
			return ctx.Err()
		})
		r, err := ring.New(ring.Config{Members: fiveMembers, HealthTimeout: 1500 * time.Millisecond, FailThreshold: 1}, ring.Deps{Checker: chk})
		require.NoError(t, err)
		start := time.Now()
		require.NoError(t, r.CheckNow(t.Context()))
		require.Equal(t, 1500*time.Millisecond, time.Since(start), "the round waits exactly for the timeout (fake clock)")
		s := status(t, r, hang)
		require.False(t, s.Healthy)
		require.Contains(t, s.LastError, "no answer within 1.5s")
		require.Contains(t, s.LastError, context.DeadlineExceeded.Error())
	})
}

func TestCheckNowCancelledRecordsNothing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		started := make(chan struct{}, len(fiveMembers))
		chk := checkFunc(func(ctx context.Context, member string) error {
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		})
		r, err := ring.New(ring.Config{Members: fiveMembers, FailThreshold: 1}, ring.Deps{Checker: chk})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.CheckNow(ctx) }()
		synctest.Wait()
		require.Len(t, started, len(fiveMembers), "all members are checked at once")
		cancel()
		err = <-done
		require.ErrorIs(t, err, context.Canceled)
		for _, s := range r.Members() {
			require.True(t, s.Healthy, "shutdown is not the members' fault")
			require.Zero(t, s.ConsecutiveFailures)
			require.True(t, s.LastCheck.IsZero())
		}
		require.ErrorIs(t, r.CheckNow(ctx), context.Canceled)
	})
}

func TestRoundsDoNotOverlap(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		inFlight, maxInFlight := 0, 0
		chk := checkFunc(func(ctx context.Context, member string) error {
			mu.Lock()
			inFlight++
			maxInFlight = max(maxInFlight, inFlight)
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			mu.Lock()
			inFlight--
			mu.Unlock()
			return nil
		})
		r, err := ring.New(ring.Config{Members: fiveMembers}, ring.Deps{Checker: chk})
		require.NoError(t, err)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { assert.NoError(t, r.CheckNow(t.Context())) })
		}
		wg.Wait()
		require.Equal(t, len(fiveMembers), maxInFlight, "one round at a time, all members at once")
		for _, s := range r.Members() {
			require.Equal(t, 4, s.ConsecutiveSuccesses)
		}
	})
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				if g := m.GetGauge(); g != nil {
					return g.GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

func matches(m *dto.Metric, labels map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	return fmt.Sprint(got) == fmt.Sprint(labels)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	chk := &ringtest.Checker{}
	r, err := ring.New(ring.Config{Members: fiveMembers, FailThreshold: 2, PassThreshold: 1}, ring.Deps{Checker: chk, Registerer: reg})
	require.NoError(t, err)
	m := fiveMembers[0]
	healthy := func() float64 {
		return metricValue(t, reg, "krakenctl_ring_member_healthy", map[string]string{"member": m})
	}
	checks := func(result string) float64 {
		return metricValue(t, reg, "krakenctl_ring_health_checks_total", map[string]string{"member": m, "result": result})
	}
	require.InDelta(t, 1.0, healthy(), 0)
	require.InDelta(t, 0.0, checks("failure"), 0, "series exist before the first check")

	chk.SetDown(m)
	checkRounds(t, r, 2)
	require.InDelta(t, 0.0, healthy(), 0)
	require.InDelta(t, 2.0, checks("failure"), 0)
	require.InDelta(t, 0.0, checks("success"), 0)
	chk.SetUp(m)
	checkRounds(t, r, 1)
	require.InDelta(t, 1.0, healthy(), 0)
	require.InDelta(t, 1.0, checks("success"), 0)
	require.InDelta(t, 3.0, metricValue(t, reg, "krakenctl_ring_health_checks_total", map[string]string{"member": fiveMembers[1], "result": "success"}), 0)

	// A second ring on the same registry is refused rather than silently unexported, and
	// leaves the registry as it was.
	_, err = ring.New(ring.Config{Members: fiveMembers}, ring.Deps{Registerer: reg})
	require.Error(t, err)
	require.InDelta(t, 1.0, healthy(), 0)
}

func TestRingWithHTTPChecker(t *testing.T) {
	t.Parallel()
	up := serve(t, func(w http.ResponseWriter, r *http.Request) {})
	broken := serve(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	gone := closedAddr(t)
	r, err := ring.New(ring.Config{Members: []string{up, broken, gone}, FailThreshold: 1},
		ring.Deps{Checker: ring.HTTPChecker{Client: testClient(t)}})
	require.NoError(t, err)
	require.NoError(t, r.CheckNow(t.Context()))
	got := map[string]bool{}
	for _, s := range r.Members() {
		got[s.Addr] = s.Healthy
	}
	require.Equal(t, map[string]bool{up: true, broken: false, gone: false}, got)
	for _, k := range digestKeys(50) {
		require.Equal(t, []string{up}, r.Owners(k))
	}
	require.Contains(t, status(t, r, broken).LastError, "503 Service Unavailable")
}

// TestConcurrentUse runs placement queries, snapshots and subscriptions while rounds flip
// members, for the race detector.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	r, chk := newRing(t, func(c *ring.Config) { c.FailThreshold = 1; c.PassThreshold = 1 })
	keys := digestKeys(100)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for ctx.Err() == nil {
				for _, k := range keys {
					assert.NotEmpty(t, r.Owners(k))
					r.IsOwner(fiveMembers[0], k)
				}
				assert.Len(t, r.Members(), len(fiveMembers))
			}
		})
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			ch, unsub := r.Subscribe()
			select {
			case <-ch:
			case <-ctx.Done():
			}
			unsub()
		}
	})
	for i := range 50 {
		m := fiveMembers[i%len(fiveMembers)]
		if i%2 == 0 {
			chk.SetDown(m)
		} else {
			chk.SetUp(m)
		}
		require.NoError(t, r.CheckNow(t.Context()))
	}
	cancel()
	wg.Wait()
}

// RankHealthyFirst keeps every member: the healthy ones in rank order, then the others.
func TestRankHealthyFirst(t *testing.T) {
	t.Parallel()
	r, chk := newRing(t)
	keys := digestKeys(200)
	for _, k := range keys {
		require.Equal(t, ring.Rank(k, fiveMembers), r.RankHealthyFirst(k), "all healthy: the rank")
	}
	dead := fiveMembers[2]
	chk.SetDown(dead)
	checkRounds(t, r, 2)
	require.False(t, status(t, r, dead).Healthy)
	for _, k := range keys {
		require.Equal(t, append(without(ring.Rank(k, fiveMembers), dead), dead), r.RankHealthyFirst(k), "key %s", k)
	}
}
