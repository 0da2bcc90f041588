package scheduler_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// httpTracker serves announces over HTTP from an in-memory tracker, recording each request.
type httpTracker struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []announce.Request
}

func newHTTPTracker(t *testing.T, ft *announcetest.Tracker) *httpTracker {
	h := &httpTracker{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req announce.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.reqs = append(h.reqs, req)
		h.mu.Unlock()
		resp, err := ft.Announce(r.Context(), req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *httpTracker) requests() []announce.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]announce.Request(nil), h.reqs...)
}

// viaClient is a scheduler Tracker whose announces go through an announce.Client and whose
// metainfo comes from the in-memory tracker.
type viaClient struct {
	*announce.Client
	ft *announcetest.Tracker
}

func (v viaClient) Metainfo(ctx context.Context, ns string, d digest.Digest) (metainfo.MetaInfo, error) {
	return v.ft.Metainfo(ctx, ns, d)
}

// TestAnnounceProgressAndFailover: an agent's announces carry its progress in pieces and its
// API address; when the first tracker of the blob fails, the announce goes on to the next and
// the agent publishes a tracker_failover event naming the one that failed and why.
func TestAnnounceProgressAndFailover(t *testing.T) {
	ft := announcetest.New()
	blob := randomBlob(t, 1<<20)
	_, d := startOrigin(t, ft, blob, scheduler.Config{})
	good := newHTTPTracker(t, ft)
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	t.Cleanup(bad.Close)
	goodAddr, badAddr := good.srv.Listener.Addr().String(), bad.Listener.Addr().String()
	for ring.Rank(d.String(), []string{goodAddr, badAddr})[0] != badAddr {
		// The failing tracker must rank first for d; swap the servers' roles by restarting
		// the bad one on a new port until it does.
		bad.Close()
		bad = httptest.NewServer(bad.Config.Handler)
		t.Cleanup(bad.Close)
		badAddr = bad.Listener.Addr().String()
	}

	var sched atomic.Pointer[scheduler.Scheduler]
	ac, err := announce.NewClient([]string{goodAddr, badAddr}, nil, announce.WithBackoff(0),
		announce.WithFailover(func(d digest.Digest, tracker string, err error) {
			if s := sched.Load(); s != nil {
				s.TrackerFailover(d, tracker, err)
			}
		}))
	require.NoError(t, err)
	const api = "127.0.0.1:16000"
	a := startNode(t, t.TempDir(), scheduler.Config{API: api}, viaClient{Client: ac, ft: ft})
	sched.Store(a.s)
	events, unsubscribe := a.s.Subscribe(1024)
	defer unsubscribe()

	got, err := pull(t.Context(), a.s, d)
	require.NoError(t, err)
	require.Equal(t, blob, got)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var failover snapshot.Event
	for failover.Kind != snapshot.EventTrackerFailover {
		select {
		case failover = <-events:
		case <-ctx.Done():
			t.Fatal("no tracker_failover event")
		}
	}
	require.Equal(t, d, failover.Digest)
	require.Equal(t, badAddr, failover.Addr)
	require.Contains(t, failover.Err, "503")

	// Once it has the blob, the agent announces it whole.
	mi, err := ft.Metainfo(t.Context(), "library/test", d)
	require.NoError(t, err)
	pieces := mi.NumPieces()
	require.Greater(t, pieces, 1)
	require.Eventually(t, func() bool {
		reqs := good.requests()
		last := reqs[len(reqs)-1]
		return last.Complete && last.Have == last.Pieces
	}, time.Minute, 10*time.Millisecond)
	for _, r := range good.requests() {
		require.Equal(t, api, r.API)
		require.LessOrEqual(t, r.Have, r.Pieces)
		if r.Pieces != 0 {
			require.Equal(t, pieces, r.Pieces, "%+v", r)
		}
	}
}

// TestNewRefusesBadAPI: an API address the tracker protocol refuses would fail every announce,
// so the scheduler refuses it at once.
func TestNewRefusesBadAPI(t *testing.T) {
	st, err := castore.Open(t.TempDir(), castore.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, st.Close()) }()
	for _, api := range []string{"agent.example:16000", "0.0.0.0:16000", "10.0.0.1"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		_, err = scheduler.New(scheduler.Config{API: api}, scheduler.Deps{Store: st, Listener: ln, Tracker: announcetest.New()})
		require.NoError(t, ln.Close())
		require.ErrorIs(t, err, announce.ErrInvalid, api)
		require.ErrorContains(t, err, "api:", api)
	}
}
