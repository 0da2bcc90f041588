package origin_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/cacheapi"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/role"
)

// node is one origin of an in-process test cluster. It can be stopped and started again on the
// same address and directory, like a process that is killed and restarted.
type node struct {
	t    *testing.T
	c    *cluster.Cluster
	i    int
	addr string
}

// testCluster is n origins assembled by server/cluster.
type testCluster struct {
	t     *testing.T
	nodes []*node
	hc    *http.Client
}

// newCluster starts n origins with r replicas over a shared backend (nil for none).
func newCluster(t *testing.T, n, r int, be backend.Backend, tweak func(*origin.Config)) *testCluster {
	t.Helper()
	cl := clustertest.Start(t, cluster.Spec{
		Origins: n, Replicas: r, Backend: be, NoBackend: be == nil,
		OriginConfig: func(_ int, cfg *origin.Config) {
			cfg.Store.MaxBlobSize = 64 << 20
			cfg.Ring.HealthInterval, cfg.Ring.HealthTimeout = time.Second, time.Second
			cfg.Ring.FailThreshold, cfg.Ring.PassThreshold = 2, 1
			cfg.Writeback = origin.WritebackConfig{RetryInitial: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond, ReplicaDelay: time.Hour}
			if tweak != nil {
				tweak(cfg)
			}
		},
	}, cluster.Deps{Logger: testLogger(t)})
	c := &testCluster{t: t, hc: &http.Client{Timeout: time.Minute}}
	for i, addr := range cl.Addrs(cluster.Origin) {
		c.nodes = append(c.nodes, &node{t: t, c: cl, i: i, addr: addr})
	}
	return c
}

// srv is the node's server (a new one after start).
func (nd *node) srv() *origin.Server { return nd.c.Origin(nd.i) }

// start starts a stopped origin again on its address and directory.
func (nd *node) start() {
	nd.t.Helper()
	require.NoError(nd.t, nd.c.Restart(clustertest.Context(nd.t), cluster.Origin, nd.i))
}

// stop shuts the origin down gracefully and waits for it.
func (nd *node) stop() {
	nd.t.Helper()
	require.NoError(nd.t, nd.c.Stop(cluster.Origin, nd.i))
}

func (c *testCluster) origin(addr string) *client.Origin { return client.NewOrigin(addr, c.hc) }

func (c *testCluster) addrs() []string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, nd.addr)
	}
	return out
}

func (c *testCluster) node(addr string) *node {
	for _, nd := range c.nodes {
		if nd.addr == addr {
			return nd
		}
	}
	c.t.Fatalf("no node %s", addr)
	return nil
}

func randomBlob(t *testing.T, n int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b, digest.FromBytes(b)
}

func readAll(t *testing.T, o *client.Origin, ns string, d digest.Digest) []byte {
	t.Helper()
	body, _, err := o.Open(t.Context(), ns, d, 0)
	require.NoError(t, err)
	defer func() { require.NoError(t, body.Close()) }()
	got, err := io.ReadAll(body)
	require.NoError(t, err)
	return got
}

func TestClusterPushReadAndSurviveOwnerLoss(t *testing.T) {
	t.Parallel()
	be := memory.New()
	c := newCluster(t, 3, 2, be, nil)
	data, d := randomBlob(t, 3<<20+17)
	ns := "library/app"

	st, err := c.origin(c.nodes[0].addr).Ring(t.Context(), d)
	require.NoError(t, err)
	require.Len(t, st.Owners, 2)
	var nonOwner string
	for _, a := range c.addrs() {
		if a != st.Owners[0] && a != st.Owners[1] {
			nonOwner = a
		}
	}

	// Push to the first owner in chunks; it copies the blob to the second owner.
	err = c.origin(st.Owners[0]).UploadChunked(t.Context(), ns, d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{ChunkSize: 1 << 20})
	require.NoError(t, err)
	for _, o := range st.Owners {
		size, err := c.origin(o).StatLocal(t.Context(), ns, d)
		require.NoError(t, err, "owner %s holds the blob", o)
		require.EqualValues(t, len(data), size)
	}
	_, err = c.origin(nonOwner).StatLocal(t.Context(), ns, d)
	require.True(t, client.IsNotFound(err), "non-owner has no copy yet: %v", err)

	// Read through the origin that is not an owner: it pulls through from an owner.
	require.Equal(t, data, readAll(t, c.origin(nonOwner), ns, d))

	// Metainfo is served and describes the blob.
	mi, err := c.origin(st.Owners[1]).Metainfo(t.Context(), ns, d)
	require.NoError(t, err)
	require.Equal(t, d, mi.Digest)
	require.EqualValues(t, len(data), mi.Length)

	// Kill the first owner: the blob stays readable from the others and through the cluster client.
	c.node(st.Owners[0]).stop()
	require.Equal(t, data, readAll(t, c.origin(st.Owners[1]), ns, d))
	var buf bytes.Buffer
	_, err = client.NewCluster([]string{st.Owners[0], nonOwner}, c.hc).Pull(t.Context(), ns, d, &buf, nil)
	require.NoError(t, err)
	require.Equal(t, data, buf.Bytes())

	// Once the survivors see the owner down, its share moves to the next-ranked member.
	require.Eventually(t, func() bool {
		st2, err := c.origin(nonOwner).Ring(t.Context(), d)
		return err == nil && len(st2.Owners) == 2 && !contains(st2.Owners, st.Owners[0])
	}, 10*time.Second, 20*time.Millisecond)

	// The write-back reached the backend with the right bytes, under the pushed namespace.
	require.Eventually(t, func() bool {
		got, ok := be.Peek(ns, d.Encoded())
		return ok && bytes.Equal(got, data)
	}, 10*time.Second, 20*time.Millisecond)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestWritebackRetriesWhileBackendDown(t *testing.T) {
	t.Parallel()
	be := memory.New()
	be.SetFailure(errors.New("backend is down"))
	c := newCluster(t, 1, 1, be, nil)
	data, d := randomBlob(t, 256<<10)
	require.NoError(t, c.origin(c.nodes[0].addr).Upload(t.Context(), "team/x", d, bytes.NewReader(data), int64(len(data))))

	// The write-back fails and is retried, again and again, while the backend is down.
	require.Eventually(t, func() bool { return be.Calls(memory.OpUpload)+be.Calls(memory.OpStat) >= 6 }, 10*time.Second, 10*time.Millisecond)
	_, ok := be.Peek("team/x", d.Encoded())
	require.False(t, ok)
	// The blob is served from the origin meanwhile.
	require.Equal(t, data, readAll(t, c.origin(c.nodes[0].addr), "team/x", d))

	be.SetFailure(nil)
	require.Eventually(t, func() bool {
		got, ok := be.Peek("team/x", d.Encoded())
		return ok && bytes.Equal(got, data)
	}, 10*time.Second, 10*time.Millisecond)
}

func TestQueueSurvivesRestart(t *testing.T) {
	t.Parallel()
	be := memory.New()
	be.SetFailure(errors.New("backend is down"))
	c := newCluster(t, 1, 1, be, nil)
	nd := c.nodes[0]
	blobs := map[digest.Digest][]byte{}
	for range 5 {
		data, d := randomBlob(t, 64<<10)
		blobs[d] = data
		require.NoError(t, c.origin(nd.addr).Upload(t.Context(), "ci/builds", d, bytes.NewReader(data), int64(len(data))))
	}
	require.Eventually(t, func() bool { return be.Calls(memory.OpStat) >= 5 }, 10*time.Second, 10*time.Millisecond)

	// Kill the origin with the write-backs still queued, bring the backend back, restart it.
	nd.stop()
	require.Zero(t, be.Len(), "nothing reached the backend before the restart")
	be.SetFailure(nil)
	nd.start()

	require.Eventually(t, func() bool { return be.Len() == len(blobs) }, 10*time.Second, 10*time.Millisecond)
	for d, data := range blobs {
		got, ok := be.Peek("ci/builds", d.Encoded())
		require.True(t, ok)
		require.Equal(t, data, got)
	}
}

func TestPullThroughFromBackendDeduplicates(t *testing.T) {
	t.Parallel()
	be := memory.New()
	data, d := randomBlob(t, 2<<20)
	require.NoError(t, be.Upload(t.Context(), "mirror/base", d.Encoded(), bytes.NewReader(data), int64(len(data))))
	c := newCluster(t, 1, 1, be, nil)
	o := c.origin(c.nodes[0].addr)

	size, err := o.Stat(t.Context(), "mirror/base", d)
	require.NoError(t, err)
	require.EqualValues(t, len(data), size)

	errc := make(chan error, 8)
	for range 8 {
		go func() {
			body, _, err := o.Open(t.Context(), "mirror/base", d, 0)
			if err != nil {
				errc <- err
				return
			}
			defer func() { _ = body.Close() }() // read side; the bytes are what is checked
			got, err := io.ReadAll(body)
			if err == nil && !bytes.Equal(got, data) {
				err = errors.New("wrong bytes")
			}
			errc <- err
		}()
	}
	for range 8 {
		require.NoError(t, <-errc)
	}
	require.Equal(t, 1, be.Calls(memory.OpDownload), "eight concurrent misses, one backend download")

	// A digest the backend does not have is a 404 with BLOB_UNKNOWN.
	_, missing := randomBlob(t, 10)
	_, _, err = o.Open(t.Context(), "mirror/base", missing, 0)
	require.True(t, client.IsNotFound(err), "%v", err)

	// A backend object whose bytes do not match its name is refused, not served.
	bad, badD := randomBlob(t, 1000)
	bad[0] ^= 0xff
	require.NoError(t, be.Upload(t.Context(), "mirror/base", badD.Encoded(), bytes.NewReader(bad), int64(len(bad))))
	_, _, err = o.Open(t.Context(), "mirror/base", badD, 0)
	require.Error(t, err)
	require.False(t, client.IsNotFound(err))
}

func TestRangeRequests(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1, nil, nil)
	data, d := randomBlob(t, 100000)
	o := c.origin(c.nodes[0].addr)
	require.NoError(t, o.Upload(t.Context(), "r/r", d, bytes.NewReader(data), int64(len(data))))
	body, total, err := o.Open(t.Context(), "r/r", d, 99000)
	require.NoError(t, err)
	defer func() { require.NoError(t, body.Close()) }()
	require.EqualValues(t, len(data), total)
	got, err := io.ReadAll(body)
	require.NoError(t, err)
	require.Equal(t, data[99000:], got)

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+c.nodes[0].addr+"/namespace/r%2Fr/blobs/"+d.String(), nil)
	req.Header.Set("Range", "bytes=200000-300000")
	resp, err := c.hc.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusRequestedRangeNotSatisfiable, resp.StatusCode)
}

func TestRepairFillsReturningMember(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, 3, nil, nil)
	victim := c.nodes[2]
	victim.stop()
	// Wait until both survivors count the victim as down: the upload then has two owners and
	// queues no copy for the victim, so only repair can bring the blob to it.
	for _, nd := range c.nodes[:2] {
		require.Eventually(t, func() bool {
			st, err := c.origin(nd.addr).Ring(t.Context(), "")
			if err != nil {
				return false
			}
			for _, m := range st.Members {
				if m.Addr == victim.addr {
					return !m.Healthy
				}
			}
			return false
		}, 15*time.Second, 20*time.Millisecond, "%s sees %s down", nd.addr, victim.addr)
	}
	data, d := randomBlob(t, 512<<10)
	require.NoError(t, c.origin(c.nodes[0].addr).Upload(t.Context(), "repair/me", d, bytes.NewReader(data), int64(len(data))))
	st, err := c.origin(c.nodes[0].addr).Ring(t.Context(), d)
	require.NoError(t, err)
	require.NotContains(t, st.Owners, victim.addr)
	victim.start()
	require.Eventually(t, func() bool {
		size, err := c.origin(victim.addr).StatLocal(t.Context(), "repair/me", d)
		return err == nil && size == int64(len(data))
	}, 15*time.Second, 20*time.Millisecond, "the returning member gets the blob it owns back")
	require.Equal(t, data, readAll(t, c.origin(victim.addr), "repair/me", d))
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	for _, tc := range []struct {
		cfg  origin.Config
		want string
	}{
		{origin.Config{Listen: "127.0.0.1:1"}, "store.dir"},
		{origin.Config{Listen: "nonsense", Store: origin.StoreConfig{Dir: t.TempDir()}}, "listen"},
		{origin.Config{Listen: "127.0.0.1:1", Store: origin.StoreConfig{Dir: t.TempDir()}, Ring: ring.Config{Members: []string{"127.0.0.1:2"}}}, "advertise"},
		{origin.Config{Listen: "127.0.0.1:1", Store: origin.StoreConfig{Dir: t.TempDir()}, Writeback: origin.WritebackConfig{Workers: -1}}, "writeback.workers"},
		{origin.Config{Listen: "127.0.0.1:1", Store: origin.StoreConfig{Dir: t.TempDir(), Cleanup: cacheapi.Config{HighWatermark: 50, LowWatermark: 50}}},
			"store.cleanup.high_watermark, store.cleanup.low_watermark: 50 and 50"},
		{origin.Config{Listen: "127.0.0.1:1", Advertise: "origin-0.origins.test:1", Store: origin.StoreConfig{Dir: t.TempDir()},
			Ring: ring.Config{Members: []string{"dns:///origins.test:1"}}}, "advertise: \"origin-0.origins.test:1\" must be an IP address"},
	} {
		_, err := origin.New(tc.cfg, origin.Deps{Deps: role.Deps{Listener: ln}})
		require.Error(t, err)
		require.ErrorContains(t, err, tc.want)
	}
}

// testLogger sends the origins' logs to the test log, so a failure shows what the origins did.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestCapacityNeverEvictsPendingWriteback fills a small store while storage is down: the blob
// waiting for write-back is kept and the new upload is refused with 507; once the write-back
// is done the blob may be evicted, and reading it again pulls it back from storage.
func TestCapacityNeverEvictsPendingWriteback(t *testing.T) {
	t.Parallel()
	be := memory.New()
	be.SetFailure(errors.New("backend is down"))
	c := newCluster(t, 1, 1, be, func(cfg *origin.Config) { cfg.Store.Capacity = 1 << 20 })
	o := c.origin(c.nodes[0].addr)
	a, aD := randomBlob(t, 600<<10)
	b, bD := randomBlob(t, 600<<10)
	require.NoError(t, o.Upload(t.Context(), "cap/ns", aD, bytes.NewReader(a), int64(len(a))))

	err := o.Upload(t.Context(), "cap/ns", bD, bytes.NewReader(b), int64(len(b)))
	require.Error(t, err)
	var apiErr *errcode.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusInsufficientStorage, apiErr.Status)
	require.Equal(t, a, readAll(t, o, "cap/ns", aD), "the blob waiting for write-back is intact")

	be.SetFailure(nil)
	require.Eventually(t, func() bool { _, ok := be.Peek("cap/ns", aD.Encoded()); return ok }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		return o.Upload(t.Context(), "cap/ns", bD, bytes.NewReader(b), int64(len(b))) == nil
	}, 10*time.Second, 20*time.Millisecond, "written back, the old blob can make room")
	require.Equal(t, b, readAll(t, o, "cap/ns", bD))
	require.Eventually(t, func() bool { _, ok := be.Peek("cap/ns", bD.Encoded()); return ok }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		body, _, err := o.Open(t.Context(), "cap/ns", aD, 0)
		if err != nil {
			return false // b's write-back hold may not be released yet
		}
		defer func() { _ = body.Close() }()
		got, err := io.ReadAll(body)
		return err == nil && bytes.Equal(got, a)
	}, 10*time.Second, 20*time.Millisecond, "the evicted blob comes back from storage")
}

// TestCloseWithoutRun: an origin built but never run releases its store, so another origin can
// open the same directory, and Run after Close refuses.
func TestCloseWithoutRun(t *testing.T) {
	t.Parallel()
	cfg := origin.Config{Listen: "127.0.0.1:1", Store: origin.StoreConfig{Dir: t.TempDir()}}
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv, err := origin.New(cfg, origin.Deps{Deps: role.Deps{Listener: ln}})
		require.NoError(t, err)
		require.NoError(t, srv.Close())
		require.Error(t, srv.Run(t.Context()))
		_, err = new(net.Dialer).DialContext(t.Context(), "tcp", ln.Addr().String())
		require.Error(t, err, "listener closed")
	}
}

// Each owner of a blob super-seeds its own stripe of the pieces, numbered by its place among
// the blob's owners; an origin that is not an owner seeds all of them on its own.
func TestSeedStripeFollowsTheRing(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, 2, nil, nil)
	_, d := randomBlob(t, 1)
	st, err := c.origin(c.nodes[0].addr).Ring(t.Context(), d)
	require.NoError(t, err)
	require.Len(t, st.Owners, 2)
	for _, nd := range c.nodes {
		index, count := nd.srv().SeedStripe(d)
		switch nd.addr {
		case st.Owners[0]:
			require.Equal(t, [2]int{0, 2}, [2]int{index, count})
		case st.Owners[1]:
			require.Equal(t, [2]int{1, 2}, [2]int{index, count})
		default:
			require.Equal(t, [2]int{0, 1}, [2]int{index, count}, "a non-owner")
		}
	}
}

// TestSwarmHostAndTorrents: the origin serves its seeding scheduler's host stats and torrents
// (with ?history=1 and ?digest=) to the clients the operator's view uses, and refuses a
// malformed query.
func TestSwarmHostAndTorrents(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1, nil, nil)
	nd := c.nodes[0]
	o := c.origin(nd.addr)
	h, err := o.Host(t.Context())
	require.NoError(t, err)
	require.Equal(t, "origin", h.Role)
	require.Equal(t, nd.srv().Swarm().PeerID().String(), h.PeerID)
	require.Equal(t, nd.srv().Swarm().Addr(), h.Addr)
	require.Zero(t, h.Torrents)
	require.NotNil(t, h.Blacklisted)

	live, err := o.Torrents(t.Context(), "")
	require.NoError(t, err)
	require.NotNil(t, live, "[] rather than null")
	require.Empty(t, live)
	_, d := randomBlob(t, 10)
	hist, err := o.TorrentsHistory(t.Context(), d)
	require.NoError(t, err)
	require.Empty(t, hist)

	for _, q := range []string{"?history=maybe", "?digest=sha256:zz"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+nd.addr+api.SwarmTorrentsPath+q, nil)
		require.NoError(t, err)
		resp, err := c.hc.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, q)
	}
}

// TestWritebackOfABlobNeverCommitted: a commit queues the write-back before the blob becomes
// visible, so a crash between the two leaves a task whose blob never arrived. The task retries
// a few times (the blob may be a moment from visible) and is then dropped: it never uploads
// anything and does not stay in the queue. A blob that arrives while it retries is written back.
func TestWritebackOfABlobNeverCommitted(t *testing.T) {
	t.Parallel()
	be := memory.New()
	c := newCluster(t, 1, 1, be, func(cfg *origin.Config) { cfg.Writeback.MissingGrace = time.Millisecond })
	srv := c.nodes[0].srv()
	_, never := randomBlob(t, 1000)
	require.NoError(t, srv.QueueWriteback("team/x", never))
	require.Eventually(t, func() bool {
		n, err := srv.QueueLen()
		return err == nil && n == 0
	}, 10*time.Second, 10*time.Millisecond, "dropped after its retries")
	require.Zero(t, be.Calls(memory.OpUpload))

	// Queued first and tried while the blob is missing, committed a moment later (with no task
	// of its own): written back all the same.
	data, d := randomBlob(t, 1000)
	require.NoError(t, srv.QueueWriteback("team/x", d))
	require.Eventually(t, func() bool {
		n, err := srv.Attempts("team/x", d)
		return err == nil && n >= 1
	}, 10*time.Second, time.Millisecond, "tried once while the blob is missing")
	require.NoError(t, srv.StoreOnly(t.Context(), d, data))
	require.Eventually(t, func() bool {
		got, ok := be.Peek("team/x", d.Encoded())
		return ok && bytes.Equal(got, data)
	}, 10*time.Second, 10*time.Millisecond)
}

// TestWritebackWaitsForASlowCommit: within writeback.missing_grace a write-back whose blob is
// not visible yet keeps retrying however many attempts that takes (a commit stalled by an
// eviction or an fsync), and writes the blob back once it arrives.
func TestWritebackWaitsForASlowCommit(t *testing.T) {
	t.Parallel()
	be := memory.New()
	c := newCluster(t, 1, 1, be, func(cfg *origin.Config) {
		cfg.Writeback.RetryInitial = time.Millisecond
		cfg.Writeback.RetryMax = 5 * time.Millisecond
	})
	srv := c.nodes[0].srv()
	data, d := randomBlob(t, 1000)
	require.NoError(t, srv.QueueWriteback("team/x", d))
	require.Eventually(t, func() bool {
		n, err := srv.Attempts("team/x", d)
		return err == nil && n >= 10
	}, 30*time.Second, time.Millisecond, "retried well past the attempt count")
	n, err := srv.QueueLen()
	require.NoError(t, err)
	require.Equal(t, 1, n, "still queued within the grace")
	require.NoError(t, srv.StoreOnly(t.Context(), d, data))
	require.Eventually(t, func() bool {
		got, ok := be.Peek("team/x", d.Encoded())
		return ok && bytes.Equal(got, data)
	}, 30*time.Second, 10*time.Millisecond)
}

// TestRangeParsedAsEverywhere: the origin answers Range as the agent and the registry do (one
// parser): "bytes=-0" is a 416 with "bytes */SIZE" (it was a 206 with an impossible
// Content-Range), overlapping parts are served as one range, and a header of 10,000 "0-0"
// parts gets one byte (20,000 got a multipart body 36 times the request before the header
// limit was lowered to 64 KiB; 10,000 still fit under it).
func TestRangeParsedAsEverywhere(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1, nil, nil)
	data, d := randomBlob(t, 1<<20)
	o := c.origin(c.nodes[0].addr)
	require.NoError(t, o.Upload(t.Context(), "r/r", d, bytes.NewReader(data), int64(len(data))))
	for _, path := range []string{"/namespace/r%2Fr/blobs/" + d.String(), "/internal/blobs/" + d.String()} {
		// get returns the status and headers, and the body read and closed.
		get := func(rng string) (rawResp, []byte) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+c.nodes[0].addr+path, nil)
			require.NoError(t, err)
			req.Header.Set("Range", rng)
			resp, err := c.hc.Do(req)
			require.NoError(t, err)
			defer func() { _ = resp.Body.Close() }()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			return rawResp{status: resp.StatusCode, hdr: resp.Header}, body
		}
		resp, body := get("bytes=-0")
		require.Equal(t, http.StatusRequestedRangeNotSatisfiable, resp.status, "%s", body)
		require.Equal(t, "bytes */1048576", resp.hdr.Get("Content-Range"))
		var eb errcode.Body
		require.NoError(t, json.Unmarshal(body, &eb))
		require.Equal(t, errcode.CodeRangeInvalid, eb.Errors[0].Code)

		resp, body = get("bytes=10-19,0-9,15-29")
		require.Equal(t, http.StatusPartialContent, resp.status)
		require.Equal(t, "bytes 0-29/1048576", resp.hdr.Get("Content-Range"))
		require.Equal(t, data[:30], body)

		resp, body = get("bytes=" + strings.Repeat("0-0,", 9999) + "0-0")
		require.Equal(t, http.StatusOK, resp.status, "more parts than MaxRangeParts: ignored")
		require.Len(t, body, len(data), "never more than the blob")

		resp, body = get("bytes=" + strings.Repeat("0-0,", 50) + "0-0")
		require.Equal(t, http.StatusPartialContent, resp.status)
		require.Equal(t, data[:1], body, "51 copies of one byte are one byte")

		resp, body = get("bytes=0-0,2-2")
		require.Equal(t, http.StatusOK, resp.status, "disjoint ranges: the whole blob, no multipart")
		require.Equal(t, data, body)
	}
}
