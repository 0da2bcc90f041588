package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"

	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, tagstoretest.IgnoreLeftovers()) }

// stack is a real cluster in one process: origins over a shared filesystem backend and a
// single-node build-index that checks content on the origins. Proxies are added with
// newProxy. Everything stops at the test's cleanup.
type stack struct {
	t       *testing.T
	dir     string
	origins []string
	index   string
	hc      *http.Client
}

func newStack(t *testing.T, nOrigins int) *stack {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	st := &stack{t: t, dir: t.TempDir(), hc: &http.Client{Transport: tr}}
	st.startOrigins(nOrigins)
	st.startBuildIndex()
	return st
}

// run runs a role until the test ends, failing the test if it does not stop cleanly.
func run(t *testing.T, name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("stop %s: %v", name, err)
		}
	})
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
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

func (st *stack) startOrigins(n int) {
	t := st.t
	lns := make([]net.Listener, n)
	for i := range lns {
		lns[i] = listen(t)
		st.origins = append(st.origins, lns[i].Addr().String())
	}
	for i, ln := range lns {
		srv, err := origin.New(origin.Config{
			Listen:    st.origins[i],
			Advertise: st.origins[i],
			Store:     origin.StoreConfig{Dir: filepath.Join(st.dir, fmt.Sprintf("origin-%d", i))},
			Ring: ring.Config{
				Members: st.origins, Replicas: 2,
				HealthInterval: 500 * time.Millisecond, HealthTimeout: 500 * time.Millisecond,
			},
			Backends: []backends.Config{{Namespace: ".*", Name: "fs", FS: &fs.Config{Root: filepath.Join(st.dir, "backend")}}},
		}, origin.Deps{Listener: ln})
		require.NoError(t, err)
		run(t, "origin", srv.Run)
	}
	for _, a := range st.origins {
		require.Eventually(t, func() bool { return client.NewOrigin(a, st.hc).Ready(t.Context()) == nil },
			10*time.Second, 10*time.Millisecond, "origin %s ready", a)
	}
}

func (st *stack) startBuildIndex() {
	t := st.t
	hl, rl := listen(t), listen(t)
	verify := true
	cfg := buildindex.Config{
		Listen: hl.Addr().String(), RaftListen: rl.Addr().String(), Dir: filepath.Join(st.dir, "build-index"),
		Origins: st.origins, VerifyContent: &verify,
	}
	cfg.Raft.NodeID = "bi"
	cfg.Raft.Bootstrap = true
	cfg.Raft.HeartbeatTimeout = 300 * time.Millisecond
	cfg.Raft.ElectionTimeout = 300 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 150 * time.Millisecond
	cfg.Raft.CommitTimeout = 5 * time.Millisecond
	srv, err := buildindex.New(cfg, buildindex.Deps{Listener: hl, RaftListener: rl, HTTPClient: st.hc})
	require.NoError(t, err)
	run(t, "build-index", srv.Run)
	st.index = hl.Addr().String()
	require.Eventually(t, func() bool { return client.NewBuildIndex(st.index, st.hc).Ready(t.Context()) == nil },
		30*time.Second, 10*time.Millisecond, "build-index ready")
}

// newProxy starts a proxy of the stack and returns it once it is ready.
func (st *stack) newProxy(edit func(*proxy.Config)) *proxy.Server {
	t := st.t
	ln := listen(t)
	cfg := proxy.Config{
		Listen: ln.Addr().String(), Origins: st.origins, BuildIndex: []string{st.index},
		OriginHealth: proxy.HealthConfig{Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond},
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := proxy.New(cfg, proxy.Deps{Listener: ln})
	require.NoError(t, err)
	run(t, "proxy", srv.Run)
	require.Eventually(t, func() bool {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+srv.Addr()+"/readyz", nil)
		if err != nil {
			return false
		}
		resp, err := st.hc.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 10*time.Millisecond, "proxy ready")
	return srv
}

func (st *stack) buildIndex() *client.BuildIndex { return client.NewBuildIndex(st.index, st.hc) }

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// push uploads data to repo through r as a session of chunks of at most chunk bytes and
// commits it as d.
func push(t *testing.T, r registry.Writer, repo string, data []byte, d digest.Digest, chunk int) {
	t.Helper()
	ctx := t.Context()
	id, err := r.StartUpload(ctx, repo)
	require.NoError(t, err)
	var off int64
	for off < int64(len(data)) {
		end := min(off+int64(chunk), int64(len(data)))
		n, err := r.AppendUpload(ctx, repo, id, off, bytes.NewReader(data[off:end]), end-off)
		require.NoError(t, err)
		require.Equal(t, end, n)
		off = end
	}
	require.NoError(t, r.CommitUpload(ctx, repo, id, d))
}

// readBlob reads blob d of repo through r from off.
func readBlob(t *testing.T, r registry.Reader, repo string, d digest.Digest, off int64) []byte {
	t.Helper()
	br, err := r.Blob(t.Context(), repo, d)
	require.NoError(t, err)
	defer func() { require.NoError(t, br.Close()) }()
	rc, err := br.Open(t.Context(), off)
	require.NoError(t, err)
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	require.Len(t, b, int(br.Size()-off))
	return b
}
