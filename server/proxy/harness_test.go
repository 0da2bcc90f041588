package proxy_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"

	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, tagstoretest.IgnoreLeftovers()) }

// stack is a real cluster in one process (server/cluster): origins over a shared filesystem
// backend and a single-node build-index that checks content on the origins. Proxies are added
// with newProxy. Everything stops at the test's cleanup.
type stack struct {
	t       *testing.T
	c       *cluster.Cluster
	origins []string
	index   string
	hc      *http.Client
}

func newStack(t *testing.T, nOrigins int) *stack {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c := clustertest.Start(t, cluster.Spec{
		Origins: nOrigins, Replicas: 2, BuildIndexes: 1,
		OriginConfig: func(_ int, c *origin.Config) {
			c.Ring.HealthInterval, c.Ring.HealthTimeout = 500*time.Millisecond, 500*time.Millisecond
		},
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{})
	return &stack{
		t: t, c: c, hc: &http.Client{Transport: tr},
		origins: c.Addrs(cluster.Origin), index: c.Addr(cluster.BuildIndex, 0),
	}
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

// newProxy starts a proxy of the stack, checking the origins' health often, and returns it
// once it is ready.
func (st *stack) newProxy(edit func(*proxy.Config)) *proxy.Server {
	t := st.t
	p := st.newProxyUnready(func(c *proxy.Config) {
		c.OriginHealth = proxy.HealthConfig{Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond}
		if edit != nil {
			edit(c)
		}
	})
	require.Eventually(t, func() bool {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+p.Addr()+"/readyz", nil)
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
	return p
}

// newProxyUnready starts a proxy of the stack without waiting for it to be ready.
func (st *stack) newProxyUnready(edit func(*proxy.Config)) *proxy.Server {
	i, err := st.c.AddProxy(edit)
	require.NoError(st.t, err)
	return st.c.Proxy(i)
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
