package origin_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/origin"
)

// fakePeer is an origin as another origin's repair sees it: healthy, holding the blobs it was
// sent, and counting the blob requests it gets.
type fakePeer struct {
	addr string

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
			return // /health and the like: 200
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
