package e2e

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// idleFleet is issue 13's slot attack (attack-findings.md §5, P9, P10): connections that
// handshake for a blob with random peer ids, claim nothing, request nothing and send a
// keepalive every 10 s, to hold connection slots away from real agents.
type idleFleet struct {
	t        *testing.T
	mi       metainfo.MetaInfo
	mu       sync.Mutex
	conns    []net.Conn
	answered atomic.Int32 // handshakes answered
	busy     atomic.Int32 // connections closed after an error with CodeBusy
	open     atomic.Int32 // connections not yet closed by the other side
	wg       sync.WaitGroup
}

func newIdleFleet(t *testing.T, mi metainfo.MetaInfo) *idleFleet {
	f := &idleFleet{t: t, mi: mi}
	t.Cleanup(f.close)
	return f
}

// dial opens n connections from local (an IP on loopback) to addr, 16 at a time, and returns
// once each was answered or refused.
func (f *idleFleet) dial(local, addr string, n int) {
	var next atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for next.Add(1) <= int32(n) {
				f.one(local, addr)
			}
		})
	}
	wg.Wait()
}

func (f *idleFleet) one(local, addr string) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return
	}
	f.mu.Lock()
	f.conns = append(f.conns, nc)
	f.mu.Unlock()
	h := wire.Handshake{
		Digest: f.mi.Digest, PeerID: wire.RandomPeerID(), Length: f.mi.Length, PieceLength: f.mi.PieceLength,
		Bitfield: wire.NewBitfield(f.mi.NumPieces()),
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if wire.WriteHandshake(nc, h) != nil {
		return
	}
	r := bufio.NewReader(nc)
	if _, err := wire.ReadHandshake(r); err != nil {
		return
	}
	_ = nc.SetDeadline(time.Time{})
	f.answered.Add(1)
	f.open.Add(1)
	done := make(chan struct{})
	f.wg.Go(func() {
		defer close(done)
		defer f.open.Add(-1)
		dec := wire.NewDecoder(r)
		for {
			m, err := dec.ReadMessage()
			if err != nil {
				return
			}
			if e, ok := m.(wire.Error); ok && e.Code == wire.CodeBusy {
				f.busy.Add(1)
			}
		}
	})
	f.wg.Go(func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if wire.WriteMessage(nc, wire.KeepAlive{}) != nil {
					return
				}
			}
		}
	})
}

func (f *idleFleet) close() {
	f.mu.Lock()
	for _, nc := range f.conns {
		_ = nc.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// metric sums the samples of the metric name at the admin address whose labels contain every
// one of labels (`reason="idle"`), 0 if none.
func metric(t *testing.T, admin, name string, labels ...string) float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+admin+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
outer:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue outer
			}
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		require.NoError(t, err, line)
		sum += v
	}
	require.NoError(t, sc.Err())
	return sum
}

// originsMetric sums metric over the lab's origins.
func (l *swarmLab) originsMetric(t *testing.T, name string, labels ...string) float64 {
	var sum float64
	for _, p := range l.origins {
		sum += metric(t, l.adminOf[p.addr], name, labels...)
	}
	return sum
}

// pushBlob pushes size random bytes to the origins and returns the digest and metainfo.
func (l *swarmLab) pushBlob(t *testing.T, name string, size int) (digest.Digest, metainfo.MetaInfo) {
	t.Helper()
	data := make([]byte, size)
	_, err := rand.Read(data)
	require.NoError(t, err)
	d := digest.FromBytes(data)
	file := filepath.Join(l.dir, name)
	require.NoError(t, os.WriteFile(file, data, 0o644))
	_, stderr, err := krakenctl(t, nil, "push", file, "--origins", l.originAddrs(), "--namespace", "team/app")
	require.NoError(t, err, stderr)
	var trackers []string
	for _, tp := range l.trackers {
		trackers = append(trackers, tp.addr)
	}
	c, err := announce.NewClient(trackers, nil)
	require.NoError(t, err)
	mi, err := c.Metainfo(t.Context(), "team/app", d)
	require.NoError(t, err)
	return d, mi
}

// slotAgent starts an agent like swarmLab.agent, on known peer and admin addresses.
func (l *swarmLab) slotAgent(name string) (p *proc, peer, admin string) {
	a, peer, admin := freeAddr(l.t), freeAddr(l.t), freeAddr(l.t)
	var trackers []string
	for _, tp := range l.trackers {
		trackers = append(trackers, tp.addr)
	}
	cfg := l.write(name, fmt.Sprintf(`listen: %s
admin_listen: %s
peer_listen: %s
trackers: [%s]
store_dir: %s
`, a, admin, peer, strings.Join(trackers, ", "), filepath.Join(l.dir, name)))
	p = &proc{t: l.t, role: "agent", name: name, addr: a, config: cfg, log: l.logf(name), ready: httpReady(a)}
	p.start()
	l.t.Cleanup(p.kill)
	return p, peer, admin
}

const (
	evictedMetric = "krakenctl_swarm_connections_evicted_total"
	refusedMetric = "krakenctl_swarm_handshakes_refused_total"
	peersMetric   = "krakenctl_swarm_torrent_peers"
)

// TestP2PSlotsHeldByIdlePeers: 1,024 idle connections per owning origin (every slot of the
// blob) do not stop a fresh agent's pull (P10); nor do idle connections from the agent's own
// address, nor idle connections holding every slot of the only agent that has a blob (P9)
// with 2,000 silent sockets waiting on it (P7).
func TestP2PSlotsHeldByIdlePeers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	l := newSwarmLab(t, "0")

	t.Run("origins full of idle peers from other addresses", func(t *testing.T) {
		d, mi := l.pushBlob(t, "slots-1.bin", 5<<20)
		fleet := newIdleFleet(t, mi)
		for _, p := range l.origins {
			// 256 from each of four addresses: the per-address bound (max_conns/4) times four
			// fills the blob's 1,024 slots.
			for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
				fleet.dial(src, l.peerOf[p.addr], 256)
			}
		}
		require.EqualValues(t, 2*1024, fleet.answered.Load(), "every idle connection was let in")
		require.Equal(t, 2*1024.0, l.originsMetric(t, peersMetric, `digest="`+d.String()+`"`),
			"the idle connections hold every slot of both origins")

		agent := l.agent("agent-slots-1", "0")
		out := filepath.Join(l.dir, "slots-1.out")
		_, done := l.pullStart(agent, d, out)
		require.NoError(t, waitPull(t, done))
		requireBlob(t, out, d)

		idle := l.originsMetric(t, evictedMetric, `reason="idle"`)
		require.Positive(t, idle, "an idle connection made room for the agent")
		require.Eventually(t, func() bool { return float64(fleet.busy.Load()) >= idle }, 20*time.Second,
			10*time.Millisecond, "every evicted peer was told CodeBusy")
		t.Logf("evicted for the agent: %.0f; agent refused while the idle peers were in their grace: %.0f",
			idle, l.originsMetric(t, refusedMetric, `reason="busy"`))
		agent.stop()
	})

	t.Run("origins full of idle peers from the agent's address", func(t *testing.T) {
		d, mi := l.pushBlob(t, "slots-2.bin", 5<<20)
		fleet := newIdleFleet(t, mi)
		before := l.originsMetric(t, refusedMetric, `reason="per_address"`)
		for _, p := range l.origins {
			fleet.dial("127.0.0.1", l.peerOf[p.addr], 1024)
		}
		require.Equal(t, 2*256.0, l.originsMetric(t, peersMetric, `digest="`+d.String()+`"`),
			"one address holds at most a quarter of the slots")
		require.Equal(t, before+2*768, l.originsMetric(t, refusedMetric, `reason="per_address"`))
		require.EqualValues(t, 2*256, fleet.open.Load())

		agent := l.agent("agent-slots-2", "0")
		out := filepath.Join(l.dir, "slots-2.out")
		_, done := l.pullStart(agent, d, out)
		require.NoError(t, waitPull(t, done))
		requireBlob(t, out, d)
		require.Positive(t, l.originsMetric(t, evictedMetric, `reason="per_address"`),
			"an idle connection from the agent's address made room for it")
		agent.stop()
	})

	t.Run("an agent's slots full of idle peers", func(t *testing.T) {
		d, mi := l.pushBlob(t, "slots-3.bin", 5<<20)
		seeder, seederPeer, seederAdmin := l.slotAgent("agent-slots-seeder")
		out := filepath.Join(l.dir, "slots-3-seeder.out")
		_, done := l.pullStart(seeder, d, out)
		require.NoError(t, waitPull(t, done))

		// Without the origins the downloader depends on the seeder (the trackers keep the
		// metainfo). The seeder's connections to them close.
		for _, o := range l.origins {
			o.kill()
		}
		require.Eventually(t, func() bool {
			st, ok := torrent(t.Context(), seeder.addr, d)
			return ok && len(st.Peers) == 0
		}, time.Minute, 10*time.Millisecond, "the seeder's connections to the dead origins closed")

		// 20 slots (max_conns), at most 16 from one address (max_conns_per_addr).
		fleet := newIdleFleet(t, mi)
		fleet.dial("127.0.0.6", seederPeer, 16)
		fleet.dial("127.0.0.7", seederPeer, 16)
		require.Eventually(t, func() bool { return fleet.open.Load() == 20 }, 20*time.Second, 10*time.Millisecond)
		st, _ := torrent(t.Context(), seeder.addr, d)
		require.Len(t, st.Peers, 20, "the idle connections hold every slot of the seeder")

		// P7 as well: 2,000 sockets that never send a handshake wait on the seeder, at most
		// max_handshakes (256) at a time.
		var silent []net.Conn
		t.Cleanup(func() {
			for _, nc := range silent {
				_ = nc.Close()
			}
		})
		for _, src := range []string{"127.0.0.8", "127.0.0.9"} {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			for range 1000 {
				nc, err := d.DialContext(t.Context(), "tcp", seederPeer)
				require.NoError(t, err)
				silent = append(silent, nc)
			}
		}
		require.Eventually(t, func() bool {
			return metric(t, seederAdmin, evictedMetric, `reason="handshake"`) >= 2000-256
		}, time.Minute, 10*time.Millisecond, "the seeder holds at most 256 sockets waiting for a handshake")

		leech := l.agent("agent-slots-leech", "0")
		out = filepath.Join(l.dir, "slots-3-leech.out")
		_, done = l.pullStart(leech, d, out)
		require.NoError(t, waitPull(t, done))
		requireBlob(t, out, d)
		require.Positive(t, metric(t, seederAdmin, evictedMetric, `reason="idle"`),
			"an idle connection made room for the downloader")
		require.Positive(t, fleet.busy.Load())
	})
}
