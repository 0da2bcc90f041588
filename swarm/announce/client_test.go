package announce_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// fakeTracker is an httptest tracker whose answers a test chooses.
type fakeTracker struct {
	srv  *httptest.Server
	addr string
	hits atomic.Int32

	mu      sync.Mutex
	handler http.HandlerFunc
	lastReq announce.Request
}

func newFakeTracker(t *testing.T) *fakeTracker {
	t.Helper()
	ft := &fakeTracker{}
	ft.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ft.hits.Add(1)
		ft.mu.Lock()
		h := ft.handler
		ft.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(ft.srv.Close)
	ft.addr = ft.srv.Listener.Addr().String()
	ft.set(ft.answer(announce.Response{IntervalSeconds: 3}))
	return ft
}

func (ft *fakeTracker) set(h http.HandlerFunc) {
	ft.mu.Lock()
	ft.handler = h
	ft.mu.Unlock()
}

// answer returns a handler that records announces and answers them with resp.
func (ft *fakeTracker) answer(resp announce.Response) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != announce.AnnouncePath {
			http.Error(w, "wrong route", http.StatusMethodNotAllowed)
			return
		}
		var req announce.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ft.mu.Lock()
		ft.lastReq = req
		ft.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	}
}

func status(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}
}

func serveMetainfo(t *testing.T, mi metainfo.MetaInfo) http.HandlerFunc {
	data, err := mi.Encode()
	require.NoError(t, err)
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
	}
}

func genMetainfo(t *testing.T, content string) metainfo.MetaInfo {
	mi, err := metainfo.Generate(t.Context(), strings.NewReader(content), int64(len(content)))
	require.NoError(t, err)
	return mi
}

// httpClient returns a client whose idle connections are closed when the test ends.
func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// pair starts two fake trackers and returns them in the rank order of d.
func pair(t *testing.T, d digest.Digest) (first, second *fakeTracker) {
	a, b := newFakeTracker(t), newFakeTracker(t)
	if ring.Rank(d.String(), []string{a.addr, b.addr})[0] == a.addr {
		return a, b
	}
	return b, a
}

func newClient(t *testing.T, trackers []string, opts ...announce.Option) *announce.Client {
	c, err := announce.NewClient(trackers, httpClient(t), opts...)
	require.NoError(t, err)
	return c
}

// TestNoTrackersYet: a client made before its trackers' DNS name has an address fails every
// call as unavailable, and works once SetTrackers gives it a tracker.
func TestNoTrackersYet(t *testing.T) {
	t.Parallel()
	c, err := announce.NewClient(nil, nil)
	require.NoError(t, err)
	req := validRequest()
	d := req.Digest
	_, err = c.Announce(t.Context(), req)
	require.ErrorIs(t, err, announce.ErrUnavailable)
	require.ErrorContains(t, err, "no trackers known yet")
	err = c.Ping(t.Context(), time.Second)
	require.ErrorIs(t, err, announce.ErrUnavailable)
	require.ErrorContains(t, err, "no trackers known yet")
	require.Empty(t, c.Trackers(d))
	require.ErrorIs(t, c.SetTrackers(nil), announce.ErrInvalid, "an empty answer is never set")

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	require.NoError(t, c.SetTrackers([]string{srv.URL}))
	require.NoError(t, c.Ping(t.Context(), 5*time.Second))
}

func TestNewClientErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		trackers []string
		want     string
	}{
		{[]string{"127.0.0.1"}, "127.0.0.1"},
		{[]string{"ftp://127.0.0.1:1"}, "http or https"},
		{[]string{"http://user@127.0.0.1:1"}, "host"},
		{[]string{"http://127.0.0.1:1?x=1"}, "host"},
		{[]string{"127.0.0.1:80", "http://127.0.0.1"}, "listed twice"},
		{[]string{"127.0.0.1:443", "https://127.0.0.1/"}, "listed twice"},
	} {
		_, err := announce.NewClient(tc.trackers, nil)
		require.ErrorIs(t, err, announce.ErrInvalid, "%v", tc.trackers)
		require.ErrorContains(t, err, tc.want)
	}
	_, err := announce.NewClient([]string{"127.0.0.1:1"}, nil, announce.WithAnnounceTimeout(0))
	require.ErrorIs(t, err, announce.ErrInvalid)
}

// TestTrackersOrder: the order follows the rendezvous ring over host:port, whatever form and
// order the trackers were given in, so every agent asks the same tracker first.
func TestTrackersOrder(t *testing.T) {
	t.Parallel()
	keys := []string{"10.0.0.1:16100", "10.0.0.2:16100", "10.0.0.3:443"}
	c1 := newClient(t, keys)
	c2 := newClient(t, []string{"https://10.0.0.3", "http://10.0.0.2:16100/", "10.0.0.1:16100"})
	firsts := map[string]bool{}
	for i := range 64 {
		d := digest.FromString(strings.Repeat("x", i))
		want := ring.Rank(d.String(), keys)
		require.Equal(t, want, c1.Trackers(d))
		require.Equal(t, want, c2.Trackers(d))
		firsts[want[0]] = true
	}
	require.Len(t, firsts, 3, "every tracker is first for some digests")
}

func TestAnnounceAsksFirstRanked(t *testing.T) {
	t.Parallel()
	req := validRequest()
	first, second := pair(t, req.Digest)
	peer := announce.Peer{ID: wire.RandomPeerID().String(), Addr: "10.0.0.9:1", Complete: true}
	first.set(first.answer(announce.Response{Peers: []announce.Peer{peer}, IntervalSeconds: 2.5}))
	c := newClient(t, []string{second.addr, first.addr})
	resp, err := c.Announce(t.Context(), req)
	require.NoError(t, err)
	require.Equal(t, []announce.Peer{peer}, resp.Peers)
	require.Equal(t, 2500*time.Millisecond, resp.Interval())
	require.EqualValues(t, 1, first.hits.Load())
	require.EqualValues(t, 0, second.hits.Load())
	require.Equal(t, req, first.lastReq, "the request arrives as sent")
}

// TestAnnounceFailover: a closed tracker, one that answers 5xx and one that hangs past the
// attempt timeout are each skipped for the next; the failed tracker is then asked last until
// its backoff ends.
func TestAnnounceFailover(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"closed", "503", "hang", "garbage"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			req := validRequest()
			first, second := pair(t, req.Digest)
			release := make(chan struct{})
			switch mode {
			case "closed":
				first.srv.Close()
			case "503":
				first.set(status(http.StatusServiceUnavailable, `{"errors":[{"code":"UNAVAILABLE","message":"busy"}]}`))
			case "hang":
				first.set(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body) // the server notices a closed connection only after the body
					select {
					case <-release:
					case <-r.Context().Done():
					}
				})
				t.Cleanup(func() { close(release) })
			case "garbage":
				first.set(status(http.StatusOK, `{"peers": [`))
			}
			now := time.Unix(1000, 0)
			var mu sync.Mutex
			c := newClient(t, []string{first.addr, second.addr}, announce.WithBackoff(time.Minute), announce.WithAnnounceTimeout(200*time.Millisecond))
			announce.SetClock(c, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })

			_, err := c.Announce(t.Context(), req)
			require.NoError(t, err)
			require.EqualValues(t, 1, second.hits.Load())
			hits := first.hits.Load()
			require.Equal(t, []string{second.addr, first.addr}, c.Trackers(req.Digest), "the failed tracker goes last")

			_, err = c.Announce(t.Context(), req)
			require.NoError(t, err)
			require.EqualValues(t, 2, second.hits.Load())
			require.Equal(t, hits, first.hits.Load(), "the failed tracker is not asked during its backoff")

			mu.Lock()
			now = now.Add(time.Minute)
			mu.Unlock()
			require.Equal(t, []string{first.addr, second.addr}, c.Trackers(req.Digest), "after the backoff, rank order again")
		})
	}
}

// TestFailoverHook: the hook hears of each tracker that failed before the next was asked, with
// the digest and why; not of the last tracker, nor of a final answer.
func TestFailoverHook(t *testing.T) {
	t.Parallel()
	type failover struct {
		d       digest.Digest
		tracker string
		err     string
	}
	var mu sync.Mutex
	var got []failover
	hook := announce.WithFailover(func(d digest.Digest, tracker string, err error) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, failover{d, tracker, err.Error()})
	})
	take := func() []failover { mu.Lock(); defer mu.Unlock(); out := got; got = nil; return out }
	req := validRequest()
	req.Have, req.Pieces, req.API = 1, 2, "10.0.0.1:16000"
	first, second := pair(t, req.Digest)
	first.set(status(http.StatusServiceUnavailable, `{"errors":[{"code":"UNAVAILABLE","message":"busy"}]}`))
	c := newClient(t, []string{first.addr, second.addr}, hook, announce.WithBackoff(0))

	_, err := c.Announce(t.Context(), req)
	require.NoError(t, err)
	evs := take()
	require.Len(t, evs, 1)
	require.Equal(t, req.Digest, evs[0].d)
	require.Equal(t, first.addr, evs[0].tracker)
	require.Contains(t, evs[0].err, "503")
	require.Contains(t, evs[0].err, "UNAVAILABLE: busy")
	second.mu.Lock()
	require.Equal(t, req, second.lastReq, "progress and api reach the tracker")
	second.mu.Unlock()

	// Both fail: one failover (first to second), and the error after the last.
	second.set(status(http.StatusBadGateway, ""))
	_, err = c.Announce(t.Context(), req)
	require.ErrorIs(t, err, announce.ErrUnavailable)
	evs = take()
	require.Len(t, evs, 1)
	require.Equal(t, first.addr, evs[0].tracker)

	// A 4xx is final: no failover.
	first.set(status(http.StatusBadRequest, `{"errors":[{"code":"DIGEST_INVALID","message":"bad"}]}`))
	_, err = c.Announce(t.Context(), req)
	require.ErrorIs(t, err, announce.ErrRejected)
	require.Empty(t, take())

	// Metainfo fails over the same way.
	mi := genMetainfo(t, "failover hook")
	a, b := pair(t, mi.Digest)
	a.set(status(http.StatusInternalServerError, ""))
	b.set(serveMetainfo(t, mi))
	c = newClient(t, []string{a.addr, b.addr}, hook)
	_, err = c.Metainfo(t.Context(), "library/app", mi.Digest)
	require.NoError(t, err)
	require.Equal(t, []failover{{mi.Digest, a.addr, "tracker " + a.addr + " answered 500 Internal Server Error"}}, take())
}

func TestAnnounceAllDown(t *testing.T) {
	t.Parallel()
	req := validRequest()
	a, b := pair(t, req.Digest)
	a.set(status(http.StatusInternalServerError, ""))
	b.srv.Close()
	c := newClient(t, []string{a.addr, b.addr})
	_, err := c.Announce(t.Context(), req)
	require.ErrorIs(t, err, announce.ErrUnavailable)
	require.ErrorContains(t, err, a.addr)
	require.ErrorContains(t, err, b.addr)
}

// TestAnnounce4xxNoFailover: a 4xx is the request's fault; the next tracker is not asked and
// the tracker is not marked down.
func TestAnnounce4xxNoFailover(t *testing.T) {
	t.Parallel()
	req := validRequest()
	first, second := pair(t, req.Digest)
	first.set(status(http.StatusBadRequest, `{"errors":[{"code":"DIGEST_INVALID","message":"bad digest"}]}`))
	c := newClient(t, []string{first.addr, second.addr})
	_, err := c.Announce(t.Context(), req)
	require.ErrorIs(t, err, announce.ErrRejected)
	require.NotErrorIs(t, err, announce.ErrUnavailable)
	require.ErrorContains(t, err, "DIGEST_INVALID: bad digest")
	require.EqualValues(t, 0, second.hits.Load())
	require.Equal(t, []string{first.addr, second.addr}, c.Trackers(req.Digest))

	// 429 means "ask someone else".
	first.set(status(http.StatusTooManyRequests, ""))
	_, err = c.Announce(t.Context(), req)
	require.NoError(t, err)
	require.EqualValues(t, 1, second.hits.Load())
}

func TestAnnounceInvalidRequestSendsNothing(t *testing.T) {
	t.Parallel()
	ft := newFakeTracker(t)
	c := newClient(t, []string{ft.addr})
	req := validRequest()
	req.Addr = "0.0.0.0:1"
	_, err := c.Announce(t.Context(), req)
	require.ErrorIs(t, err, announce.ErrInvalid)
	require.EqualValues(t, 0, ft.hits.Load())
}

// TestAnnounceCleansPeers: the announcing peer itself, malformed entries and duplicates are
// dropped from the tracker's list.
func TestAnnounceCleansPeers(t *testing.T) {
	t.Parallel()
	req := validRequest()
	ft := newFakeTracker(t)
	good := announce.Peer{ID: wire.RandomPeerID().String(), Addr: "10.0.0.9:1"}
	ft.set(ft.answer(announce.Response{Peers: []announce.Peer{
		{ID: req.PeerID, Addr: req.Addr},
		{ID: "nope", Addr: "10.0.0.8:1"},
		{ID: wire.RandomPeerID().String(), Addr: "0.0.0.0:1"},
		// A tracker's handout never makes an agent resolve a name or dial an address that is
		// not a host's.
		{ID: wire.RandomPeerID().String(), Addr: "evil.example:80"},
		{ID: wire.RandomPeerID().String(), Addr: "999.1.1.1:80"},
		{ID: wire.RandomPeerID().String(), Addr: "169.254.169.254:80"},
		{ID: wire.RandomPeerID().String(), Addr: "255.255.255.255:1"},
		{ID: wire.RandomPeerID().String(), Addr: "[ff02::1]:80"},
		good, good,
	}}))
	c := newClient(t, []string{ft.addr})
	resp, err := c.Announce(t.Context(), req)
	require.NoError(t, err)
	require.Equal(t, []announce.Peer{good}, resp.Peers)
	require.Zero(t, resp.Interval())
}

func TestAnnounceContextCancelled(t *testing.T) {
	t.Parallel()
	req := validRequest()
	first, second := pair(t, req.Digest)
	ctx, cancel := context.WithCancel(t.Context())
	first.set(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // the server notices a closed connection only after the body
		cancel()
		<-r.Context().Done()
	})
	c := newClient(t, []string{first.addr, second.addr})
	_, err := c.Announce(ctx, req)
	require.ErrorIs(t, err, context.Canceled)
	require.EqualValues(t, 0, second.hits.Load(), "a cancelled call does not fail over")
	require.Equal(t, []string{first.addr, second.addr}, c.Trackers(req.Digest), "nor marks the tracker down")
}

func TestMetainfo(t *testing.T) {
	t.Parallel()
	mi := genMetainfo(t, "hello swarm")
	first, second := pair(t, mi.Digest)
	var gotPath string
	h := serveMetainfo(t, mi)
	first.set(func(w http.ResponseWriter, r *http.Request) { gotPath = r.URL.EscapedPath(); h(w, r) })
	c := newClient(t, []string{first.addr, second.addr})
	got, err := c.Metainfo(t.Context(), "library/ubuntu", mi.Digest)
	require.NoError(t, err)
	require.Equal(t, mi, got)
	require.Equal(t, announce.MetainfoPath("library/ubuntu", mi.Digest), gotPath)
	require.EqualValues(t, 0, second.hits.Load())
}

// TestMetainfoFailover: a tracker that is closed, answers 502 or sends a document that is
// malformed or describes another blob is skipped for the next.
func TestMetainfoFailover(t *testing.T) {
	t.Parallel()
	mi := genMetainfo(t, "hello swarm")
	other := genMetainfo(t, "another blob")
	for name, bad := range map[string]func(*fakeTracker){
		"closed":        func(ft *fakeTracker) { ft.srv.Close() },
		"502":           func(ft *fakeTracker) { ft.set(status(http.StatusBadGateway, "")) },
		"malformed":     func(ft *fakeTracker) { ft.set(status(http.StatusOK, `{"digest":`)) },
		"wrong digest":  func(ft *fakeTracker) { ft.set(serveMetainfo(t, other)) },
		"trailing data": func(ft *fakeTracker) { data, _ := mi.Encode(); ft.set(status(http.StatusOK, string(data)+"x")) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			first, second := pair(t, mi.Digest)
			bad(first)
			second.set(serveMetainfo(t, mi))
			c := newClient(t, []string{first.addr, second.addr})
			got, err := c.Metainfo(t.Context(), "app", mi.Digest)
			require.NoError(t, err)
			require.Equal(t, mi, got)
			require.EqualValues(t, 1, second.hits.Load())
		})
	}
}

// TestMetainfo4xx: 404 is ErrNotFound and 400 ErrRejected, at once, without asking the next
// tracker.
func TestMetainfo4xx(t *testing.T) {
	t.Parallel()
	d := digest.FromString("missing")
	first, second := pair(t, d)
	c := newClient(t, []string{first.addr, second.addr})

	first.set(status(http.StatusNotFound, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`))
	_, err := c.Metainfo(t.Context(), "app", d)
	require.ErrorIs(t, err, announce.ErrNotFound)
	require.ErrorContains(t, err, "BLOB_UNKNOWN")

	first.set(status(http.StatusBadRequest, `{"errors":[{"code":"NAME_INVALID","message":"invalid repository name"}]}`))
	_, err = c.Metainfo(t.Context(), "app", d)
	require.ErrorIs(t, err, announce.ErrRejected)
	require.NotErrorIs(t, err, announce.ErrNotFound)
	require.EqualValues(t, 0, second.hits.Load())

	_, err = c.Metainfo(t.Context(), "App", d)
	require.ErrorIs(t, err, announce.ErrInvalid)
	_, err = c.Metainfo(t.Context(), "app", "sha256:nope")
	require.ErrorIs(t, err, announce.ErrInvalid)
	require.EqualValues(t, 2, first.hits.Load(), "invalid arguments send nothing")
}

// TestURLTrackerWithPrefix: a tracker given as a URL with a path prefix is asked under it.
func TestURLTrackerWithPrefix(t *testing.T) {
	t.Parallel()
	ft := newFakeTracker(t)
	inner := ft.answer(announce.Response{IntervalSeconds: 1})
	var path string
	ft.set(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/tracker")
		inner(w, r)
	})
	_, port, err := net.SplitHostPort(ft.addr)
	require.NoError(t, err)
	c := newClient(t, []string{"http://127.0.0.1:" + port + "/tracker/"})
	_, err = c.Announce(t.Context(), validRequest())
	require.NoError(t, err)
	require.Equal(t, "/tracker/announce", path)
}

// TestPing: some tracker answering /health is enough, given as host:port or as a URL with a
// path prefix; one that accepts and never answers does not hide one that works; none working
// is ErrUnavailable naming each.
func TestPing(t *testing.T) {
	t.Parallel()
	healthy := newFakeTracker(t)
	var path atomic.Value
	healthy.set(func(w http.ResponseWriter, r *http.Request) { path.Store(r.URL.Path) })
	stuck := newFakeTracker(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stuck.set(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	down := newFakeTracker(t)
	down.set(status(http.StatusServiceUnavailable, ""))

	// The stuck tracker comes first; the healthy one, given as a URL with a prefix, answers.
	c := newClient(t, []string{stuck.addr, "http://" + healthy.addr + "/kraken"})
	require.NoError(t, c.Ping(t.Context(), time.Minute))
	require.Equal(t, "/kraken/health", path.Load())

	err := newClient(t, []string{down.addr, stuck.addr}).Ping(t.Context(), 200*time.Millisecond)
	require.ErrorIs(t, err, announce.ErrUnavailable)
	require.ErrorContains(t, err, "tracker "+down.addr+" answered 503")
	require.ErrorContains(t, err, "tracker "+stuck.addr)
}

func TestSetTrackers(t *testing.T) {
	t.Parallel()
	c, err := announce.NewClient([]string{"10.0.0.1:1"}, nil)
	require.NoError(t, err)
	d := digest.FromString("set trackers")
	require.Equal(t, []string{"10.0.0.1:1"}, c.Trackers(d))

	require.NoError(t, c.SetTrackers([]string{"10.0.0.2:1", "http://10.0.0.3:1"}))
	require.ElementsMatch(t, []string{"10.0.0.2:1", "10.0.0.3:1"}, c.Trackers(d))
	require.Equal(t, ring.Rank(d.String(), []string{"10.0.0.2:1", "10.0.0.3:1"}), c.Trackers(d), "ranked as a ring of the new set")

	require.ErrorIs(t, c.SetTrackers(nil), announce.ErrInvalid)
	require.ErrorIs(t, c.SetTrackers([]string{"10.0.0.4:1", "10.0.0.4:1"}), announce.ErrInvalid)
	require.ErrorIs(t, c.SetTrackers([]string{"nope"}), announce.ErrInvalid)
	require.ElementsMatch(t, []string{"10.0.0.2:1", "10.0.0.3:1"}, c.Trackers(d), "a refused set changes nothing")
}

// TestSetTrackersRoutesAnnounces: after SetTrackers, announces reach the new tracker only.
func TestSetTrackersRoutesAnnounces(t *testing.T) {
	t.Parallel()
	var oldHits, newHits atomic.Int32
	serve := func(hits *atomic.Int32) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			hits.Add(1)
			_ = json.NewEncoder(w).Encode(announce.Response{IntervalSeconds: 1})
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	oldT, newT := serve(&oldHits), serve(&newHits)
	c, err := announce.NewClient([]string{oldT.URL}, oldT.Client())
	require.NoError(t, err)
	require.NoError(t, c.SetTrackers([]string{newT.URL}))
	require.NoError(t, c.Ping(t.Context(), time.Second))
	require.Zero(t, oldHits.Load())
	require.Equal(t, int32(1), newHits.Load())
}
