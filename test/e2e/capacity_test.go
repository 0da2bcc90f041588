package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// Tests of issue 17's first part against real origin processes: capacity as a reservation, a
// full disk as 507 STORAGE_FULL, a store trimmed at startup, and commits that a kill -9 at any
// step leaves either absent or complete (metainfo and write-back included).

// mountTmpfs mounts a tmpfs of size bytes on a new directory and unmounts it when the test
// ends; it skips the test when mounting is not possible (not root, no tmpfs).
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	require.NoError(t, os.Mkdir(dir, 0o755))
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// freeBytes returns the bytes free for writing on the file system holding dir.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	require.NoError(t, syscall.Statfs(dir, &st))
	return int64(st.Bavail) * st.Bsize
}

// fill writes a file of zeros into dir until the file system has about leave bytes free, and
// returns its path.
func fill(t *testing.T, dir string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer func() { require.NoError(t, f.Close()) }()
	for n := freeBytes(t, dir) - leave; n > 0; n = freeBytes(t, dir) - leave {
		_, err := f.Write(make([]byte, min(n, 1<<20)))
		require.NoError(t, err)
	}
	return path
}

// capOrigin is a lone origin process for these tests, with an admin listener for its metrics.
type capOrigin struct {
	t     *testing.T
	addr  string
	admin string
	dir   string
	cfg   string
	log   *os.File
	p     *proc
}

// newCapOrigin writes the config of a single-member origin storing in storeDir (capacity 0
// means unlimited; backend "" means none) and returns it, not started.
func newCapOrigin(t *testing.T, storeDir string, capacity int64, backend string) *capOrigin {
	t.Helper()
	dir := t.TempDir()
	o := &capOrigin{t: t, addr: freeAddr(t), admin: freeAddr(t), dir: storeDir}
	o.cfg = filepath.Join(dir, "origin.yaml")
	o.writeConfig(capacity, backend)
	var err error
	o.log, err = os.Create(filepath.Join(dir, "origin.log"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = o.log.Close() }) // the child wrote it; nothing is buffered here
	o.p = originProc(t, o.addr, o.cfg, o.log)
	t.Cleanup(o.p.kill)
	return o
}

func (o *capOrigin) writeConfig(capacity int64, backend string) {
	cfg := fmt.Sprintf(`listen: %s
admin_listen: %s
store:
  dir: %s
  capacity: %d
ring:
  members: [%s]
  replicas: 1
writeback:
  retry_initial: 100ms
  retry_max: 200ms
`, o.addr, o.admin, o.dir, capacity, o.addr)
	if backend != "" {
		cfg += fmt.Sprintf(`backends:
  - namespace: ".*"
    http:
      url: http://%s/store
      allow_put: true
`, backend)
	}
	require.NoError(o.t, os.WriteFile(o.cfg, []byte(cfg), 0o644))
}

// writtenBack waits until the store behind the origin holds every blob of datas: only then may
// the origin evict them (until then they are its only copies, held for write-back).
func writtenBack(t *testing.T, backend *putServer, datas ...[]byte) {
	t.Helper()
	for _, data := range datas {
		require.Eventually(t, func() bool {
			b, ok := backend.get("/store/test/_objects/" + digest.FromBytes(data).Encoded())
			return ok && bytes.Equal(b, data)
		}, 30*time.Second, 10*time.Millisecond, "written back")
	}
}

func (o *capOrigin) logText() string {
	b, err := os.ReadFile(o.log.Name())
	require.NoError(o.t, err)
	return string(b)
}

// metric returns the value of the sample of the origin's /metrics whose name and labels are
// exactly series (e.g. `krakenctl_castore_full_total{reason="disk"}`).
func (o *capOrigin) metric(series string) float64 {
	o.t.Helper()
	req, err := http.NewRequestWithContext(o.t.Context(), http.MethodGet, "http://"+o.admin+"/metrics", nil)
	require.NoError(o.t, err)
	resp, err := capClient.Do(req)
	require.NoError(o.t, err)
	defer func() { _ = resp.Body.Close() }() // read to the end below
	body, err := io.ReadAll(resp.Body)
	require.NoError(o.t, err)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			require.NoError(o.t, err)
			return v
		}
	}
	o.t.Fatalf("no sample %s in the origin's metrics", series)
	return 0
}

var capClient = &http.Client{Timeout: 60 * time.Second}

// reply is a status and an OCI error code (empty for a success).
type reply struct {
	status int
	code   string
	header http.Header
}

// do sends req; it is safe in any goroutine (it fails no test itself).
func do(req *http.Request) (reply, error) {
	resp, err := capClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	a := reply{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode >= 400 {
		var e struct {
			Errors []struct{ Code string } `json:"errors"`
		}
		if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 {
			return reply{}, fmt.Errorf("%d with an error body that is not the spec's: %q", resp.StatusCode, body)
		}
		a.code = e.Errors[0].Code
	}
	return a, nil
}

// push uploads data monolithically under namespace test.
func (o *capOrigin) push(data []byte) (reply, error) { return o.pushTo("test", data) }

// pushTo uploads data monolithically under namespace ns.
func (o *capOrigin) pushTo(ns string, data []byte) (reply, error) {
	req, err := http.NewRequestWithContext(o.t.Context(), http.MethodPost, fmt.Sprintf("http://%s/namespace/%s/uploads?digest=%s",
		o.addr, ns, digest.FromBytes(data)), bytes.NewReader(data))
	require.NoError(o.t, err)
	return do(req)
}

// get returns the status and body of GET path on the origin.
func (o *capOrigin) get(path string) (int, []byte) {
	o.t.Helper()
	req, err := http.NewRequestWithContext(o.t.Context(), http.MethodGet, "http://"+o.addr+path, nil)
	require.NoError(o.t, err)
	resp, err := capClient.Do(req)
	require.NoError(o.t, err)
	defer func() { _ = resp.Body.Close() }() // read to the end below
	body, err := io.ReadAll(resp.Body)
	require.NoError(o.t, err)
	return resp.StatusCode, body
}

func blobPath(d digest.Digest) string { return "/namespace/test/blobs/" + d.String() }

// requireComplete checks that the origin serves d whole, with its metainfo.
func (o *capOrigin) requireComplete(data []byte) {
	o.t.Helper()
	d := digest.FromBytes(data)
	status, body := o.get(blobPath(d))
	require.Equal(o.t, http.StatusOK, status)
	require.Equal(o.t, d, digest.FromBytes(body), "served whole")
	status, body = o.get(blobPath(d) + "/metainfo")
	require.Equal(o.t, http.StatusOK, status, "metainfo: %s", body)
	require.Contains(o.t, string(body), d.String())
}

// requireAbsent checks that the origin's own store does not have d.
func (o *capOrigin) requireAbsent(d digest.Digest) {
	o.t.Helper()
	status, _ := o.get("/internal/blobs/" + d.String())
	require.Equal(o.t, http.StatusNotFound, status)
}

func randomBlob(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// TestOriginDiskFull runs an origin without a capacity on a 16 MiB tmpfs and lets the disk fill
// before, during and at the end of an upload, and under a stored blob that a second push must
// record under another namespace: each answers 507 STORAGE_FULL (never 500), logs
// an error, counts krakenctl_castore_full_total{reason="disk"}, and leaves nothing half-done:
// no blob stored or served, a chunked session back at its last acknowledged size, and once
// space is freed the same uploads succeed, complete with metainfo and write-back.
func TestOriginDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	disk := mountTmpfs(t, 16<<20)
	backend := &putServer{objects: map[string][]byte{}, addr: freeAddr(t)}
	backend.up(t)
	t.Cleanup(backend.down)
	o := newCapOrigin(t, filepath.Join(disk, "origin"), 0, backend.addr)
	o.p.start()

	// Before: the disk is full before the upload starts.
	before := randomBlob(t, 2<<20)
	filler := fill(t, disk, 256<<10)
	a, err := o.push(before)
	require.NoError(t, err)
	require.Equal(t, reply{status: http.StatusInsufficientStorage, code: "STORAGE_FULL"}, reply{status: a.status, code: a.code})
	o.requireAbsent(digest.FromBytes(before))
	require.NoError(t, os.Remove(filler))

	// During: a chunked upload whose second chunk finds the disk full.
	during := randomBlob(t, 3<<20)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+o.addr+"/namespace/test/uploads", nil)
	require.NoError(t, err)
	a, err = do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, a.status)
	loc := "http://" + o.addr + a.header.Get("Location")
	patch := func(off, end int) reply {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, loc, bytes.NewReader(during[off:end]))
		require.NoError(t, err)
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", off, end-1))
		a, err := do(req)
		require.NoError(t, err)
		return a
	}
	require.Equal(t, http.StatusAccepted, patch(0, 1<<20).status)
	filler = fill(t, disk, 256<<10)
	a = patch(1<<20, 3<<20)
	require.Equal(t, reply{status: http.StatusInsufficientStorage, code: "STORAGE_FULL"}, reply{status: a.status, code: a.code})
	req, err = http.NewRequestWithContext(t.Context(), http.MethodGet, loc, nil)
	require.NoError(t, err)
	a, err = do(req)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(1<<20), a.header.Get("Upload-Offset"), "the failed chunk was rolled back")
	require.NoError(t, os.Remove(filler))
	require.Equal(t, http.StatusAccepted, patch(1<<20, 3<<20).status)
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, err = http.NewRequestWithContext(t.Context(), http.MethodPut, loc+sep+"digest="+digest.FromBytes(during).String(), nil)
	require.NoError(t, err)
	a, err = do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, a.status)
	o.requireComplete(during)

	// At the end: the bytes fit, the blob's metadata and write-back record do not (F7 filled
	// the disk there, after the rename, and left a blob served without either).
	filler = fill(t, disk, 2<<20)
	end := randomBlob(t, int(freeBytes(t, disk)-4096))
	a, err = o.push(end)
	require.NoError(t, err)
	require.Equal(t, reply{status: http.StatusInsufficientStorage, code: "STORAGE_FULL"}, reply{status: a.status, code: a.code})
	o.requireAbsent(digest.FromBytes(end))
	require.NoError(t, os.Remove(filler))
	a, err = o.push(end)
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, a.status)
	o.requireComplete(end)

	// After: a full disk under a stored blob. Pushing it again under another namespace must
	// record that namespace, which the disk refuses: 507, and the stored blob is untouched.
	filler = fill(t, disk, 0)
	a, err = o.pushTo("other", during)
	require.NoError(t, err)
	require.Equal(t, reply{status: http.StatusInsufficientStorage, code: "STORAGE_FULL"}, reply{status: a.status, code: a.code})
	o.requireComplete(during)
	require.NoError(t, os.Remove(filler))

	require.Equal(t, float64(4), o.metric(`krakenctl_castore_full_total{reason="disk"}`))
	require.Regexp(t, `"level":"ERROR","msg":"castore: store full".*"reason":"disk"`, o.logText())
	for _, data := range [][]byte{during, end} {
		require.Eventually(t, func() bool {
			b, ok := backend.get("/store/test/_objects/" + digest.FromBytes(data).Encoded())
			return ok && bytes.Equal(b, data)
		}, 30*time.Second, 50*time.Millisecond, "written back")
	}
}

// TestOriginConcurrentUploadsOverCapacity is F8 without its 500s: a 24 MiB tmpfs, a capacity of
// 16 MiB already full of evictable blobs, and eight concurrent 4 MiB uploads. Each reserves its
// Content-Length when it starts, so eviction makes room before anything is written: every
// upload either succeeds or answers 507 STORAGE_FULL at once (those that find the capacity
// reserved by the others), at least four succeed, the disk never fills, and every stored blob
// is whole. Then sequential uploads, which eviction can always make room for, all succeed.
func TestOriginConcurrentUploadsOverCapacity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	const size = 4 << 20
	disk := mountTmpfs(t, 24<<20)
	// With storage behind it: an origin without one holds the only copies and evicts nothing.
	backend := &putServer{objects: map[string][]byte{}, addr: freeAddr(t)}
	backend.up(t)
	t.Cleanup(backend.down)
	o := newCapOrigin(t, filepath.Join(disk, "origin"), 16<<20, backend.addr)
	o.p.start()
	var first [][]byte
	for range 4 {
		data := randomBlob(t, size)
		a, err := o.push(data)
		require.NoError(t, err)
		require.Equal(t, http.StatusCreated, a.status)
		first = append(first, data)
	}
	writtenBack(t, backend, first...)

	blobs := make([][]byte, 8)
	answers := make([]reply, len(blobs))
	errs := make([]error, len(blobs))
	var wg sync.WaitGroup
	for i := range blobs {
		blobs[i] = randomBlob(t, size)
		wg.Go(func() { answers[i], errs[i] = o.push(blobs[i]) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	ok, full := 0, 0
	for i, a := range answers {
		switch {
		case a.status == http.StatusCreated:
			ok++
			// Stored whole, unless a later upload of this burst evicted it already.
			if status, _ := o.get("/internal/blobs/" + digest.FromBytes(blobs[i]).String()); status != http.StatusNotFound {
				o.requireComplete(blobs[i])
			}
		case a.status == http.StatusInsufficientStorage && a.code == "STORAGE_FULL":
			full++
			o.requireAbsent(digest.FromBytes(blobs[i]))
		default:
			t.Fatalf("upload %d: %+v", i, a)
		}
	}
	require.GreaterOrEqual(t, ok, 4, "what the capacity holds at once always succeeds")
	require.Equal(t, float64(full), o.metric(`krakenctl_castore_full_total{reason="capacity"}`))
	require.Equal(t, float64(0), o.metric(`krakenctl_castore_full_total{reason="disk"}`))
	require.LessOrEqual(t, o.metric("krakenctl_castore_used_bytes"), float64(16<<20))

	for i, a := range answers {
		if a.status == http.StatusCreated {
			writtenBack(t, backend, blobs[i])
		}
	}
	for range 6 {
		data := randomBlob(t, size)
		a, err := o.push(data)
		require.NoError(t, err)
		require.Equal(t, http.StatusCreated, a.status)
		o.requireComplete(data)
		writtenBack(t, backend, data)
	}
	require.Equal(t, float64(0), o.metric("krakenctl_castore_reserved_bytes"))
}

// TestOriginRestartOverCapacity is F9 and F2: an origin holding five 1 MiB blobs and a 1 MiB
// upload session is killed mid-upload and restarted with a capacity of 3 MiB. Before it serves
// it trims: the killed process's session goes first, then the least recently used blobs, and
// says so in its log; the most recent blobs stay whole and uploads work at once.
func TestOriginRestartOverCapacity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	const size = 1 << 20
	// With storage behind it: an origin without one holds the only copies and trims nothing.
	backend := &putServer{objects: map[string][]byte{}, addr: freeAddr(t)}
	backend.up(t)
	t.Cleanup(backend.down)
	o := newCapOrigin(t, filepath.Join(t.TempDir(), "origin"), 0, backend.addr)
	o.p.start()
	var blobs [][]byte
	for range 5 {
		data := randomBlob(t, size)
		a, err := o.push(data)
		require.NoError(t, err)
		require.Equal(t, http.StatusCreated, a.status)
		blobs = append(blobs, data)
		// The store orders blobs by last use after a restart from the files' times.
		time.Sleep(20 * time.Millisecond)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+o.addr+"/namespace/test/uploads", nil)
	require.NoError(t, err)
	a, err := do(req)
	require.NoError(t, err)
	req, err = http.NewRequestWithContext(t.Context(), http.MethodPatch, "http://"+o.addr+a.header.Get("Location"), bytes.NewReader(randomBlob(t, size)))
	require.NoError(t, err)
	a, err = do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, a.status)
	writtenBack(t, backend, blobs...)
	o.p.kill()

	o.writeConfig(3*size, backend.addr)
	o.p.start()
	log := o.logText()
	require.Contains(t, log, "castore: trimmed to capacity at startup")
	require.Regexp(t, `"evicted_blobs":2,"evicted_blob_bytes":2097152,"evicted_uploads":1,"evicted_upload_bytes":1048576,"still_over_bytes":0`, log)
	require.Equal(t, float64(3*size), o.metric("krakenctl_castore_used_bytes"))
	require.Equal(t, float64(0), o.metric("krakenctl_castore_reserved_bytes"))
	for i, data := range blobs {
		if i < 2 {
			o.requireAbsent(digest.FromBytes(data))
		} else {
			o.requireComplete(data)
		}
	}
	data := randomBlob(t, size)
	a, err = o.push(data)
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, a.status)
	o.requireComplete(data)
}

// TestOriginKilledAtEachCommitStep kills an origin (SIGKILL, from inside, at a named step of
// the commit: a binary built with the krakenctl_faults tag) while it commits an upload, with
// its storage backend down, then restarts it and brings storage up. Up to the rename the blob
// must be absent (and the upload unacknowledged); from the rename on it must be complete:
// served whole, with its metainfo, and written back to storage by the queue. Never in between.
func TestOriginKilledAtEachCommitStep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	steps := []struct {
		step    string
		present bool
	}{
		{"write", false}, {"sync", false}, {"prepare", false}, {"meta", false},
		{"meta-rename", false}, {"rename", false}, {"renamed", true},
	}
	for _, tc := range steps {
		t.Run(tc.step, func(t *testing.T) {
			backend := &putServer{objects: map[string][]byte{}, addr: freeAddr(t)}
			t.Cleanup(backend.down)
			o := newCapOrigin(t, filepath.Join(t.TempDir(), "origin"), 0, backend.addr)
			o.p.env = []string{"KRAKENCTL_FAULT_CRASH_AT=" + tc.step}
			o.p.start()
			data := randomBlob(t, 3<<20)
			_, err := o.push(data)
			require.Error(t, err, "the origin died before it answered")
			select {
			case <-o.p.exited:
			case <-time.After(30 * time.Second):
				t.Fatal("the origin did not die at the step")
			}
			require.Equal(t, -1, o.p.cmd.ProcessState.ExitCode(), "killed by a signal")
			o.p.cmd = nil

			o.p.env = nil
			o.p.start()
			backend.up(t)
			d := digest.FromBytes(data)
			if !tc.present {
				o.requireAbsent(d)
				status, _ := o.get(blobPath(d) + "/metainfo")
				require.Equal(t, http.StatusNotFound, status)
				return
			}
			o.requireComplete(data)
			require.Eventually(t, func() bool {
				b, ok := backend.get("/store/test/_objects/" + d.Encoded())
				return ok && bytes.Equal(b, data)
			}, 30*time.Second, 50*time.Millisecond, "written back after the restart")
		})
	}
}
