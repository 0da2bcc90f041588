package e2e

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
)

// Tests of issue 17's cleanup part against real processes, driven by `krakenctl cache`.

// cacheJSON runs `krakenctl cache ARGS -o json` and decodes its output into out.
func cacheJSON(t *testing.T, out any, args ...string) {
	t.Helper()
	stdout, stderr, err := krakenctl(t, nil, append(append([]string{"cache"}, args...), "-o", "json")...)
	require.NoError(t, err, stderr)
	require.NoError(t, json.Unmarshal([]byte(stdout), out), stdout)
}

func digests(bs []api.CacheBlob) map[digest.Digest]string {
	out := map[digest.Digest]string{}
	for _, b := range bs {
		out[b.Digest] = b.Reason + "/" + b.Kept
	}
	return out
}

// TestAgentCacheEvict runs origins, trackers and an agent as processes. The agent pulls three
// blobs; `cache status` shows them; while one of them is streamed to a client that has not
// read it yet, `cache evict --dry-run` reports what `cache evict` then removes, exactly, and
// keeps the streamed blob ("open"); the client then receives that blob whole.
func TestAgentCacheEvict(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	l := newSwarmLab(t, "0")
	var trackers []string
	for _, tp := range l.trackers {
		trackers = append(trackers, tp.addr)
	}
	addr := freeAddr(t)
	// The policy's loop is off (interval: -1s), so only the commands below remove anything and
	// the dry run and the eviction see the same store; a short seed time lets the swarm let go.
	cfg := l.write("agent-cache", fmt.Sprintf(`listen: %s
admin_listen: 127.0.0.1:0
peer_listen: %s
trackers: [%s]
store_dir: %s
seed_time: 1s
cleanup:
  interval: -1s
`, addr, freeAddr(t), strings.Join(trackers, ", "), filepath.Join(l.dir, "agent-cache")))
	agent := &proc{t: t, role: "agent", name: "agent-cache", addr: addr, config: cfg, log: l.logf("agent-cache"), ready: httpReady(addr)}
	agent.start()
	t.Cleanup(agent.kill)

	var ds []digest.Digest
	for i, size := range []int{16 << 20, 1 << 20, 2 << 20} {
		data := make([]byte, size)
		_, err := rand.Read(data)
		require.NoError(t, err)
		file := filepath.Join(l.dir, fmt.Sprintf("blob-%d", i))
		require.NoError(t, os.WriteFile(file, data, 0o644))
		_, stderr, err := krakenctl(t, nil, "push", file, "--origins", l.originAddrs(), "--namespace", "team/app")
		require.NoError(t, err, stderr)
		d := digest.FromBytes(data)
		out := file + ".pulled"
		_, done := l.pullStart(agent, d, out)
		require.NoError(t, waitPull(t, done))
		requireBlob(t, out, d)
		ds = append(ds, d)
	}
	// The swarm retires the torrents once their seed time is over; then only reads keep blobs.
	require.Eventually(t, func() bool {
		for _, d := range ds {
			if _, ok := torrent(t.Context(), agent.addr, d); ok {
				return false
			}
		}
		return true
	}, time.Minute, 50*time.Millisecond, "torrents retired")

	var st api.CacheStatus
	cacheJSON(t, &st, "status", "--agent", agent.addr, "--blobs", "10")
	require.Equal(t, "agent", st.Role)
	require.Equal(t, 3, st.BlobCount)
	require.Equal(t, int64(19<<20), st.UsedBytes)
	require.Len(t, st.Blobs, 3)
	require.Equal(t, ds[0], st.Blobs[0].Digest, "least recently used first")

	// A client streams ds[0] (16 MiB, more than loopback buffers hold) and reads nothing yet:
	// the agent's handler is blocked writing it, with the blob open.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+agent.addr+api.BlobPath("team/app", ds[0]), nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, func() bool {
		var st api.CacheStatus
		cacheJSON(t, &st, "status", "--agent", agent.addr, "--blobs", "3")
		for _, b := range st.Blobs {
			if b.Digest == ds[0] {
				return b.InUse == api.CacheKeptOpen
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "the streamed blob is open")

	var dry, real api.CacheEvictReport
	cacheJSON(t, &dry, "evict", "--agent", agent.addr, "--idle", "1ms", "--dry-run")
	require.True(t, dry.DryRun)
	require.Equal(t, map[digest.Digest]string{ds[1]: "manual/", ds[2]: "manual/"}, digests(dry.Removed))
	require.Equal(t, map[digest.Digest]string{ds[0]: "manual/open"}, digests(dry.Kept))
	cacheJSON(t, &st, "status", "--agent", agent.addr)
	require.Equal(t, 3, st.BlobCount, "a dry run removes nothing")

	cacheJSON(t, &real, "evict", "--agent", agent.addr, "--idle", "1ms")
	require.False(t, real.DryRun)
	require.Equal(t, digests(dry.Removed), digests(real.Removed), "the dry run said exactly what went")
	require.Equal(t, digests(dry.Kept), digests(real.Kept))
	require.Equal(t, int64(3<<20), real.FreedBytes)
	require.Equal(t, int64(16<<20), real.UsedBytes)

	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, ds[0], digest.FromBytes(body), "the streamed blob arrives whole")

	// The table says the same, and a blob removed is fetched again through the swarm.
	table, stderr, err := krakenctl(t, nil, "cache", "status", "--agent", agent.addr)
	require.NoError(t, err, stderr)
	require.Contains(t, table, "agent "+agent.addr+": 1 blob, 16.0 MiB used")
	out := filepath.Join(l.dir, "again")
	_, done := l.pullStart(agent, ds[1], out)
	require.NoError(t, waitPull(t, done))
	requireBlob(t, out, ds[1])
}

// TestOriginCacheKeepsPendingWriteback runs an origin process whose storage backend is down,
// with an aggressive cleanup policy (tti 1s, every second). A pushed blob awaiting write-back
// stays, however idle: the policy reports it kept as "held"; once the backend is back and
// the blob written back, the origin's own loop removes it, counted in the metrics, and a read
// pulls it back from storage.
func TestOriginCacheKeepsPendingWriteback(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	backend := &putServer{objects: map[string][]byte{}, addr: freeAddr(t)}
	t.Cleanup(backend.down) // down from the start: every write-back fails
	o := newCapOrigin(t, filepath.Join(t.TempDir(), "store"), 0, backend.addr)
	cfg, err := os.ReadFile(o.cfg)
	require.NoError(t, err)
	// Each write-back attempt reads the blob, which is a use: retries every 5 s leave it idle
	// past the tti of 1 s between attempts.
	withCleanup := strings.NewReplacer("store:\n", "store:\n  cleanup:\n    interval: 1s\n    tti: 1s\n",
		"retry_initial: 100ms", "retry_initial: 5s", "retry_max: 200ms", "retry_max: 5s").Replace(string(cfg))
	require.Contains(t, withCleanup, "retry_max: 5s")
	require.Contains(t, withCleanup, "tti: 1s")
	require.NoError(t, os.WriteFile(o.cfg, []byte(withCleanup), 0o644))
	o.p.start()

	data := randomBlob(t, 1<<20)
	d := digest.FromBytes(data)
	a, err := o.push(data)
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, a.status)

	// Idle past the tti, and the loop has run (a blob nothing holds would be gone by now):
	// wait for the policy to choose it, then check it kept it.
	var st api.CacheStatus
	require.Eventually(t, func() bool {
		cacheJSON(t, &st, "status", "--origin", o.addr, "--blobs", "5")
		return len(st.WouldKeep) == 1
	}, 30*time.Second, 100*time.Millisecond, "idle past the tti")
	require.Equal(t, []api.CacheReasonTotal{{Reason: api.CacheKeptHeld, Blobs: 1, Bytes: 1 << 20}}, st.WouldKeep)
	require.Equal(t, 1, st.BlobCount)
	require.Equal(t, api.CacheKeptHeld, st.Blobs[0].InUse)
	// The loop runs every second meanwhile (the same code as --policy below): still there.
	time.Sleep(2 * time.Second)
	cacheJSON(t, &st, "status", "--origin", o.addr)
	require.Equal(t, 1, st.BlobCount)
	var rep api.CacheEvictReport
	cacheJSON(t, &rep, "evict", "--origin", o.addr, "--policy")
	require.Empty(t, rep.Removed)
	require.Equal(t, map[digest.Digest]string{d: "tti/held"}, digests(rep.Kept))
	o.requireComplete(data)
	require.Zero(t, o.metric(`krakenctl_store_cleanup_removed_blobs_total{reason="tti"}`))

	backend.up(t)
	require.Eventually(t, func() bool {
		backend.mu.Lock()
		defer backend.mu.Unlock()
		for path, b := range backend.objects {
			if strings.Contains(path, d.Encoded()) && digest.FromBytes(b) == d {
				return true
			}
		}
		return false
	}, time.Minute, 50*time.Millisecond, "written back")
	require.Eventually(t, func() bool {
		return o.metric(`krakenctl_store_cleanup_removed_blobs_total{reason="tti"}`) == 1
	}, 30*time.Second, 100*time.Millisecond, "the origin's loop removes it once written back")
	require.Equal(t, float64(1<<20), o.metric(`krakenctl_store_cleanup_removed_bytes_total{reason="tti"}`))
	require.Contains(t, o.logText(), "castore: cleanup removed blobs")
	o.requireComplete(data) // pulled back from storage
}
