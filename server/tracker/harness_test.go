package tracker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/server/tracker"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// fakeOrigin is an httptest origin: it serves its swarm identity at api.PeerPath and the
// metainfo of the blobs it was given, counting metainfo requests. A test can hold metainfo
// answers back (gate) or replace them (fail).
type fakeOrigin struct {
	srv  *httptest.Server
	addr string
	peer api.PeerInfo

	metaCalls atomic.Int32
	mu        sync.Mutex
	blobs     map[digest.Digest][]byte
	peerDown  bool
	gate      chan struct{} // when set, metainfo answers wait for it to close
	fail      http.HandlerFunc
}

func newFakeOrigin(t *testing.T) *fakeOrigin {
	t.Helper()
	o := &fakeOrigin{blobs: map[digest.Digest][]byte{}}
	o.peer = api.PeerInfo{ID: wire.RandomPeerID().String(), Addr: "10.1.0.1:" + strconv.Itoa(1000+int(originSeq.Add(1)))}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PeerPath, func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		down := o.peerDown
		o.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(o.peer)
	})
	mux.HandleFunc("GET /namespace/{ns}/blobs/{digest}/metainfo", func(w http.ResponseWriter, r *http.Request) {
		o.metaCalls.Add(1)
		o.mu.Lock()
		gate, fail, data := o.gate, o.fail, o.blobs[digest.Digest(r.PathValue("digest"))]
		o.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		if fail != nil {
			fail(w, r)
			return
		}
		if data == nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
	})
	o.srv = httptest.NewServer(mux)
	t.Cleanup(o.srv.Close)
	o.addr = o.srv.Listener.Addr().String()
	return o
}

var originSeq atomic.Int32

// add makes the origin serve the metainfo of content and returns it.
func (o *fakeOrigin) add(t *testing.T, content string) metainfo.MetaInfo {
	t.Helper()
	mi := genMetainfo(t, content)
	data, err := mi.Encode()
	require.NoError(t, err)
	o.mu.Lock()
	o.blobs[mi.Digest] = data
	o.mu.Unlock()
	return mi
}

func (o *fakeOrigin) setGate(c chan struct{}) { o.mu.Lock(); o.gate = c; o.mu.Unlock() }

func (o *fakeOrigin) setFail(h http.HandlerFunc) { o.mu.Lock(); o.fail = h; o.mu.Unlock() }

func (o *fakeOrigin) announcePeer() announce.Peer {
	return announce.Peer{ID: o.peer.ID, Addr: o.peer.Addr, Origin: true, Complete: true}
}

func genMetainfo(t *testing.T, content string) metainfo.MetaInfo {
	t.Helper()
	mi, err := metainfo.Generate(t.Context(), strings.NewReader(content), int64(len(content)))
	require.NoError(t, err)
	return mi
}

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// testTracker is a running tracker.
type testTracker struct {
	srv    *tracker.Server
	addr   string
	admin  string // the admin listener's address
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// startTracker runs a tracker until the test ends and waits until it is ready.
func startTracker(t *testing.T, cfg tracker.Config, now func() time.Time) *testTracker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	srv, err := tracker.New(cfg, tracker.Deps{
		Deps: role.Deps{Listener: ln, AdminListener: aln, Registerer: reg, Gatherer: reg, Logger: testLogger(t)},
		Now:  now,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	tt := &testTracker{srv: srv, addr: ln.Addr().String(), admin: aln.Addr().String(), reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { tt.done <- srv.Run(ctx) }()
	t.Cleanup(func() { tt.stop(t) })
	hc := httpClient(t)
	require.Eventually(t, func() bool {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+tt.addr+"/readyz", nil)
		if err != nil {
			return false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 5*time.Millisecond)
	return tt
}

// stop shuts the tracker down and checks that it stopped cleanly; it may be called twice.
func (tt *testTracker) stop(t *testing.T) {
	if tt.cancel == nil {
		return
	}
	tt.cancel()
	tt.cancel = nil
	require.NoError(t, <-tt.done)
}

// counter returns the value of a counter or gauge with the given label value ("" for none).
func (tt *testTracker) metric(t *testing.T, name, label string) float64 {
	t.Helper()
	mfs, err := tt.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s{%s}", name, label)
	return 0
}

func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// send sends a request with the test's context; the caller closes the body.
func send(t *testing.T, hc *http.Client, method, url, contentType string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	require.NoError(t, err)
	return resp
}

func announceClient(t *testing.T, trackers ...string) *announce.Client {
	t.Helper()
	c, err := announce.NewClient(trackers, httpClient(t), announce.WithAnnounceTimeout(10*time.Second))
	require.NoError(t, err)
	return c
}

// peerReq returns an announce for d by a new peer.
func peerReq(d digest.Digest, n int, complete bool) announce.Request {
	return announce.Request{
		Namespace: "library/app", Digest: d, PeerID: wire.RandomPeerID().String(),
		Addr: fmt.Sprintf("10.2.%d.%d:16001", n/250, n%250+1), Complete: complete,
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func rankOf(d digest.Digest, addrs []string) []string { return ring.Rank(d.String(), addrs) }

// natLab is the announce section of trackers whose tests stand in for many hosts: every peer
// announces an address in 10.0.0.0/8 over loopback, as hosts behind NAT would.
var natLab = tracker.AnnounceConfig{NATCIDRs: []string{"127.0.0.0/8", "10.0.0.0/8"}}
