package backends_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/backend/httpbackend"
	"github.com/krakenctl/krakenctl/backend/limit"
	"github.com/krakenctl/krakenctl/backend/registry"
	"github.com/krakenctl/krakenctl/server/backends"
)

func decodeRoutes(t *testing.T, doc string) ([]backends.Config, error) {
	t.Helper()
	var cfgs []backends.Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	err := dec.Decode(&cfgs)
	return cfgs, err
}

// TestLimitsConfig: `limits:` decodes strictly with byte sizes and durations as the rest of
// the config spells them, and Validate names the offending key under limits.
func TestLimitsConfig(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	cfgs, err := decodeRoutes(t, `
- namespace: ".*"
  fs: {root: `+root+`}
  limits: {upload_rate: 50MiB, download_rate: 1.5GB, concurrency: 8, retries: 5, retry_min: 200ms, retry_max: 30s}
`)
	require.NoError(t, err)
	require.NoError(t, cfgs[0].Validate())
	l := cfgs[0].Limits
	require.EqualValues(t, 50<<20, l.UploadRate)
	require.EqualValues(t, 1_500_000_000, l.DownloadRate)
	require.Equal(t, 8, l.Concurrency)
	require.Equal(t, 5, l.Retries)

	_, err = decodeRoutes(t, "- namespace: \".*\"\n  fs: {root: /x}\n  limits: {rate: 50MiB}\n")
	require.ErrorContains(t, err, "field rate not found")
	_, err = decodeRoutes(t, "- namespace: \".*\"\n  fs: {root: /x}\n  limits: {upload_rate: fast}\n")
	require.ErrorContains(t, err, "size \"fast\"")

	for doc, want := range map[string]string{
		"{concurrency: -1}":                   "limits.concurrency: -1 is negative",
		"{retries: -2}":                       "limits.retries: -2 is outside [0, 100]",
		"{retries: 1000}":                     "limits.retries: 1000 is outside",
		"{retry_min: -1s}":                    "limits.retry_min: -1s is negative",
		"{retry_min: 10s, retry_max: 1s}":     "limits.retry_max: 1s is less than retry_min 10s",
		"{retry_max: 100ms}":                  "limits.retry_max: 100ms is less than retry_min 200ms",
		"{upload_rate: 1MiB, concurrency: 0}": "",
	} {
		cfgs, err := decodeRoutes(t, "- namespace: \".*\"\n  fs: {root: "+root+"}\n  limits: "+doc+"\n")
		require.NoError(t, err, doc)
		err = cfgs[0].Validate()
		if want == "" {
			require.NoError(t, err, doc)
		} else {
			require.ErrorContains(t, err, want, doc)
		}
	}
}

// upstream is what the build-index asks of a registry route for upstream tags.
type upstream interface {
	backend.Backend
	Tags(ctx context.Context, repo string) ([]string, error)
	ResolveTag(ctx context.Context, repo, tag string) (digest.Digest, error)
}

// TestBuildWrapsLimitedRoutes: only a route with limits is wrapped, and an upstream registry
// under limits keeps the tag methods the build-index's upstream tags need.
func TestBuildWrapsLimitedRoutes(t *testing.T) {
	t.Parallel()
	r, err := backends.BuildWith(t.Context(), []backends.Config{
		{Namespace: "lim/.*", FS: &fs.Config{Root: t.TempDir()}, Limits: &backends.LimitsConfig{Concurrency: 2}},
		{Namespace: "hub/.*", Registry: &registry.Config{Address: "registry.invalid"}, Limits: &backends.LimitsConfig{Retries: 1}},
		{Namespace: ".*", FS: &fs.Config{Root: t.TempDir()}},
	}, backends.Deps{Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	rt, err := r.Route("lim/app")
	require.NoError(t, err)
	require.IsType(t, &limit.Backend{}, rt.Backend)
	rt, err = r.Route("hub/app")
	require.NoError(t, err)
	require.Implements(t, (*upstream)(nil), rt.Backend)
	require.ErrorIs(t, backend.CheckWrite(rt.Backend, "hub/app"), backend.ErrReadOnly)
	rt, err = r.Route("other")
	require.NoError(t, err)
	require.IsType(t, &fs.Backend{}, rt.Backend)
}

// TestHTTPThrottledThenOKThroughLimits: a server that answers 429 (with Retry-After) to the
// first GET and the first PUT, then serves, is retried through httpbackend and the route's
// limits: the download and the upload succeed with whole bodies, and the throttled answers and
// retries are counted under the route's name.
func TestHTTPThrottledThenOKThroughLimits(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		objects = map[string][]byte{"/library/app/_objects/abc": []byte("hello world")}
		seen    = map[string]int{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen[r.Method]++
		if seen[r.Method] == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		switch r.Method {
		case http.MethodGet:
			data, ok := objects[r.URL.Path]
			if !ok {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write(data)
		case http.MethodPut:
			data, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			objects[r.URL.Path] = data
			w.WriteHeader(http.StatusCreated)
		}
	}))
	t.Cleanup(srv.Close)
	reg := prometheus.NewRegistry()
	b, err := backends.BuildWith(t.Context(), []backends.Config{{
		Namespace: ".*", Name: "blobs",
		HTTP:   &httpbackend.Config{URL: srv.URL, AllowPut: true},
		Limits: &backends.LimitsConfig{Retries: 2, DownloadRate: 1 << 20, UploadRate: 1 << 20},
	}}, backends.Deps{Registerer: reg})
	require.NoError(t, err)
	t.Cleanup(func() {
		rt, _ := b.Route("x")
		rt.Backend.(*limit.Backend).Unwrap().(*httpbackend.Backend).CloseIdleConnections()
	})

	var got bytes.Buffer
	require.NoError(t, b.Download(t.Context(), "library/app", "abc", &got))
	require.Equal(t, "hello world", got.String())
	require.NoError(t, b.Upload(t.Context(), "library/app", "def", bytes.NewReader([]byte("new object")), 10))
	mu.Lock()
	require.Equal(t, "new object", string(objects["/library/app/_objects/def"]))
	require.Equal(t, map[string]int{http.MethodGet: 2, http.MethodPut: 2}, seen)
	mu.Unlock()

	mfs, err := reg.Gather()
	require.NoError(t, err)
	counts := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if m.GetCounter() != nil && labels["route"] == "blobs" && labels["op"] != "" {
				counts[mf.GetName()+"/"+labels["op"]] = m.GetCounter().GetValue()
			}
		}
	}
	require.Equal(t, map[string]float64{
		"krakenctl_backend_throttled_total/download": 1, "krakenctl_backend_retries_total/download": 1,
		"krakenctl_backend_throttled_total/upload": 1, "krakenctl_backend_retries_total/upload": 1,
	}, counts)
}

// TestHTTPConnResetRetried: a server that resets its first connection as soon as it accepts it
// (as an overloaded proxy may) is retried through the route's limits; the reset reaches the
// wrapper as syscall.ECONNRESET through net/http's errors (it fails with retries: 0).
func TestHTTPConnResetRetried(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(http.StatusOK)
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateNew && conns.Add(1) == 1 {
				// Reset at once: SO_LINGER 0 makes Close send RST instead of FIN.
				_ = c.(*net.TCPConn).SetLinger(0)
				_ = c.Close()
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	b, err := backends.BuildWith(t.Context(), []backends.Config{{
		Namespace: ".*", HTTP: &httpbackend.Config{URL: "http://" + ln.Addr().String()},
		Limits: &backends.LimitsConfig{Retries: 1, RetryMin: time.Millisecond},
	}}, backends.Deps{})
	require.NoError(t, err)
	info, err := b.Stat(t.Context(), "library/app", "abc")
	require.NoError(t, err)
	require.EqualValues(t, 5, info.Size)
	require.EqualValues(t, 2, conns.Load())
}
