package tracker

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// TestRetryAfterBacksOff: an origin that does not answer is read again after 100 ms, then
// 200, 400 ... up to the 5 s interval (it was a flat 5 s, which left origins started with
// their tracker out of handouts for that long).
func TestRetryAfterBacksOff(t *testing.T) {
	t.Parallel()
	var got []time.Duration
	for fails := 1; fails <= 9; fails++ {
		got = append(got, retryAfter(fails))
	}
	ms := time.Millisecond
	require.Equal(t, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5000 * ms, 5000 * ms, 5000 * ms}, got)
	require.Equal(t, originRetry, retryAfter(1000), "no overflow")
}

// fakeOrigin serves /peer once up is set, 503 before, as an origin still starting would (or
// nothing at all: a refused connection is the same failure to the tracker).
func fakeOrigin(t *testing.T, up *atomic.Bool) (addr, peerID string) {
	t.Helper()
	peerID = wire.RandomPeerID().String()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != api.PeerPath || !up.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(api.PeerInfo{ID: peerID, Addr: "127.0.0.1:16001"})
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), peerID
}

// TestOriginStartedAfterTrackerIsReadSoon drives the origin refresher by a fake clock: an
// origin that is down when the tracker starts is read again on the backoff schedule (not
// before, not later), on demand when a handout lacks it (but not more often than every
// 100 ms), and is handed out from the first read that finds it up.
func TestOriginStartedAfterTrackerIsReadSoon(t *testing.T) {
	t.Parallel()
	var up atomic.Bool
	addr, peerID := fakeOrigin(t, &up)
	o := newOriginPeers([]string{addr}, &http.Client{Timeout: 5 * time.Second}, slog.New(slog.DiscardHandler),
		newAddrPolicy(AnnounceConfig{AllowLoopback: true}), nil)
	t0 := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	now := t0
	o.now = func() time.Time { return now }
	d := digest.FromString("blob")

	o.refresh(t.Context(), func(originState) bool { return true }) // the first round, at start
	require.EqualValues(t, 1, o.reads.Load())
	require.Empty(t, o.owners(d, 1), "down: left out of handouts")
	require.Equal(t, 100*time.Millisecond, o.untilNext(now))

	// Rounds before the next read is due read nothing; at each due time one read, the wait
	// doubling.
	at := t0
	for i, wait := range []time.Duration{100, 200, 400, 800} {
		wait *= time.Millisecond
		now = at.Add(wait - time.Millisecond)
		o.round(t.Context())
		require.EqualValues(t, 1+i, o.reads.Load(), "not due %v after read %d", wait-time.Millisecond, i+1)
		now = at.Add(wait)
		o.round(t.Context())
		require.EqualValues(t, 2+i, o.reads.Load(), "due %v after read %d", wait, i+1)
		at = now
	}
	require.Equal(t, 1600*time.Millisecond, o.untilNext(now))

	// On demand (a handout lacked this owner): read now although not due, but not twice
	// within 100 ms.
	reads := o.reads.Load()
	now = at.Add(50 * time.Millisecond)
	o.wanted()
	o.round(t.Context())
	require.Equal(t, reads, o.reads.Load(), "read 50 ms ago: not again yet")
	now = at.Add(100 * time.Millisecond)
	o.wanted()
	o.round(t.Context())
	require.Equal(t, reads+1, o.reads.Load(), "wanted: read before its turn")
	at = now
	o.round(t.Context())
	require.Equal(t, reads+1, o.reads.Load(), "one wanted, one early read")

	// The origin comes up; its next read (due within the backoff) hands it out.
	up.Store(true)
	now = at.Add(o.untilNext(at))
	require.LessOrEqual(t, now.Sub(at), originRetry)
	o.round(t.Context())
	owners := o.owners(d, 1)
	require.Len(t, owners, 1)
	require.Equal(t, peerID, owners[0].ID)
	st := o.state[addr]
	require.Zero(t, st.fails)
	require.Equal(t, now.Add(originRefresh), st.next, "answered: read again after originRefresh")
}
