package azure_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/azure"
)

// A base64 account key for the in-process servers, which do not check signatures.
const fakeKey = "ZmFrZS1rZXktZm9yLXRlc3RzLW9ubHktZmFrZS1rZXktZm9yLXRlc3RzLW9ubHk="

// answering is an in-process Blob service that answers every request with the one status,
// error code and headers given, and counts the requests.
type answering struct {
	mu       sync.Mutex
	requests int
}

func (a *answering) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests
}

// serve returns the endpoint of a server answering status with the x-ms-error-code code and
// the extra headers.
func (a *answering) serve(t *testing.T, status int, code string, headers map[string]string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // read the upload, as the service does
		a.mu.Lock()
		a.requests++
		a.mu.Unlock()
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		if code != "" {
			w.Header().Set("x-ms-error-code", code)
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		if r.Method != http.MethodHead && code != "" {
			_, _ = fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>test answer</Message></Error>`, code)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/testacct"
}

func keyFile(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(f, []byte(fakeKey), 0o600))
	return f
}

func fakeConfig(t *testing.T, endpoint string) azure.Config {
	return azure.Config{
		Account:        "testacct",
		Container:      "blobs",
		Endpoint:       endpoint,
		AccountKeyFile: keyFile(t),
		BlockSize:      azure.MinBlockSize,
		Concurrency:    2,
	}
}

// calls runs every backend operation on the object ns/x and returns their errors by name;
// staged adds an upload large enough to stage blocks.
func calls(t *testing.T, b *azure.Backend, staged bool) map[string]error {
	t.Helper()
	ctx := t.Context()
	var buf bytes.Buffer
	errs := map[string]error{}
	_, errs["stat"] = b.Stat(ctx, "ns", "x")
	errs["download"] = b.Download(ctx, "ns", "x", &buf)
	require.Zero(t, buf.Len(), "download wrote an error answer to w")
	errs["upload"] = b.Upload(ctx, "ns", "x", strings.NewReader("data"), 4)
	if staged {
		errs["staged upload"] = b.Upload(ctx, "ns", "x", bytes.NewReader(make([]byte, azure.MinBlockSize+1)), -1)
	}
	_, errs["list"] = b.List(ctx, "ns", "")
	errs["delete"] = b.Delete(ctx, "ns", "x")
	errs["check"] = b.Check(ctx)
	return errs
}

func TestThrottled(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		status  int
		code    string
		headers map[string]string
		want    time.Duration
	}{
		{"503 ServerBusy, Retry-After seconds", http.StatusServiceUnavailable, "ServerBusy", map[string]string{"Retry-After": "7"}, 7 * time.Second},
		{"503 ServerBusy, no Retry-After", http.StatusServiceUnavailable, "ServerBusy", nil, 0},
		{"429, x-ms-retry-after-ms", http.StatusTooManyRequests, "", map[string]string{"x-ms-retry-after-ms": "1500"}, 1500 * time.Millisecond},
		{"503 without a code but with Retry-After", http.StatusServiceUnavailable, "", map[string]string{"Retry-After": "3"}, 3 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var a answering
			b := newBackend(t, fakeConfig(t, a.serve(t, c.status, c.code, c.headers)))
			// Not the staged upload: its Put Block is retried on throttling, for as long as the
			// Retry-After says (TestStageBlockRetry).
			errs := calls(t, b, false)
			// One request each: a throttle reaches the caller at once, for the shared retry
			// policy, not after the SDK's retries.
			require.Equal(t, len(errs), a.count(), "requests")
			for op, err := range errs {
				var th *backend.Throttled
				require.ErrorAs(t, err, &th, op)
				require.ErrorIs(t, err, backend.ErrThrottled, op)
				require.Equal(t, c.want, th.RetryAfter, op)
				require.NotErrorIs(t, err, backend.ErrNotFound, op)
				require.ErrorContains(t, err, "azure: ", op)
			}
		})
	}
}

// TestStageBlockRetry: a staged block that is throttled is sent again (it is in memory), and
// the upload succeeds.
func TestStageBlockRetry(t *testing.T) {
	t.Parallel()
	var (
		mu                    sync.Mutex
		blocks, throttled     int
		commits               int
		throttledOnce         bool
		stagedBytes           int
		committedList, method string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Query().Get("comp") {
		case "block":
			if !throttledOnce {
				throttledOnce = true
				throttled++
				w.Header().Set("x-ms-error-code", "ServerBusy")
				w.Header().Set("x-ms-retry-after-ms", "10")
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			blocks++
			stagedBytes += len(body)
			w.WriteHeader(http.StatusCreated)
		case "blocklist":
			commits++
			committedList = string(body)
			w.WriteHeader(http.StatusCreated)
		default:
			method = r.Method + " " + r.URL.RawQuery
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, fakeConfig(t, srv.URL+"/testacct"))
	size := 2*azure.MinBlockSize + 10
	require.NoError(t, b.Upload(t.Context(), "ns", "x", bytes.NewReader(make([]byte, size)), int64(size)))
	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, method, "unexpected request")
	require.Equal(t, 1, throttled)
	require.Equal(t, 3, blocks)
	require.Equal(t, size, stagedBytes)
	require.Equal(t, 1, commits)
	require.Equal(t, 3, strings.Count(committedList, "<Latest>"), "commit: %s", committedList)
}

// TestCommitDiscarded: a commit whose blocks another upload's commit discarded says so.
func TestCommitDiscarded(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Query().Get("comp") == "blocklist" {
			w.Header().Set("x-ms-error-code", "InvalidBlockList")
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, fakeConfig(t, srv.URL+"/testacct"))
	err := b.Upload(t.Context(), "ns", "x", bytes.NewReader(make([]byte, azure.MinBlockSize+1)), -1)
	require.ErrorContains(t, err, "azure: upload (commit block list) ns/x: ")
	require.ErrorContains(t, err, "HTTP 400 InvalidBlockList")
	require.ErrorContains(t, err, "another upload of the same blob finished first")
	require.NotErrorIs(t, err, backend.ErrThrottled)
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	var a answering
	b := newBackend(t, fakeConfig(t, a.serve(t, http.StatusNotFound, "BlobNotFound", nil)))
	ctx := t.Context()
	_, err := b.Stat(ctx, "ns", "x")
	require.ErrorIs(t, err, backend.ErrNotFound)
	require.ErrorContains(t, err, "azure: stat ns/x: ")
	var buf bytes.Buffer
	err = b.Download(ctx, "ns", "x", &buf)
	require.ErrorIs(t, err, backend.ErrNotFound)
	require.Zero(t, buf.Len())
	require.ErrorIs(t, b.Delete(ctx, "ns", "x"), backend.ErrNotFound)
	require.NotErrorIs(t, err, azure.ErrNoContainer)
}

func TestContainerNotFound(t *testing.T) {
	t.Parallel()
	var a answering
	b := newBackend(t, fakeConfig(t, a.serve(t, http.StatusNotFound, "ContainerNotFound", nil)))
	for op, err := range calls(t, b, true) {
		require.ErrorIs(t, err, azure.ErrNoContainer, op)
		require.NotErrorIs(t, err, backend.ErrNotFound, op)
		require.ErrorContains(t, err, "container blobs in account testacct", op)
	}
}

// TestAccessDenied: a refused SAS is access denied, naming the account and the container, and
// the error never shows the SAS signature.
func TestAccessDenied(t *testing.T) {
	t.Parallel()
	var a answering
	endpoint := a.serve(t, http.StatusForbidden, "AuthenticationFailed", nil)
	const sig = "c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
	sasFile := filepath.Join(t.TempDir(), "sas")
	require.NoError(t, os.WriteFile(sasFile, []byte("sv=2021-08-06&sr=c&sp=rl&se=2030-01-01T00%3A00%3A00Z&sig="+sig), 0o600))
	cfg := fakeConfig(t, endpoint)
	cfg.AccountKeyFile, cfg.SASTokenFile = "", sasFile
	b := newBackend(t, cfg)
	for op, err := range calls(t, b, true) {
		require.ErrorIs(t, err, azure.ErrAccessDenied, op)
		require.NotErrorIs(t, err, backend.ErrNotFound, op)
		require.ErrorContains(t, err, "container blobs of account testacct", op)
		require.ErrorContains(t, err, "AuthenticationFailed", op)
		require.NotContains(t, err.Error(), "c2VjcmV0", op)
	}
}

// TestTruncatedDownload: a body shorter than its Content-Length is an error, never success.
func TestTruncatedDownload(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(bytes.Repeat([]byte("x"), 50)) // the server closes the connection short
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, fakeConfig(t, srv.URL+"/testacct"))
	var buf bytes.Buffer
	err := b.Download(t.Context(), "ns", "x", &buf)
	require.Error(t, err)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.NotErrorIs(t, err, backend.ErrNotFound)
	require.ErrorContains(t, err, "azure: download ns/x")
}
