package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// The small traps of issue 17, against real `krakenctl serve` processes: how an origin answers
// Range, digests nobody has, a blob file removed under it and a push it could never write back;
// how a tracker started before its origins hands them out; what a one-piece blob costs.

// rangeAnswer is what a test reads of a response once its body is read and closed.
type rangeAnswer struct {
	StatusCode int
	Header     http.Header
}

// countingStore is an HTTP storage backend (PUT, GET, HEAD) that counts the requests for each
// path, so a test can tell how often an origin asked it.
type countingStore struct {
	putServer
	mu    sync.Mutex
	asked map[string]int
}

func (s *countingStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.asked[r.Method+" "+r.URL.Path]++
	s.mu.Unlock()
	s.putServer.ServeHTTP(w, r)
}

func (s *countingStore) count(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[method+" "+path]
}

// TestOriginTrapsProcess runs one origin process over an HTTP store (writable for team/*,
// read-only for mirror/*) and checks, through the CLI and plain HTTP:
//   - Range: bytes=-0 is 416 with bytes */SIZE, overlapping parts are one range, a header of
//     thousands of parts gets at most the blob (O16, O17);
//   - GETs and HEADs of a digest nobody has cost one request to the store (O18), and the
//     digest pushed afterwards is served at once;
//   - a push into the read-only namespace is refused at the start, naming it (405 UNSUPPORTED);
//   - a blob file removed under the running origin is served again from the store, not 500;
//   - pull --file FILE -o json prints a summary; the old -o FILE is refused, naming --file.
func TestOriginTrapsProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	store := &countingStore{putServer: putServer{objects: map[string][]byte{}, addr: freeAddr(t)}, asked: map[string]int{}}
	// putServer.up serves putServer's handler; serve the counting one instead.
	srv := &http.Server{Handler: store}
	t.Cleanup(func() { _ = srv.Close() })
	ln, err := net.Listen("tcp", store.addr)
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()

	addr := freeAddr(t)
	storeDir := filepath.Join(dir, "origin")
	cfg := filepath.Join(dir, "origin.yaml")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, `listen: %s
admin_listen: 127.0.0.1:0
store:
  dir: %s
backends:
  - namespace: "team/.*"
    name: team-store
    http:
      url: http://%s/store
      allow_put: true
  - namespace: "mirror/.*"
    name: mirror-readonly
    http:
      url: http://%s/mirror
writeback:
  retry_initial: 100ms
  retry_max: 500ms
negative_cache:
  ttl: 1h
`, addr, storeDir, store.addr, store.addr), 0o644))
	logf, err := os.Create(filepath.Join(dir, "origin.log"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = logf.Close() }) // the child process wrote it
	p := originProc(t, addr, cfg, logf)
	p.start()
	t.Cleanup(p.kill)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("origin log (last 4 KiB):\n%s", tail(b, 4096))
		}
	})
	hc := &http.Client{Timeout: 30 * time.Second}
	// get returns the answer's status and headers and its body, read and closed.
	get := func(method, path string, hdr ...string) (rangeAnswer, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, "http://"+addr+path, nil)
		require.NoError(t, err)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return rangeAnswer{StatusCode: resp.StatusCode, Header: resp.Header}, b
	}

	data := make([]byte, 1<<20)
	_, err = rand.Read(data)
	require.NoError(t, err)
	d := digest.FromBytes(data)
	file := filepath.Join(dir, "blob.bin")
	require.NoError(t, os.WriteFile(file, data, 0o644))
	blobPath := "/namespace/team%2Fapp/blobs/" + d.String()
	objectPath := "/store/team/app/_objects/" + d.Encoded()

	t.Run("unknown digest asks the store once, then the push is served", func(t *testing.T) {
		for range 5 {
			resp, _ := get(http.MethodGet, blobPath)
			require.Equal(t, http.StatusNotFound, resp.StatusCode)
			resp, _ = get(http.MethodHead, blobPath)
			require.Equal(t, http.StatusNotFound, resp.StatusCode)
		}
		asked := store.count(http.MethodGet, objectPath) + store.count(http.MethodHead, objectPath)
		require.Equal(t, 1, asked, "ten requests for an unknown digest, one to the store")

		_, stderr, err := krakenctl(t, nil, "push", file, "--origins", addr, "--namespace", "team/app")
		require.NoError(t, err, stderr)
		resp, body := get(http.MethodGet, blobPath)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.True(t, bytes.Equal(data, body))
		require.Eventually(t, func() bool {
			b, ok := store.get(objectPath)
			return ok && bytes.Equal(b, data)
		}, 30*time.Second, 50*time.Millisecond, "written back")
	})

	t.Run("range", func(t *testing.T) {
		resp, _ := get(http.MethodGet, blobPath, "Range", "bytes=-0")
		require.Equal(t, http.StatusRequestedRangeNotSatisfiable, resp.StatusCode)
		require.Equal(t, fmt.Sprintf("bytes */%d", len(data)), resp.Header.Get("Content-Range"))

		resp, body := get(http.MethodGet, blobPath, "Range", "bytes=100-199,0-99")
		require.Equal(t, http.StatusPartialContent, resp.StatusCode)
		require.Equal(t, fmt.Sprintf("bytes 0-199/%d", len(data)), resp.Header.Get("Content-Range"))
		require.Equal(t, data[:200], body)

		many := "bytes=" + strings.Repeat("0-0,", 9999) + "0-0"
		resp, body = get(http.MethodGet, blobPath, "Range", many)
		require.LessOrEqual(t, len(body), len(data), "never more than the blob (was a multipart body 36 times the request)")
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})

	t.Run("blob file removed under the origin", func(t *testing.T) {
		require.NoError(t, os.Remove(filepath.Join(storeDir, "blobs", "blobs", "sha256", d.Encoded())))
		resp, _ := get(http.MethodHead, blobPath)
		require.Equal(t, http.StatusOK, resp.StatusCode, "HEAD answers from the store")
		resp, body := get(http.MethodGet, blobPath)
		require.Equal(t, http.StatusOK, resp.StatusCode, "GET pulls it through again (was 500)")
		require.True(t, bytes.Equal(data, body))
		require.Eventually(t, func() bool {
			b, _ := os.ReadFile(logf.Name())
			return bytes.Contains(b, []byte("blob file is gone"))
		}, 10*time.Second, 50*time.Millisecond, "the origin logs what it found")
	})

	t.Run("push into a read-only namespace is refused at the start", func(t *testing.T) {
		_, stderr, err := krakenctl(t, nil, "push", file, "--origins", addr, "--namespace", "mirror/base")
		require.Error(t, err)
		require.Contains(t, stderr, "UNSUPPORTED")
		require.Contains(t, stderr, `namespace "mirror/base"`)
		require.Contains(t, stderr, `backend "mirror-readonly"`)
		require.Contains(t, stderr, "read-only")
		require.Zero(t, store.count(http.MethodPut, "/mirror/mirror/base/_objects/"+d.Encoded()), "nothing was sent to the read-only store")
		b, err := os.ReadFile(logf.Name())
		require.NoError(t, err)
		require.Contains(t, string(b), "push refused: the namespace's backend cannot write")
	})

	t.Run("pull --file and -o", func(t *testing.T) {
		out := filepath.Join(dir, "pulled.bin")
		stdout, stderr, err := krakenctl(t, nil, "pull", d.String(), "--origins", addr, "--namespace", "team/app", "--file", out, "-o", "json")
		require.NoError(t, err, stderr)
		var res struct {
			Digest digest.Digest `json:"digest"`
			Size   int64         `json:"size"`
			File   string        `json:"file"`
		}
		require.NoError(t, json.Unmarshal([]byte(stdout), &res), stdout)
		require.Equal(t, d, res.Digest)
		require.EqualValues(t, len(data), res.Size)
		require.Equal(t, out, res.File)
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got))

		_, stderr, err = krakenctl(t, nil, "pull", d.String(), "--origins", addr, "--namespace", "team/app", "-o", out)
		require.Error(t, err)
		require.Contains(t, stderr, "--file "+out)
	})
}

// TestTrackerStartedBeforeOrigins starts a tracker, then its two origins: the tracker hands the
// origins out as soon as they answer (it reads a silent origin again after 100 ms, doubling,
// and on demand; the schedule itself is unit-tested with a fake clock in server/tracker). Then a
// one-piece blob pulled once through an agent wastes nothing (wasted_bytes was bytes_in: both
// origins were asked for the one piece).
func TestTrackerStartedBeforeOrigins(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	l := &swarmLab{t: t, dir: t.TempDir(), peerOf: map[string]string{}, adminOf: map[string]string{}}
	addrs := []string{freeAddr(t), freeAddr(t)}
	ta := freeAddr(t)
	tcfg := l.write("tracker", fmt.Sprintf(`listen: %s
admin_listen: 127.0.0.1:0
origins: [%s]
replicas: 2
announce_interval: 1s
announce:
  allow_loopback: true # every process runs on this host
`, ta, strings.Join(addrs, ", ")))
	tr := &proc{t: t, role: "tracker", name: ta, addr: ta, config: tcfg, log: l.logf("tracker"), ready: httpReady(ta)}
	tr.start()
	t.Cleanup(tr.kill)
	l.trackers = append(l.trackers, tr)
	t.Cleanup(func() {
		if t.Failed() {
			entries, _ := filepath.Glob(filepath.Join(l.dir, "*.log"))
			for _, e := range entries {
				b, _ := os.ReadFile(e)
				t.Logf("%s (last 3 KiB):\n%s", filepath.Base(e), tail(b, 3072))
			}
		}
	})

	// Announce as an agent would; the handout must come to name both origins.
	hc := &http.Client{Timeout: 10 * time.Second}
	d := digest.FromString("not pushed: the handout's origins do not depend on it")
	req := announce.Request{Namespace: "team/app", Digest: d, PeerID: wire.RandomPeerID().String(), Addr: freeAddr(t)}
	origins := func() int {
		body, err := json.Marshal(req)
		require.NoError(t, err)
		hreq, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+ta+announce.AnnouncePath, bytes.NewReader(body))
		require.NoError(t, err)
		resp, err := hc.Do(hreq)
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var r announce.Response
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
		n := 0
		for _, p := range r.Peers {
			if p.Origin {
				n++
			}
		}
		return n
	}
	require.Zero(t, origins(), "no origin runs yet")

	for i, a := range addrs {
		peer := freeAddr(t)
		cfg := l.write(fmt.Sprintf("origin-%d", i), fmt.Sprintf(`listen: %s
admin_listen: 127.0.0.1:0
store:
  dir: %s
ring:
  members: [%s]
  replicas: 2
  health_interval: 1s
  health_timeout: 1s
peer:
  listen: %s
`, a, filepath.Join(l.dir, fmt.Sprintf("origin-%d", i)), strings.Join(addrs, ", "), peer))
		p := originProc(t, a, cfg, l.logf(fmt.Sprintf("origin-%d", i)))
		p.start()
		t.Cleanup(p.kill)
		l.origins = append(l.origins, p)
	}
	require.Eventually(t, func() bool { return origins() == 2 }, 30*time.Second, 20*time.Millisecond,
		"the tracker hands out the origins once they answer")
	b, err := os.ReadFile(tr.log.Name())
	require.NoError(t, err)
	require.Contains(t, string(b), "origin unreachable; left out of handouts")
	require.Contains(t, string(b), "origin reachable")

	// A one-piece blob, pulled once through an agent from the two origins.
	data := make([]byte, 60<<10) // under the smallest piece length (64 KiB): one piece
	_, err = rand.Read(data)
	require.NoError(t, err)
	blob := digest.FromBytes(data)
	file := filepath.Join(l.dir, "small.bin")
	require.NoError(t, os.WriteFile(file, data, 0o644))
	_, stderr, err := krakenctl(t, nil, "push", file, "--origins", l.originAddrs(), "--namespace", "team/app")
	require.NoError(t, err, stderr)
	agent := l.agent("agent-0", "0")
	out := filepath.Join(l.dir, "small.out")
	_, stderr, err = krakenctl(t, nil, "pull", blob.String(), "--agent", agent.addr, "--namespace", "team/app", "--file", out)
	require.NoError(t, err, stderr)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))
	st, ok := torrent(t.Context(), agent.addr, blob)
	require.True(t, ok, "the agent reports the torrent")
	require.EqualValues(t, len(data), st.BytesIn)
	require.Zero(t, st.Wasted, "one piece fetched once wastes nothing")
}

// TestPushIntoUpstreamRepositoryRefused: a dev cluster in front of an upstream registry (an
// in-process one) serves that registry's image through an agent, but refuses a push into the
// upstream's repositories at the first blob upload, naming the repository and the backend: its
// blobs could never be written back (they used to be accepted and lived only on the origins).
// A push into any other repository still works.
func TestPushIntoUpstreamRepositoryRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	up := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(up.Close)
	upAddr := strings.TrimPrefix(up.URL, "http://")
	img, err := random.Image(2048, 2)
	require.NoError(t, err)
	require.NoError(t, remote.Write(mustRef(t, upAddr+"/e2e/up/app:v1"), img, remote.WithContext(t.Context())))

	c := devUp(t, 1, "--upstream-registry", "e2e/up/.*=http://"+upAddr)
	pulled, err := remote.Image(mustRef(t, c.ep.Agents[0]+"/e2e/up/app:v1"), remote.WithContext(t.Context()))
	require.NoError(t, err)
	want, err := img.Digest()
	require.NoError(t, err)
	got, err := pulled.Digest()
	require.NoError(t, err)
	require.Equal(t, want, got, "the upstream's image, through an agent")

	mine, err := random.Image(1024, 1)
	require.NoError(t, err)
	err = remote.Write(mustRef(t, c.proxy()+"/e2e/up/app:mine"), mine, remote.WithContext(t.Context()))
	require.Error(t, err)
	require.Contains(t, err.Error(), "UNSUPPORTED")
	require.Contains(t, err.Error(), `namespace "e2e/up/app"`)
	require.Contains(t, err.Error(), "upstream registry takes no uploads")

	require.NoError(t, remote.Write(mustRef(t, c.proxy()+"/e2e/other/app:mine"), mine, remote.WithContext(t.Context())))
}
