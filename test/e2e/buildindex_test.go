package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
)

// buildIndexCluster writes the configs of n nodes under dir (the first bootstraps, the others
// join it) and returns them, not started.
func buildIndexCluster(t *testing.T, dir string, n int, origin, storage string) []*proc {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	procs := make([]*proc, n)
	var first string
	for i := range procs {
		id := fmt.Sprintf("bi-%d", i)
		addr, raft := freeAddr(t), freeAddr(t)
		join := ""
		if i == 0 {
			first = addr
		} else {
			join = "join: [" + first + "]\n"
		}
		cfg := fmt.Sprintf(`listen: %s
admin_listen: 127.0.0.1:0
raft_listen: %s
dir: %s
origins: [%s]
raft:
  node_id: %s
  bootstrap: %v
  heartbeat_timeout: 500ms
  election_timeout: 500ms
  leader_lease_timeout: 250ms
  snapshot_threshold: 16
  snapshot_interval: 200ms
  trailing_logs: 8
backends:
  - namespace: ".*"
    fs: {root: %s}
writeback:
  retry_initial: 100ms
  retry_max: 500ms
  follower_delay: 300ms
%s`, addr, raft, filepath.Join(dir, id), origin, id, i == 0, storage, join)
		path := filepath.Join(dir, id+".yaml")
		require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
		logf, err := os.Create(filepath.Join(dir, id+".log"))
		require.NoError(t, err)
		t.Cleanup(func() { _ = logf.Close() }) // the child process wrote it; nothing is buffered here
		procs[i] = &proc{t: t, role: "build-index", name: id, addr: addr, config: path, log: logf}
		t.Cleanup(procs[i].kill)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range procs {
				b, _ := os.ReadFile(p.log.Name())
				t.Logf("log of build-index %s (last 4 KiB):\n%s", p.name, tail(b, 4096))
			}
		}
	})
	return procs
}

// waitLeader waits until every running node sees one leader and want members, and returns it.
func waitLeader(t *testing.T, procs []*proc, want int) *proc {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	var leader *proc
	require.Eventually(t, func() bool {
		id := ""
		for _, p := range procs {
			if !p.running() {
				continue
			}
			select {
			case <-p.exited:
				t.Fatalf("build-index %s exited; log %s", p.name, p.log.Name())
			default:
			}
			st, err := client.NewBuildIndex(p.addr, hc).ClusterStatus(context.Background())
			if err != nil || st.LeaderID == "" || len(st.Members) != want || id != "" && st.LeaderID != id {
				return false
			}
			id = st.LeaderID
		}
		for _, p := range procs {
			if p.name == id && p.running() {
				leader = p
				return true
			}
		}
		return false
	}, 60*time.Second, 50*time.Millisecond, "a leader among %d members", want)
	return leader
}

// eventually runs the CLI until it succeeds (an election may be under way) and returns stdout.
func eventually(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr string
	var err error
	require.Eventually(t, func() bool {
		stdout, stderr, err = krakenctl(t, nil, args...)
		return err == nil
	}, 60*time.Second, 100*time.Millisecond, "krakenctl %v: %v: %s", args, err, stderr)
	return stdout
}

func addrsOf(procs []*proc) string {
	var a []string
	for _, p := range procs {
		a = append(a, p.addr)
	}
	return strings.Join(a, ",")
}

// TestBuildIndexProcesses runs three `krakenctl serve build-index` processes over one origin
// and a filesystem backend, driven by the CLI: a tag is refused until its manifest and layers
// are in the origin; SIGKILL of the leader leaves tags readable and writable; the killed node
// catches up; every node SIGKILLed and restarted keeps its state; a fresh cluster restored from
// the backend has the same tags.
func TestBuildIndexProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	// The race detector sleeps a second before a process exits; this test runs the CLI ~150 times.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	dir := t.TempDir()
	storage := filepath.Join(dir, "storage")

	// One origin holds the content the tags point at.
	originAddr := freeAddr(t)
	ocfg := filepath.Join(dir, "origin.yaml")
	require.NoError(t, os.WriteFile(ocfg, []byte(fmt.Sprintf("listen: %s\nadmin_listen: 127.0.0.1:0\nstore:\n  dir: %s\n", originAddr, filepath.Join(dir, "origin"))), 0o644))
	ologf, err := os.Create(filepath.Join(dir, "origin.log"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = ologf.Close() }) // the child process wrote it; nothing is buffered here
	origin := originProc(t, originAddr, ocfg, ologf)
	origin.start()
	t.Cleanup(origin.kill)

	pushFile := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, data, 0o644))
		stdout, stderr, err := krakenctl(t, nil, "push", path, "--origins", originAddr, "--namespace", "team/app")
		require.NoError(t, err, stderr)
		return strings.TrimSpace(stdout)
	}
	layer := []byte(strings.Repeat("layer bytes ", 1000))
	cfgBlob := []byte(`{"architecture":"amd64","os":"linux"}`)
	manifest := func(layerDigest string, layerSize int) []byte {
		return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
			`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
			`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`,
			pushFile("config.json", cfgBlob), len(cfgBlob), layerDigest, layerSize))
	}

	procs := buildIndexCluster(t, filepath.Join(dir, "one"), 3, originAddr, storage)
	for _, p := range procs {
		p.start()
	}
	leader := waitLeader(t, procs, 3)
	all := addrsOf(procs)

	// The manifest's layer is not in the origin yet: refused, and nothing is stored.
	layerDigest := digest.FromBytes(layer).String()
	m1 := pushFile("m1.json", manifest(layerDigest, len(layer)))
	_, stderr, err := krakenctl(t, nil, "tag", "put", "team/app:v1", m1, "--build-index", all)
	require.Error(t, err)
	require.Contains(t, stderr, "MANIFEST_BLOB_UNKNOWN")
	_, _, err = krakenctl(t, nil, "tag", "get", "team/app:v1", "--build-index", all)
	require.Error(t, err)
	require.Equal(t, layerDigest, pushFile("layer.tar", layer))
	eventually(t, "tag", "put", "team/app:v1", m1, "--build-index", all)
	require.Equal(t, m1, strings.TrimSpace(eventually(t, "tag", "get", "team/app:v1", "--build-index", all)))

	// A tag names a manifest: a plain blob is refused.
	plain := pushFile("plain", []byte("not a manifest"))
	_, stderr, err = krakenctl(t, nil, "tag", "put", "team/app:plain", plain, "--build-index", all)
	require.Error(t, err)
	require.Contains(t, stderr, "MANIFEST_INVALID")

	// Many puts (small indexes, each its own): snapshots, compaction.
	want := map[string]string{"v1": m1}
	for i := range 40 {
		d := pushFile(fmt.Sprintf("index%d", i), []byte(fmt.Sprintf(
			`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"i":"%d"}}`, i)))
		tag := fmt.Sprintf("b%02d", i)
		eventually(t, "tag", "put", "team/app:"+tag, d, "--build-index", procs[i%3].addr)
		want[tag] = d
	}

	// SIGKILL the leader: reads and writes continue on the others after an election.
	leader.kill()
	var survivors []*proc
	for _, p := range procs {
		if p != leader {
			survivors = append(survivors, p)
		}
	}
	require.Equal(t, m1, strings.TrimSpace(eventually(t, "tag", "get", "team/app:v1", "--build-index", survivors[0].addr)))
	for i := range 5 {
		d := pushFile(fmt.Sprintf("after%d", i), []byte(fmt.Sprintf(
			`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"after":"%d"}}`, i)))
		tag := fmt.Sprintf("after%d", i)
		eventually(t, "tag", "put", "team/app:"+tag, d, "--build-index", addrsOf(survivors))
		want[tag] = d
	}
	newLeader := waitLeader(t, procs, 3)
	require.NotEqual(t, leader.name, newLeader.name)

	// The killed node comes back and catches up.
	leader.start()
	waitLeader(t, procs, 3)
	require.Eventually(t, func() bool {
		out, _, err := krakenctl(t, nil, "tag", "get", "team/app:after4", "--stale", "--build-index", leader.addr)
		return err == nil && strings.TrimSpace(out) == want["after4"]
	}, 60*time.Second, 100*time.Millisecond, "the restarted node caught up")

	check := func(procs []*proc) {
		t.Helper()
		for _, p := range procs {
			out := eventually(t, "tag", "list", "team/app", "--all", "-o", "json", "--build-index", p.addr)
			var tl api.TagList
			require.NoError(t, json.Unmarshal([]byte(out), &tl), out)
			require.Len(t, tl.Tags, len(want), p.name)
		}
		for tag, d := range want {
			require.Equal(t, d, strings.TrimSpace(eventually(t, "tag", "get", "team/app:"+tag, "--build-index", all)), tag)
		}
	}
	check(procs)

	// Every node SIGKILLed at once, then restarted: the state is intact.
	for _, p := range procs {
		p.kill()
	}
	for _, p := range procs {
		p.start()
	}
	waitLeader(t, procs, 3)
	check(procs)

	// The backend has every tag once the write-back is done; then a fresh cluster is rebuilt
	// from it.
	require.Eventually(t, func() bool {
		entries, err := os.ReadDir(filepath.Join(storage, "krakenctl-tags", "_objects"))
		return err == nil && countObjects(entries) == len(want)
	}, 60*time.Second, 100*time.Millisecond, "every tag written back")
	for _, p := range procs {
		p.stop()
	}
	fresh := buildIndexCluster(t, filepath.Join(dir, "two"), 1, originAddr, storage)
	fresh[0].start()
	waitLeader(t, fresh, 1)
	out := eventually(t, "cluster", "restore", "-o", "json", "--build-index", fresh[0].addr)
	var rr api.RestoreResult
	require.NoError(t, json.Unmarshal([]byte(out), &rr), out)
	require.Equal(t, len(want), rr.Imported)
	all = fresh[0].addr
	check(fresh)
	fresh[0].stop()
	origin.stop()
}

// countObjects counts the tag objects in a filesystem backend's objects directory.
func countObjects(entries []os.DirEntry) int {
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "t-") {
			n++
		}
	}
	return n
}
