package tracker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/tracker"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
)

// getMetainfo fetches a metainfo document from a tracker and returns the status, the
// Content-Type, the body and the error code of an error body.
func getMetainfo(t *testing.T, hc *http.Client, addr, ns string, d digest.Digest) (int, string, []byte, string) {
	t.Helper()
	resp := send(t, hc, http.MethodGet, "http://"+addr+announce.MetainfoPath(ns, d), "", nil)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var doc struct{ Errors []struct{ Code string } }
	code := ""
	if resp.StatusCode != http.StatusOK && json.Unmarshal(body, &doc) == nil && len(doc.Errors) > 0 {
		code = doc.Errors[0].Code
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), body, code
}

// TestMetainfoCache: a miss asks the owning origin once; later requests are hits.
func TestMetainfoCache(t *testing.T) {
	t.Parallel()
	var mi metainfo.MetaInfo
	origins := make([]*fakeOrigin, 3)
	for i := range origins {
		origins[i] = newFakeOrigin(t)
	}
	for i := range origins {
		mi = origins[i].add(t, "cached blob")
	}
	ranked := originsByAddrRank(origins, mi.Digest)
	tt := startTracker(t, tracker.Config{Origins: addrsOf(origins)}, nil)
	hc := httpClient(t)
	want, err := mi.Encode()
	require.NoError(t, err)
	for range 3 {
		status, ctype, body, _ := getMetainfo(t, hc, tt.addr, "library/app", mi.Digest)
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, "application/json", ctype)
		require.Equal(t, want, body)
	}
	// Another namespace hits the same entry: metainfo depends on the content only.
	status, _, _, _ := getMetainfo(t, hc, tt.addr, "other", mi.Digest)
	require.Equal(t, http.StatusOK, status)
	require.EqualValues(t, 1, ranked[0].metaCalls.Load(), "the first owner is asked once")
	require.EqualValues(t, 0, ranked[1].metaCalls.Load()+ranked[2].metaCalls.Load())
	require.EqualValues(t, 1, tt.metric(t, "krakenctl_tracker_metainfo_requests_total", "miss"))
	require.EqualValues(t, 3, tt.metric(t, "krakenctl_tracker_metainfo_requests_total", "hit"))
}

func originsByAddrRank(origins []*fakeOrigin, d digest.Digest) []*fakeOrigin {
	byAddr := map[string]*fakeOrigin{}
	for _, o := range origins {
		byAddr[o.addr] = o
	}
	var out []*fakeOrigin
	for _, a := range rankOf(d, addrsOf(origins)) {
		out = append(out, byAddr[a])
	}
	return out
}

// TestMetainfoSingleflight: concurrent misses for one blob make one origin request, and all of
// them get the answer.
func TestMetainfoSingleflight(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	mi := o.add(t, "popular blob")
	gate := make(chan struct{})
	o.setGate(gate)
	tt := startTracker(t, tracker.Config{Origins: []string{o.addr}}, nil)
	c := announceClient(t, tt.addr)

	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	got := make([]metainfo.MetaInfo, n)
	for i := range n {
		wg.Go(func() { got[i], errs[i] = c.Metainfo(t.Context(), "library/app", mi.Digest) })
	}
	require.Eventually(t, func() bool { return tt.srv.MetainfoWaiting() == n }, 30*time.Second, time.Millisecond)
	close(gate)
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, mi, got[i])
	}
	require.EqualValues(t, 1, o.metaCalls.Load())
	require.EqualValues(t, n, tt.metric(t, "krakenctl_tracker_metainfo_requests_total", "miss"))
}

// TestMetainfoLRU: the cache holds metainfo_cache entries, dropping the least recently used.
func TestMetainfoLRU(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	var mis []metainfo.MetaInfo
	for i := range 3 {
		mis = append(mis, o.add(t, fmt.Sprintf("blob %d", i)))
	}
	tt := startTracker(t, tracker.Config{Origins: []string{o.addr}, MetainfoCache: 2}, nil)
	hc := httpClient(t)
	get := func(i int) {
		status, _, _, _ := getMetainfo(t, hc, tt.addr, "app", mis[i].Digest)
		require.Equal(t, http.StatusOK, status)
	}
	get(0)
	get(1)
	get(0) // 0 is now more recent than 1
	get(2) // evicts 1
	require.EqualValues(t, 3, o.metaCalls.Load())
	get(0)
	get(2)
	require.EqualValues(t, 3, o.metaCalls.Load(), "0 and 2 are cached")
	get(1)
	require.EqualValues(t, 4, o.metaCalls.Load(), "1 was evicted")
}

// TestMetainfoErrors: 404 from the origins is passed on and not cached; origins that answer
// with errors make a 502 and unreachable ones a 503; the next origin in rank order is asked
// when one fails; bad requests are 400s.
func TestMetainfoErrors(t *testing.T) {
	t.Parallel()
	hc := httpClient(t)

	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		o := newFakeOrigin(t)
		tt := startTracker(t, tracker.Config{Origins: []string{o.addr}}, nil)
		d := digest.FromString("missing")
		for range 2 {
			status, _, _, code := getMetainfo(t, hc, tt.addr, "app", d)
			require.Equal(t, http.StatusNotFound, status)
			require.Equal(t, "BLOB_UNKNOWN", code)
		}
		require.EqualValues(t, 2, o.metaCalls.Load(), "failures are not cached")
		require.EqualValues(t, 2, tt.metric(t, "krakenctl_tracker_metainfo_requests_total", "error"))
		_, err := announceClient(t, tt.addr).Metainfo(t.Context(), "app", d)
		require.ErrorIs(t, err, announce.ErrNotFound)
	})

	t.Run("failover to the next origin", func(t *testing.T) {
		t.Parallel()
		os := []*fakeOrigin{newFakeOrigin(t), newFakeOrigin(t)}
		var mi metainfo.MetaInfo
		for _, o := range os {
			mi = o.add(t, "failover")
		}
		ranked := originsByAddrRank(os, mi.Digest)
		ranked[0].setFail(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) })
		tt := startTracker(t, tracker.Config{Origins: addrsOf(os)}, nil)
		status, _, _, _ := getMetainfo(t, hc, tt.addr, "app", mi.Digest)
		require.Equal(t, http.StatusOK, status)
		require.EqualValues(t, 1, ranked[0].metaCalls.Load())
		require.EqualValues(t, 1, ranked[1].metaCalls.Load())
	})

	t.Run("origins answer errors", func(t *testing.T) {
		t.Parallel()
		a, b := newFakeOrigin(t), newFakeOrigin(t)
		mi := a.add(t, "bad gateway")
		b.add(t, "bad gateway")
		a.setFail(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", http.StatusServiceUnavailable) })
		other := genMetainfo(t, "something else")
		data, err := other.Encode()
		require.NoError(t, err)
		b.setFail(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(data) }) // the wrong blob's metainfo
		tt := startTracker(t, tracker.Config{Origins: []string{a.addr, b.addr}}, nil)
		status, _, _, code := getMetainfo(t, hc, tt.addr, "app", mi.Digest)
		require.Equal(t, http.StatusBadGateway, status)
		require.Equal(t, "UNAVAILABLE", code)
		_, err = announceClient(t, tt.addr).Metainfo(t.Context(), "app", mi.Digest)
		require.ErrorIs(t, err, announce.ErrUnavailable, "a 5xx makes the client try other trackers")
	})

	t.Run("origins unreachable", func(t *testing.T) {
		t.Parallel()
		o := newFakeOrigin(t)
		o.srv.Close()
		tt := startTracker(t, tracker.Config{Origins: []string{o.addr}}, nil)
		status, _, _, code := getMetainfo(t, hc, tt.addr, "app", digest.FromString("x"))
		require.Equal(t, http.StatusServiceUnavailable, status)
		require.Equal(t, "UNAVAILABLE", code)
	})

	t.Run("bad requests", func(t *testing.T) {
		t.Parallel()
		o := newFakeOrigin(t)
		tt := startTracker(t, tracker.Config{Origins: []string{o.addr}}, nil)
		status, _, _, code := getMetainfo(t, hc, tt.addr, "Bad", digest.FromString("x"))
		require.Equal(t, http.StatusBadRequest, status)
		require.Equal(t, "NAME_INVALID", code)
		status, _, _, code = getMetainfo(t, hc, tt.addr, "app", "sha256:abc")
		require.Equal(t, http.StatusBadRequest, status)
		require.Equal(t, "DIGEST_INVALID", code)
		require.EqualValues(t, 0, o.metaCalls.Load())
	})
}
