package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
)

// originProc returns an origin process, not started, that counts as started once /readyz
// answers.
func originProc(t *testing.T, addr, config string, log *os.File) *proc {
	hc := &http.Client{Timeout: time.Second}
	return &proc{t: t, role: "origin", name: addr, addr: addr, config: config, log: log,
		ready: func(ctx context.Context) error { return client.NewOrigin(addr, hc).Ready(ctx) }}
}

// putServer is an HTTP object server that accepts PUT, the storage backend of these tests. It
// can be taken down and brought back on the same address.
type putServer struct {
	mu      sync.Mutex
	objects map[string][]byte
	srv     *http.Server
	addr    string
}

func (s *putServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.Method {
	case http.MethodPut:
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.objects[r.URL.Path] = b
		w.WriteHeader(http.StatusCreated)
	case http.MethodGet, http.MethodHead:
		b, ok := s.objects[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(b)
		}
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (s *putServer) up(t *testing.T) {
	t.Helper()
	var ln net.Listener
	require.Eventually(t, func() bool {
		var err error
		ln, err = net.Listen("tcp", s.addr)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	s.srv = &http.Server{Handler: s}
	go func() { _ = s.srv.Serve(ln) }()
}

func (s *putServer) down() {
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}

func (s *putServer) get(path string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objects[path]
	return b, ok
}

func krakenctl(t *testing.T, stdin io.Reader, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// TestOriginProcesses runs three origins as processes over an HTTP storage backend that starts
// out down, and checks: push through one origin and pull through another with the CLI; write-back
// queued while storage is down; SIGKILL of an origin with its queue full and of an owner; restart
// drains the queue into storage once it is back; nothing is lost.
func TestOriginProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	store := &putServer{objects: map[string][]byte{}, addr: freeAddr(t)}
	t.Cleanup(store.down)

	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	procs := make([]*proc, len(addrs))
	for i, a := range addrs {
		cfg := fmt.Sprintf(`listen: %s
admin_listen: 127.0.0.1:0
store:
  dir: %s
ring:
  members: [%s]
  replicas: 2
  health_interval: 1s
  health_timeout: 1s
  fail_threshold: 2
  pass_threshold: 1
backends:
  - namespace: ".*"
    http:
      url: http://%s/store
      allow_put: true
writeback:
  retry_initial: 100ms
  retry_max: 500ms
  replica_delay: 1h
repair_interval: 2s
`, a, filepath.Join(dir, fmt.Sprintf("origin-%d", i)), strings.Join(addrs, ", "), store.addr)
		path := filepath.Join(dir, fmt.Sprintf("origin-%d.yaml", i))
		require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("origin-%d.log", i)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = logf.Close() }) // the child process wrote it; nothing is buffered here
		procs[i] = originProc(t, a, path, logf)
		procs[i].start()
		t.Cleanup(procs[i].kill)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range procs {
				b, _ := os.ReadFile(p.log.Name())
				t.Logf("log of origin %s (last 4 KiB):\n%s", p.addr, tail(b, 4096))
			}
		}
	})
	origins := strings.Join(addrs, ",")

	// Push a blob with the CLI while storage is down.
	data := make([]byte, 6<<20+3)
	_, err := rand.Read(data)
	require.NoError(t, err)
	want := digest.FromBytes(data)
	file := filepath.Join(dir, "blob.bin")
	require.NoError(t, os.WriteFile(file, data, 0o644))
	stdout, stderr, err := krakenctl(t, nil, "push", file, "--origins", origins, "--namespace", "team/app", "--chunk-size", "1MiB")
	require.NoError(t, err, stderr)
	require.Equal(t, want.String(), strings.TrimSpace(stdout))

	// Which origins own it?
	stdout, stderr, err = krakenctl(t, nil, "ring", "status", "--digest", want.String(), "--origins", origins, "-o", "json")
	require.NoError(t, err, stderr)
	var st api.RingStatus
	require.NoError(t, json.Unmarshal([]byte(stdout), &st))
	require.Len(t, st.Owners, 2)
	var nonOwner string
	for _, a := range addrs {
		if a != st.Owners[0] && a != st.Owners[1] {
			nonOwner = a
		}
	}
	procOf := func(a string) *proc {
		for _, p := range procs {
			if p.addr == a {
				return p
			}
		}
		t.Fatalf("no origin %s", a)
		return nil
	}

	// Pull it through the origin that does not own it.
	out := filepath.Join(dir, "pulled.bin")
	_, stderr, err = krakenctl(t, nil, "pull", want.String(), "--file", out, "--origins", nonOwner, "--namespace", "team/app")
	require.NoError(t, err, stderr)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "pulled bytes differ")

	// Storage is down, so the write-back waits in the queue. Kill every origin holding the blob
	// with SIGKILL, mid-queue, then bring storage back and restart them.
	_, ok := store.get("/store/team/app/_objects/" + want.Encoded())
	require.False(t, ok, "storage was down; nothing can be there yet")
	for _, a := range st.Owners {
		procOf(a).kill()
	}
	procOf(nonOwner).kill()
	store.up(t)
	for _, p := range procs {
		p.start()
	}
	require.Eventually(t, func() bool {
		b, ok := store.get("/store/team/app/_objects/" + want.Encoded())
		return ok && bytes.Equal(b, data)
	}, 60*time.Second, 50*time.Millisecond, "queue resumed after restart and wrote the blob back")

	// Kill one owner: the blob is still served, through the CLI, by the cluster.
	procOf(st.Owners[0]).kill()
	out2 := filepath.Join(dir, "pulled2.bin")
	_, stderr, err = krakenctl(t, nil, "pull", want.String(), "--file", out2, "--origins", origins, "--namespace", "team/app")
	require.NoError(t, err, stderr)
	got, err = os.ReadFile(out2)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "pulled bytes differ after owner loss")

	// The remaining origins stop cleanly on SIGTERM.
	for _, p := range procs {
		p.stop()
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
