package origin_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/origin"
)

// fakePeer is an origin as another origin's repair sees it: healthy, holding the blobs it was
// sent, and counting the blob requests it gets.
type fakePeer struct {
	addr string
	sick atomic.Bool // fail health checks

	mu    sync.Mutex
	held  map[digest.Digest]bool
	heads []digest.Digest
	puts  []digest.Digest
}

func startFakePeer(t *testing.T) *fakePeer {
	t.Helper()
	p := &fakePeer{held: map[digest.Digest]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, ok := strings.CutPrefix(r.URL.Path, "/internal/blobs/")
		if !ok {
			if p.sick.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return // /health and the like: 200 unless sick
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		switch r.Method {
		case http.MethodHead:
			p.heads = append(p.heads, digest.Digest(d))
			if !p.held[digest.Digest(d)] {
				w.WriteHeader(http.StatusNotFound)
			}
		case http.MethodPut:
			_, _ = io.Copy(io.Discard, r.Body)
			p.puts = append(p.puts, digest.Digest(d))
			p.held[digest.Digest(d)] = true
			w.WriteHeader(http.StatusCreated)
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	}))
	t.Cleanup(srv.Close)
	p.addr = strings.TrimPrefix(srv.URL, "http://")
	return p
}

// reset forgets the requests seen so far and returns them.
func (p *fakePeer) reset() (heads, puts []digest.Digest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	heads, puts = p.heads, p.puts
	p.heads, p.puts = nil, nil
	return heads, puts
}

func (p *fakePeer) putsSoFar() []digest.Digest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.puts)
}

func owners2(d digest.Digest, members ...string) []string { return ring.Rank(d.String(), members)[:2] }

// Repair after a ring change asks only about the blobs whose owners the change moved, and only
// their new owners: a change that moves none of this origin's blobs sends no request at all,
// and one that adds a member copies it exactly the blobs it now owns, asking nobody else.
func TestRepairFollowsWhatTheRingMoved(t *testing.T) {
	t.Parallel()
	a, c, d := startFakePeer(t), startFakePeer(t), startFakePeer(t)
	cl := newCluster(t, 1, 2, nil, func(cfg *origin.Config) {
		cfg.Ring.Members = append(cfg.Ring.Members, a.addr)
		cfg.RepairInterval = time.Hour
	})
	self := cl.nodes[0].addr
	srv := cl.nodes[0].srv()
	require.Eventually(t, srv.Repaired, 10*time.Second, 10*time.Millisecond, "the start-up repair ran")

	// Blobs none of which c would own (so adding c moves nothing), some of which d would own
	// once it joins too.
	var gains, stays []digest.Digest
	for len(gains) < 3 || len(stays) < 3 {
		data, dg := randomBlob(t, 4<<10)
		if slices.Contains(owners2(dg, self, a.addr, c.addr), c.addr) {
			continue
		}
		takes := slices.Contains(owners2(dg, self, a.addr, c.addr, d.addr), d.addr)
		if takes && len(gains) == 3 || !takes && len(stays) == 3 {
			continue
		}
		require.NoError(t, cl.origin(self).Upload(t.Context(), "moved", dg, bytes.NewReader(data), int64(len(data))))
		if takes {
			gains = append(gains, dg)
		} else {
			stays = append(stays, dg)
		}
	}
	_, puts := a.reset()
	require.ElementsMatch(t, append(slices.Clone(gains), stays...), puts, "the upload copied every blob to its other owner")
	require.NoError(t, srv.Repair(t.Context()))
	heads, _ := a.reset()
	require.Len(t, heads, 6, "a full repair asks the other owner about every blob")

	// A change that moves nothing: no request to anyone.
	require.NoError(t, srv.Ring().SetMembers([]string{self, a.addr, c.addr}))
	require.NoError(t, srv.RepairMoved(t.Context()))
	for name, p := range map[string]*fakePeer{"a": a, "c": c} {
		heads, puts := p.reset()
		require.Empty(t, heads, "%s was asked about a blob the change did not move", name)
		require.Empty(t, puts, name)
	}

	// A member that takes over some blobs gets exactly those; nobody else is asked anything.
	require.NoError(t, srv.Ring().SetMembers([]string{self, a.addr, c.addr, d.addr}))
	require.NoError(t, srv.RepairMoved(t.Context()))
	require.Eventually(t, func() bool {
		n, err := srv.QueueLen()
		return err == nil && n == 0 && len(d.putsSoFar()) == len(gains)
	}, 10*time.Second, 10*time.Millisecond, "the copies to d finish")
	heads, puts = d.reset()
	require.ElementsMatch(t, gains, puts, "d got exactly the blobs it now owns")
	for _, h := range heads {
		require.Contains(t, gains, h, "d was asked only about blobs it took over")
	}
	for name, p := range map[string]*fakePeer{"a": a, "c": c} {
		heads, puts := p.reset()
		require.Empty(t, heads, name)
		require.Empty(t, puts, name)
	}
}

// The owners repair computes from the placement are the ring's own, whatever the health of the
// members.
func TestRepairPlacementMatchesRing(t *testing.T) {
	t.Parallel()
	a, b := startFakePeer(t), startFakePeer(t)
	cl := newCluster(t, 1, 2, nil, func(cfg *origin.Config) {
		cfg.Ring.Members = append(cfg.Ring.Members, a.addr, b.addr, "127.0.0.1:1")
	})
	srv := cl.nodes[0].srv()
	check := func() {
		for range 200 {
			_, dg := randomBlob(t, 16)
			require.Equal(t, srv.Ring().Owners(dg.String()), srv.OwnersUnder(dg.String()))
		}
	}
	check() // every member healthy (as members start)
	require.Eventually(t, func() bool {
		for _, m := range srv.Ring().Members() {
			if m.Addr == "127.0.0.1:1" {
				return !m.Healthy
			}
		}
		return false
	}, 15*time.Second, 20*time.Millisecond, "the unreachable member is marked down")
	check() // one down: its blobs go to the next healthy member
}

// The periodic repair pass asks the other owners only about the blobs whose placement it has
// not confirmed since the ring last changed: on a stable ring, the new blobs. A member's health
// flap voids every confirmation (the member may be back without its blobs), and the full pass
// still asks about everything. The figures are logged (docs/origin.md, "Repair"): run with
//
//	go test -run TestRepairPeriodicPassIsIncremental -v ./server/origin/
func TestRepairPeriodicPassIsIncremental(t *testing.T) {
	const n, added = 2000, 96
	a := startFakePeer(t)
	cl := newCluster(t, 1, 2, nil, func(cfg *origin.Config) {
		cfg.Ring.Members = append(cfg.Ring.Members, a.addr)
		cfg.Ring.HealthInterval, cfg.Ring.HealthTimeout = 250*time.Millisecond, 250*time.Millisecond
		cfg.Ring.FailThreshold, cfg.Ring.PassThreshold = 1, 1
		cfg.RepairInterval, cfg.RepairFullInterval, cfg.RepairFullRate = time.Hour, time.Hour, 1_000_000
	})
	self := cl.nodes[0].addr
	srv := cl.nodes[0].srv()
	o := cl.origin(self)
	require.Eventually(t, srv.Repaired, 10*time.Second, 10*time.Millisecond, "the start-up repair ran")
	upload := func(k int) {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range k / 8 {
					data, d := randomBlob(t, 64)
					if err := o.Upload(t.Context(), "many", d, bytes.NewReader(data), int64(len(data))); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	heads := func(pass func(context.Context) error) int {
		t.Helper()
		require.NoError(t, pass(t.Context()))
		h, _ := a.reset()
		return len(h)
	}
	upload(n)
	a.reset()

	full := heads(srv.Repair) // what every periodic pass cost before: every owner of every blob
	require.Equal(t, n, full)
	steady := heads(srv.RepairUnconfirmed)
	require.Zero(t, steady, "a stable ring: every blob was confirmed by the last pass")
	upload(added)
	a.reset()
	fresh := heads(srv.RepairUnconfirmed)
	require.Equal(t, added, fresh, "new blobs only")
	require.Zero(t, heads(srv.RepairUnconfirmed))

	// a's health flaps: both changes reach the repair loop, which voids every confirmation.
	epoch := srv.RingEpoch()
	a.sick.Store(true)
	require.Eventually(t, func() bool { return len(srv.Ring().Owners("x")) == 1 }, 10*time.Second, 5*time.Millisecond, "a unhealthy")
	a.sick.Store(false)
	require.Eventually(t, func() bool { return len(srv.Ring().Owners("x")) == 2 && srv.RingEpoch() >= epoch+2 },
		10*time.Second, 5*time.Millisecond, "a healthy again, both events seen")
	require.NoError(t, srv.RepairMoved(t.Context())) // after the loop's own, or instead of it
	a.reset()
	flapped := heads(srv.RepairUnconfirmed)
	require.Equal(t, n+added, flapped, "after a flap, every blob is asked about again")
	require.Zero(t, heads(srv.RepairUnconfirmed))
	paced := heads(srv.RepairFullPaced)
	require.Equal(t, n+added, paced, "the full pass asks about everything")

	t.Logf("HEAD requests to the other owner per repair pass, %d blobs (R=2, two members):", n)
	t.Logf("  full pass (every periodic pass before):  %d", full)
	t.Logf("  periodic pass, stable ring:              %d", steady)
	t.Logf("  periodic pass after %d new blobs:        %d", added, fresh)
	t.Logf("  periodic pass after a health flap:       %d", flapped)
	t.Logf("  full pass (start, repair_full_interval): %d", paced)
}

// confirmFixture is one origin whose ring has a fake second member, every blob owned by both
// (R=2), with its confirmations' clock in the test's hands.
type confirmFixture struct {
	t     *testing.T
	peer  *fakePeer
	srv   *origin.Server
	o     *client.Origin
	clock atomic.Int64 // nanoseconds added to the real time
}

func newConfirmFixture(t *testing.T) *confirmFixture {
	f := &confirmFixture{t: t, peer: startFakePeer(t)}
	cl := newCluster(t, 1, 2, nil, func(cfg *origin.Config) {
		cfg.Ring.Members = append(cfg.Ring.Members, f.peer.addr)
		cfg.RepairInterval, cfg.RepairFullInterval, cfg.RepairConfirmTTL = time.Hour, time.Hour, time.Hour
	})
	f.srv, f.o = cl.nodes[0].srv(), cl.origin(cl.nodes[0].addr)
	require.Eventually(t, f.srv.Repaired, 10*time.Second, 10*time.Millisecond, "the start-up repair ran")
	f.srv.SetConfirmClock(func() time.Time { return time.Now().Add(time.Duration(f.clock.Load())) })
	return f
}

// upload stores a new blob (which the origin copies to the peer) and confirms it with a full
// pass.
func (f *confirmFixture) upload() (digest.Digest, []byte) {
	data, d := randomBlob(f.t, 64)
	require.NoError(f.t, f.o.Upload(f.t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data))))
	require.NoError(f.t, f.srv.Repair(f.t.Context()))
	require.Zero(f.t, f.periodic(), "confirmed")
	return d, data
}

// holds says whether the peer holds d.
func (p *fakePeer) holds(d digest.Digest) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[d]
}

// periodic runs a periodic pass and counts the blobs it asked the peer about (a copy it queued
// may ask again before this returns: blobs, not requests).
func (f *confirmFixture) periodic() int {
	f.t.Helper()
	f.peer.reset()
	require.NoError(f.t, f.srv.RepairUnconfirmed(f.t.Context()))
	heads, _ := f.peer.reset()
	slices.Sort(heads)
	return len(slices.Compact(heads))
}

// A confirmation expires after repair_confirm_ttl: a copy the other owner lost without a ring
// event is asked about again within it, not only at the next full pass (24 h).
func TestRepairConfirmationExpires(t *testing.T) {
	f := newConfirmFixture(t)
	d, _ := f.upload()
	f.peer.mu.Lock()
	delete(f.peer.held, d) // its cleanup, silently
	f.peer.mu.Unlock()
	f.clock.Store(int64(59 * time.Minute))
	require.Zero(t, f.periodic(), "still within the TTL")
	f.clock.Store(int64(61 * time.Minute))
	require.Equal(t, 1, f.periodic(), "expired: asked again")
	require.Eventually(t, func() bool { return f.peer.holds(d) }, 10*time.Second, 5*time.Millisecond, "copied to it again")
}

// An owner that answers that it lacks a confirmed blob (here to a full pass) voids its
// confirmation: the next periodic pass asks again rather than trusting the old answer.
func TestRepairForgetsWhatAnOwnerLacks(t *testing.T) {
	f := newConfirmFixture(t)
	d, _ := f.upload()
	f.peer.mu.Lock()
	delete(f.peer.held, d)
	f.peer.mu.Unlock()
	require.NoError(t, f.srv.RepairFullPaced(t.Context())) // finds it missing, queues a copy
	require.Eventually(t, func() bool { return f.peer.holds(d) }, 10*time.Second, 5*time.Millisecond, "copied to it again")
	require.Equal(t, 1, f.periodic())
}

// A copy this origin removed voids its confirmation, whether a GC deleted it here or something
// else did (cleanup, an operator) and a pass found it gone: when the blob comes back, the next
// periodic pass asks its owners again.
func TestRepairForgetsWhatThisOriginRemoved(t *testing.T) {
	f := newConfirmFixture(t)
	d, data := f.upload()
	res, err := f.o.GCDelete(t.Context(), d, time.Now().Add(time.Hour), false)
	require.NoError(t, err)
	require.True(t, res.Deleted)
	require.NoError(t, f.o.Upload(t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data))))
	require.Equal(t, 1, f.periodic(), "after a GC delete")

	e, data := f.upload()
	require.NoError(t, f.srv.StoreDelete(e))
	require.Zero(t, f.periodic(), "nothing held, nothing asked")
	require.NoError(t, f.o.Upload(t.Context(), "team/app", e, bytes.NewReader(data), int64(len(data))))
	require.Equal(t, 1, f.periodic(), "after a removal the pass saw")
}
