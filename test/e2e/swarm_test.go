package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// swarmLab is two origins that seed over the swarm, two trackers and any number of agents,
// each a `krakenctl serve` process.
type swarmLab struct {
	t        *testing.T
	dir      string
	origins  []*proc
	trackers []*proc
	peerOf   map[string]string // origin API address → its swarm address
	adminOf  map[string]string // origin API address → its admin address (/metrics)
}

func (l *swarmLab) logf(name string) *os.File {
	f, err := os.Create(filepath.Join(l.dir, name+".log"))
	require.NoError(l.t, err)
	l.t.Cleanup(func() { _ = f.Close() }) // the child process wrote it; nothing is buffered here
	return f
}

func (l *swarmLab) write(name, body string) string {
	path := filepath.Join(l.dir, name+".yaml")
	require.NoError(l.t, os.WriteFile(path, []byte(body), 0o644))
	return path
}

func httpReady(addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	}
}

func newSwarmLab(t *testing.T, originRate string) *swarmLab {
	l := &swarmLab{t: t, dir: t.TempDir(), peerOf: map[string]string{}, adminOf: map[string]string{}}
	addrs := []string{freeAddr(t), freeAddr(t)}
	for i, a := range addrs {
		peer := freeAddr(t)
		l.peerOf[a] = peer
		l.adminOf[a] = freeAddr(t)
		cfg := l.write(fmt.Sprintf("origin-%d", i), fmt.Sprintf(`listen: %s
admin_listen: %s
store:
  dir: %s
ring:
  members: [%s]
  replicas: 2
  health_interval: 1s
  health_timeout: 1s
peer:
  listen: %s
  egress_rate: %s
`, a, l.adminOf[a], filepath.Join(l.dir, fmt.Sprintf("origin-%d", i)), strings.Join(addrs, ", "), peer, originRate))
		p := originProc(t, a, cfg, l.logf(fmt.Sprintf("origin-%d", i)))
		p.start()
		t.Cleanup(p.kill)
		l.origins = append(l.origins, p)
	}
	for i := range 2 {
		a := freeAddr(t)
		cfg := l.write(fmt.Sprintf("tracker-%d", i), fmt.Sprintf(`listen: %s
admin_listen: 127.0.0.1:0
origins: [%s]
replicas: 2
announce_interval: 1s
peer_ttl: 5s
announce:
  allow_loopback: true # every process runs on this host
`, a, strings.Join(addrs, ", ")))
		p := &proc{t: t, role: "tracker", name: a, addr: a, config: cfg, log: l.logf(fmt.Sprintf("tracker-%d", i)), ready: httpReady(a)}
		p.start()
		t.Cleanup(p.kill)
		l.trackers = append(l.trackers, p)
	}
	t.Cleanup(func() {
		if t.Failed() {
			entries, _ := filepath.Glob(filepath.Join(l.dir, "*.log"))
			for _, e := range entries {
				b, _ := os.ReadFile(e)
				t.Logf("%s (last 3 KiB):\n%s", filepath.Base(e), tail(b, 3072))
			}
		}
	})
	return l
}

// agent starts an agent process with the given ingress limit ("0" for none).
func (l *swarmLab) agent(name, ingress string) *proc {
	a := freeAddr(l.t)
	var trackers []string
	for _, tp := range l.trackers {
		trackers = append(trackers, tp.addr)
	}
	cfg := l.write(name, fmt.Sprintf(`listen: %s
admin_listen: 127.0.0.1:0
peer_listen: %s
trackers: [%s]
store_dir: %s
ingress_rate: %s
`, a, freeAddr(l.t), strings.Join(trackers, ", "), filepath.Join(l.dir, name), ingress))
	p := &proc{t: l.t, role: "agent", name: name, addr: a, config: cfg, log: l.logf(name), ready: httpReady(a)}
	p.start()
	l.t.Cleanup(p.kill)
	return p
}

func (l *swarmLab) originAddrs() string {
	var as []string
	for _, p := range l.origins {
		as = append(as, p.addr)
	}
	return strings.Join(as, ",")
}

// torrent returns the agent's stats of blob d, if it has a torrent for it.
func torrent(ctx context.Context, addr string, d digest.Digest) (snapshot.TorrentStats, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/swarm/torrents", nil)
	if err != nil {
		return snapshot.TorrentStats{}, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return snapshot.TorrentStats{}, false
	}
	defer func() { _ = resp.Body.Close() }()
	var all []snapshot.TorrentStats
	if json.NewDecoder(resp.Body).Decode(&all) != nil {
		return snapshot.TorrentStats{}, false
	}
	for _, st := range all {
		if st.Digest == d {
			return st, true
		}
	}
	return snapshot.TorrentStats{}, false
}

// pullStart starts `krakenctl pull` through an agent in the background.
func (l *swarmLab) pullStart(agent *proc, d digest.Digest, out string) (*exec.Cmd, chan error) {
	cmd := exec.Command(bin, "pull", d.String(), "--agent", agent.addr, "--namespace", "team/app", "--file", out)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(l.t, cmd.Start())
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, stderr.String())
		}
		done <- err
	}()
	return cmd, done
}

func waitPull(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Minute):
		t.Fatal("pull did not finish in 2 minutes")
		return nil
	}
}

// waitHave waits until the agent's torrent of d holds at least frac of its pieces.
func waitHave(t *testing.T, agent *proc, d digest.Digest, frac float64) {
	t.Helper()
	require.Eventually(t, func() bool {
		st, ok := torrent(t.Context(), agent.addr, d)
		return ok && st.Pieces > 0 && float64(st.Have) >= frac*float64(st.Pieces)
	}, time.Minute, 5*time.Millisecond, "agent %s reaches %.0f%% of %s", agent.name, frac*100, d)
}

func requireBlob(t *testing.T, path string, want digest.Digest) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, want, digest.FromBytes(b))
}

// TestSwarmProcesses runs origins, trackers and agents as processes and breaks them mid-flight:
// an agent killed and restarted mid-download resumes; an origin killed mid-download leaves the
// other owner to finish; with the first-ranked tracker dead, agents use the second.
func TestSwarmProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	// Each origin sends at most 3 MiB/s, so a 24 MiB pull takes seconds and can be broken.
	l := newSwarmLab(t, "3MiB")
	data := make([]byte, 24<<20+7)
	_, err := rand.Read(data)
	require.NoError(t, err)
	d := digest.FromBytes(data)
	file := filepath.Join(l.dir, "blob.bin")
	require.NoError(t, os.WriteFile(file, data, 0o644))
	_, stderr, err := krakenctl(t, nil, "push", file, "--origins", l.originAddrs(), "--namespace", "team/app")
	require.NoError(t, err, stderr)

	t.Run("agent restarted mid-download resumes", func(t *testing.T) {
		a := l.agent("agent-restart", "0")
		out := filepath.Join(l.dir, "restart.out")
		_, done := l.pullStart(a, d, out)
		waitHave(t, a, d, 0.4)
		a.kill()
		// The client saw its agent die; what matters is what the agent kept.
		t.Logf("pull through the killed agent: %v", <-done)
		a.start()
		_, done = l.pullStart(a, d, out)
		require.NoError(t, waitPull(t, done))
		requireBlob(t, out, d)
		st, ok := torrent(t.Context(), a.addr, d)
		require.True(t, ok)
		require.Positive(t, st.Resumed, "pieces saved before the kill were reused")
		require.Less(t, st.BytesIn, int64(len(data)), "the restarted agent fetched only what it lacked")
		t.Logf("resumed %d of %d pieces; fetched %d of %d bytes after the restart", st.Resumed, st.Pieces, st.BytesIn, len(data))
		a.stop() // so that the next agents find the blob only at the origins
	})

	t.Run("origin killed mid-download", func(t *testing.T) {
		a := l.agent("agent-origin-kill", "0")
		out := filepath.Join(l.dir, "origin-kill.out")
		_, done := l.pullStart(a, d, out)
		waitHave(t, a, d, 0.3)
		st, _ := torrent(t.Context(), a.addr, d)
		var fromBoth int
		for _, p := range st.Peers {
			if p.Origin {
				fromBoth++
			}
		}
		require.Equal(t, 2, fromBoth, "the agent downloads from both owners")
		l.origins[0].kill()
		require.NoError(t, waitPull(t, done))
		requireBlob(t, out, d)
		st, _ = torrent(t.Context(), a.addr, d)
		require.Positive(t, st.BytesInOrigin, "the surviving origin served the rest")
		a.stop()
		l.origins[0].start()
	})

	t.Run("first tracker killed", func(t *testing.T) {
		var addrs []string
		for _, tp := range l.trackers {
			addrs = append(addrs, tp.addr)
		}
		first := ring.Rank(d.String(), addrs)[0]
		for _, tp := range l.trackers {
			if tp.addr == first {
				tp.kill()
				defer tp.start()
			}
		}
		a := l.agent("agent-tracker-kill", "0")
		out := filepath.Join(l.dir, "tracker-kill.out")
		_, done := l.pullStart(a, d, out)
		require.NoError(t, waitPull(t, done))
		requireBlob(t, out, d)
	})
}
