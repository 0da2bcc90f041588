package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"

	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, tagstoretest.IgnoreLeftovers())
}

// gate holds back one piece of one blob on the connections of the listener it wraps, and lets
// every other message through: the agent then gets every piece but that one, so a test can
// look at a download that is certain to be unfinished, without timing. Releasing the gate
// sends the held messages. The gate parses the wire protocol's framing (docs/protocol.md):
// the acceptor's handshake, then frames of a 4-byte length and a type byte, where a piece
// message (type 4) starts with the piece index.
type gate struct {
	handshake int    // length of the origin's handshake
	piece     uint32 // the piece held back

	mu       sync.Mutex
	released bool
	conns    []*gatedConn
}

// newGate holds back the last piece of blob.
func newGate(t *testing.T, blob []byte) *gate {
	t.Helper()
	pl := metainfo.PieceLengthFor(int64(len(blob)))
	n := (int64(len(blob)) + pl - 1) / pl
	require.Greater(t, n, int64(1), "the blob has more than one piece")
	return &gate{handshake: 70 + int(n+7)/8, piece: uint32(n - 1)}
}

func (g *gate) release() {
	g.mu.Lock()
	g.released = true
	conns := g.conns
	g.mu.Unlock()
	for _, c := range conns {
		c.flushHeld()
	}
}

func (g *gate) isReleased() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.released
}

type gatedListener struct {
	net.Listener
	g *gate
}

func (l gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	gc := &gatedConn{Conn: c, g: l.g}
	l.g.mu.Lock()
	l.g.conns = append(l.g.conns, gc)
	l.g.mu.Unlock()
	return gc, nil
}

type gatedConn struct {
	net.Conn
	g *gate

	mu     sync.Mutex
	buf    []byte // written, not yet forwarded: an incomplete handshake or frame
	shaken bool
	held   []byte // frames of the held piece
	failed error
}

// Write forwards every complete frame except those of the held piece, and keeps the rest.
func (c *gatedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed != nil {
		return 0, c.failed
	}
	c.buf = append(c.buf, p...)
	var out []byte
	for {
		if !c.shaken {
			if len(c.buf) < c.g.handshake {
				break
			}
			out = append(out, c.buf[:c.g.handshake]...)
			c.buf = c.buf[c.g.handshake:]
			c.shaken = true
			continue
		}
		if len(c.buf) < 4 {
			break
		}
		n := 4 + int(binary.BigEndian.Uint32(c.buf))
		if len(c.buf) < n {
			break
		}
		frame := c.buf[:n]
		if n >= 9 && frame[4] == 4 && binary.BigEndian.Uint32(frame[5:9]) == c.g.piece && !c.g.isReleased() {
			c.held = append(c.held, frame...)
		} else {
			out = append(out, frame...)
		}
		c.buf = c.buf[n:]
	}
	c.buf = append([]byte(nil), c.buf...)
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			c.failed = err
			return 0, err
		}
	}
	return len(p), nil
}

func (c *gatedConn) flushHeld() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.held) > 0 && c.failed == nil {
		if _, err := c.Conn.Write(c.held); err != nil {
			c.failed = err
		}
	}
	c.held = nil
}

// origin is a seed-only scheduler holding blobs, as an origin's swarm side is.
type origin struct {
	s *scheduler.Scheduler
}

// stats sums the origin's torrents.
func (o *origin) bytesOut() int64 {
	var n int64
	for _, st := range o.s.Stats() {
		n += st.BytesOut
	}
	return n
}

// startOrigin starts a seed-only scheduler holding blobs and registers it with the tracker.
// With g set, its connections go through the gate.
func startOrigin(t *testing.T, tr *announcetest.Tracker, g *gate, blobs ...[]byte) *origin {
	t.Helper()
	st, err := castore.Open(t.TempDir(), castore.Options{})
	require.NoError(t, err)
	var mis []metainfo.MetaInfo
	for _, b := range blobs {
		d := digest.FromBytes(b)
		_, err = st.Ingest(t.Context(), d, bytes.NewReader(b))
		require.NoError(t, err)
		mi, err := metainfo.Generate(t.Context(), bytes.NewReader(b), int64(len(b)))
		require.NoError(t, err)
		data, err := mi.Encode()
		require.NoError(t, err)
		require.NoError(t, st.PutMeta(d, scheduler.MetainfoKind, data))
		mis = append(mis, mi)
	}
	var ln net.Listener
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if g != nil {
		ln = gatedListener{Listener: ln, g: g}
	}
	s, err := scheduler.New(scheduler.Config{SeedOnly: true}, scheduler.Deps{Store: st, Listener: ln})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		require.NoError(t, st.Close())
	})
	tr.AddMetainfo(mis...)
	tr.AddOrigin(s.PeerID().String(), s.Addr())
	return &origin{s: s}
}

// testAgent is a running agent of a cluster (server/cluster) and clients of it.
type testAgent struct {
	c     *cluster.Cluster
	i     int
	srv   *agent.Server
	url   string
	admin string // the admin listener's base URL
	hc    *http.Client
	cl    *client.Agent
	reg   *prometheus.Registry
}

// stop stops the agent and returns what Run returned; it may be called more than once.
func (a *testAgent) stop() error { return a.c.Stop(cluster.Agent, a.i) }

// newTestAgent wraps the cluster's i-th agent.
func newTestAgent(t *testing.T, c *cluster.Cluster, i int) *testAgent {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	return &testAgent{
		c: c, i: i, srv: c.Agent(i), url: "http://" + c.Addr(cluster.Agent, i), admin: "http://" + c.AdminAddr(cluster.Agent, i),
		hc: hc, cl: client.NewAgent(c.Addr(cluster.Agent, i), hc), reg: c.Registry(cluster.Agent, i),
	}
}

// testLogger shows warnings and errors in the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startAgent starts a cluster of one agent whose swarm uses tr, an in-process tracker.
func startAgent(t *testing.T, tr scheduler.Tracker, tweak func(*agent.Config)) *testAgent {
	t.Helper()
	c := clustertest.Start(t, cluster.Spec{
		Agents: 1,
		AgentConfig: func(_ int, cfg *agent.Config) {
			if tweak != nil {
				tweak(cfg)
			}
		},
	}, cluster.Deps{AgentTracker: tr, Logger: testLogger(t)})
	return newTestAgent(t, c, 0)
}

func randomBlob(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}
