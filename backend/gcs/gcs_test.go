package gcs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/backendtest"
	"github.com/krakenctl/krakenctl/backend/gcs"
)

func newBackend(t *testing.T, cfg gcs.Config) *gcs.Backend {
	t.Helper()
	b, err := gcs.New(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

func TestConfigValidate(t *testing.T) {
	valid := func() gcs.Config {
		c := gcs.Config{Bucket: "images", Prefix: "prod/kraken", Endpoint: "http://127.0.0.1:4443", CredentialsFile: "/etc/krakenctl/gcs.json"}
		c.Defaults()
		return c
	}
	require.NoError(t, valid().Validate())
	require.Equal(t, gcs.DefaultChunkSize, valid().ChunkSize)
	cases := []struct {
		name string
		edit func(*gcs.Config)
		want string
	}{
		{"no bucket", func(c *gcs.Config) { c.Bucket = "" }, "bucket: must be set"},
		{"bucket with slash", func(c *gcs.Config) { c.Bucket = "a/b" }, "bucket: \"a/b\" is not a GCS bucket name"},
		{"bucket upper case", func(c *gcs.Config) { c.Bucket = "Images" }, "bucket: \"Images\" is not a GCS bucket name"},
		{"bucket too short", func(c *gcs.Config) { c.Bucket = "ab" }, "bucket: \"ab\""},
		{"bucket too long", func(c *gcs.Config) { c.Bucket = strings.Repeat("a", 64) }, "bucket: "},
		{"prefix leading slash", func(c *gcs.Config) { c.Prefix = "/x" }, "prefix: \"/x\" has an empty"},
		{"prefix trailing slash", func(c *gcs.Config) { c.Prefix = "x/" }, "prefix: \"x/\""},
		{"prefix dotdot", func(c *gcs.Config) { c.Prefix = "a/../b" }, "prefix: \"a/../b\""},
		{"endpoint not a URL", func(c *gcs.Config) { c.Endpoint = "127.0.0.1:4443" }, "endpoint: \"127.0.0.1:4443\" must be an http or https URL"},
		{"endpoint ftp", func(c *gcs.Config) { c.Endpoint = "ftp://h" }, "endpoint: "},
		{"endpoint with user", func(c *gcs.Config) { c.Endpoint = "http://u:p@h" }, "endpoint: "},
		{"credentials_file spaces", func(c *gcs.Config) { c.CredentialsFile = " /x.json" }, "credentials_file: "},
		{"chunk_size small", func(c *gcs.Config) { c.ChunkSize = 1 << 10 }, "chunk_size: 1024 bytes must be a multiple of 262144"},
		{"chunk_size unaligned", func(c *gcs.Config) { c.ChunkSize = gcs.MinChunkSize + 1 }, "chunk_size: "},
		{"chunk_size huge", func(c *gcs.Config) { c.ChunkSize = 2 << 30 }, "chunk_size: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.edit(&c)
			err := c.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			_, err = gcs.New(t.Context(), c)
			require.ErrorContains(t, err, "gcs backend: "+tc.want)
		})
	}
}

func TestCredentialsFileMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.json")
	_, err := gcs.New(t.Context(), gcs.Config{Bucket: "images", Endpoint: "http://127.0.0.1:1", CredentialsFile: missing})
	require.ErrorContains(t, err, "gcs backend: bucket images: credentials_file: open "+missing)
}

func TestCredentialsFileNotAServiceAccount(t *testing.T) {
	// An external-account file can make the client run a program or fetch a URL; only a
	// service-account key is accepted from credentials_file.
	f := filepath.Join(t.TempDir(), "ext.json")
	require.NoError(t, os.WriteFile(f, []byte(`{"type":"external_account","audience":"x","subject_token_type":"y","token_url":"http://127.0.0.1:1/token","credential_source":{"file":"/etc/hostname"}}`), 0o600))
	_, err := gcs.New(t.Context(), gcs.Config{Bucket: "images", Endpoint: "http://127.0.0.1:1", CredentialsFile: f})
	require.ErrorContains(t, err, "gcs backend: bucket images: credentials_file: "+f+`: type "external_account" is not a service-account key`)

	require.NoError(t, os.WriteFile(f, []byte("not json"), 0o600))
	_, err = gcs.New(t.Context(), gcs.Config{Bucket: "images", Endpoint: "http://127.0.0.1:1", CredentialsFile: f})
	require.ErrorContains(t, err, "credentials_file: "+f+": not a service-account key")
}

func TestApplicationDefaultCredentialsFromEnvironment(t *testing.T) {
	// Without credentials_file or endpoint, New takes the application default credentials;
	// GOOGLE_APPLICATION_CREDENTIALS is the first place they are looked for (the next ones,
	// gcloud's file and the metadata server, are not reachable from a test).
	key := serviceAccountFile(t, "http://127.0.0.1:1/token")
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", key)
	newBackend(t, gcs.Config{Bucket: "images"})

	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "missing.json"))
	_, err := gcs.New(t.Context(), gcs.Config{Bucket: "images"})
	require.ErrorContains(t, err, "gcs backend: bucket images: credentials: application default credentials")
}

// serviceAccountFile writes a service-account key, with a fresh RSA key, whose token endpoint
// is tokenURL, and returns its path.
func serviceAccountFile(t *testing.T, tokenURL string) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	sa := map[string]string{
		"type":           "service_account",
		"project_id":     "krakenctl-test",
		"private_key_id": "test-key",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "krakenctl@krakenctl-test.iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      tokenURL,
	}
	data, err := json.Marshal(sa)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "sa.json")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path
}

// fakeAPI is an httptest server answering the GCS JSON API with whatever answer is set,
// counting requests.
type fakeAPI struct {
	srv      *httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	answer   func(w http.ResponseWriter, r *http.Request)
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		f.mu.Lock()
		answer := f.answer
		f.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) set(answer func(w http.ResponseWriter, r *http.Request)) {
	f.mu.Lock()
	f.answer = answer
	f.mu.Unlock()
	f.requests.Store(0)
}

// apiError answers with a GCS JSON API error.
func apiError(code int, reason string, header map[string]string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
			"code": code, "message": reason + " from the test server",
			"errors": []map[string]string{{"reason": reason, "message": reason, "domain": "global"}},
		}})
	}
}

// ops runs every backend call against b and returns their errors by name.
func ops(t *testing.T, b *gcs.Backend) map[string]error {
	ctx := t.Context()
	_, statErr := b.Stat(ctx, "library/ubuntu", "abc")
	_, listErr := b.List(ctx, "library/ubuntu", "")
	return map[string]error{
		"stat":     statErr,
		"download": b.Download(ctx, "library/ubuntu", "abc", io.Discard),
		"upload":   b.Upload(ctx, "library/ubuntu", "abc", strings.NewReader("hello"), 5),
		"list":     listErr,
		"delete":   b.Delete(ctx, "library/ubuntu", "abc"),
	}
}

func TestErrorMapping(t *testing.T) {
	api := newFakeAPI(t)
	b := newBackend(t, gcs.Config{Bucket: "images", Endpoint: api.srv.URL})

	t.Run("429 is throttled, with Retry-After, not retried by the client", func(t *testing.T) {
		api.set(apiError(http.StatusTooManyRequests, "rateLimitExceeded", map[string]string{"Retry-After": "7"}))
		for op, err := range ops(t, b) {
			var th *backend.Throttled
			require.ErrorAs(t, err, &th, op)
			require.ErrorIs(t, err, backend.ErrThrottled, op)
			require.Equal(t, 7*time.Second, th.RetryAfter, op)
			require.ErrorContains(t, err, "gcs: ", op)
			require.ErrorContains(t, err, "library/ubuntu", op)
			require.ErrorContains(t, err, "bucket images", op)
		}
		require.EqualValues(t, 5, api.requests.Load(), "one request per call: throttling is left to the caller's retry policy")
	})
	t.Run("503 rateLimitExceeded is throttled", func(t *testing.T) {
		api.set(apiError(http.StatusServiceUnavailable, "rateLimitExceeded", nil))
		_, err := b.Stat(t.Context(), "library/ubuntu", "abc")
		var th *backend.Throttled
		require.ErrorAs(t, err, &th)
		require.Zero(t, th.RetryAfter)
		require.EqualValues(t, 1, api.requests.Load())
	})
	t.Run("429 with an HTTP-date Retry-After", func(t *testing.T) {
		at := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
		api.set(apiError(http.StatusTooManyRequests, "rateLimitExceeded", map[string]string{"Retry-After": at}))
		_, err := b.Stat(t.Context(), "library/ubuntu", "abc")
		var th *backend.Throttled
		require.ErrorAs(t, err, &th)
		require.Greater(t, th.RetryAfter, 60*time.Second)
		require.LessOrEqual(t, th.RetryAfter, 90*time.Second)
	})
	t.Run("a hostile or malformed Retry-After", func(t *testing.T) {
		for value, want := range map[string]time.Duration{
			"99999999999":                   24 * time.Hour, // capped
			"-5":                            0,
			"soon":                          0,
			"Mon, 01 Jan 1990 00:00:00 GMT": 0, // in the past
		} {
			api.set(apiError(http.StatusTooManyRequests, "rateLimitExceeded", map[string]string{"Retry-After": value}))
			_, err := b.Stat(t.Context(), "library/ubuntu", "abc")
			var th *backend.Throttled
			require.ErrorAs(t, err, &th, value)
			require.Equal(t, want, th.RetryAfter, value)
		}
	})
	t.Run("404 is not found", func(t *testing.T) {
		notFound := apiError(http.StatusNotFound, "notFound", nil)
		api.set(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/b/images") {
				// The bucket exists: the object does not.
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"name":"images"}`))
				return
			}
			notFound(w, r)
		})
		for op, err := range ops(t, b) {
			if op == "upload" {
				// A 404 to an upload is no object's absence.
				require.NotErrorIs(t, err, backend.ErrNotFound)
				require.ErrorContains(t, err, "gcs: upload library/ubuntu/abc: bucket images does not exist")
				continue
			}
			if op == "list" {
				// A missing bucket: the listing fails, and says so.
				require.ErrorContains(t, err, "bucket images does not exist")
				continue
			}
			require.ErrorIs(t, err, backend.ErrNotFound, op)
			require.ErrorContains(t, err, "gcs: "+op+" library/ubuntu/abc", op)
		}
	})
	for _, code := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		t.Run(fmt.Sprintf("%d is permission denied", code), func(t *testing.T) {
			api.set(apiError(code, "forbidden", nil))
			for op, err := range ops(t, b) {
				require.ErrorIs(t, err, gcs.ErrPermissionDenied, op)
				require.NotErrorIs(t, err, backend.ErrNotFound, op)
				require.ErrorContains(t, err, "bucket images: permission denied", op)
				require.ErrorContains(t, err, "library/ubuntu", op)
			}
		})
	}
	t.Run("503 without rate limiting is an outage, retried a few times", func(t *testing.T) {
		if testing.Short() {
			t.Skip("the client backs off between attempts (seconds)")
		}
		api.set(apiError(http.StatusServiceUnavailable, "backendError", nil))
		_, err := b.Stat(t.Context(), "library/ubuntu", "abc")
		require.Error(t, err)
		require.NotErrorIs(t, err, backend.ErrThrottled)
		require.NotErrorIs(t, err, backend.ErrNotFound)
		require.EqualValues(t, 3, api.requests.Load())
	})
}

func TestBadCredentialsAreClear(t *testing.T) {
	// The token endpoint refuses the service account's key: every call fails naming the bucket
	// and the credentials, and no request reaches the API.
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`)
	}))
	t.Cleanup(tokens.Close)
	api := newFakeAPI(t)
	api.set(apiError(http.StatusInternalServerError, "unexpected", nil))
	b := newBackend(t, gcs.Config{Bucket: "images", Endpoint: api.srv.URL, CredentialsFile: serviceAccountFile(t, tokens.URL+"/token")})
	for op, err := range ops(t, b) {
		require.ErrorIs(t, err, gcs.ErrPermissionDenied, op)
		require.ErrorContains(t, err, "bucket images: permission denied: credentials could not be used", op)
		require.ErrorContains(t, err, "invalid_grant", op)
	}
	require.Zero(t, api.requests.Load())
}

func TestDownloadTruncated(t *testing.T) {
	// The server promises 1000 bytes and sends 10: Download must fail, whatever it wrote.
	api := newFakeAPI(t)
	api.set(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "0123456789")
	})
	b := newBackend(t, gcs.Config{Bucket: "images", Endpoint: api.srv.URL})
	var buf bytes.Buffer
	err := b.Download(t.Context(), "library/ubuntu", "abc", &buf)
	require.Error(t, err)
	require.ErrorContains(t, err, "gcs: download library/ubuntu/abc")
}

// Tests against fake-gcs-server as a separate process. CI (scripts/test.sh) starts it with
// scripts/gcs-server.sh, exports GCS_ENDPOINT and GCS_BUCKET and sets
// KRAKENCTL_REQUIRE_REAL_SERVERS=1, which turns the skip into a failure.

func requireServer(t *testing.T) (endpoint, bucket string) {
	t.Helper()
	endpoint, bucket = os.Getenv("GCS_ENDPOINT"), os.Getenv("GCS_BUCKET")
	if endpoint == "" {
		msg := "GCS_ENDPOINT is not set; start fake-gcs-server with `eval \"$(scripts/gcs-server.sh start 19300 krakenctl-test)\"` " +
			"(it exports GCS_ENDPOINT and GCS_BUCKET)"
		if os.Getenv("KRAKENCTL_REQUIRE_REAL_SERVERS") == "1" {
			t.Fatal(msg + " (KRAKENCTL_REQUIRE_REAL_SERVERS=1 forbids skipping)")
		}
		t.Skip(msg)
	}
	if bucket == "" {
		t.Fatal("GCS_ENDPOINT is set but GCS_BUCKET is not")
	}
	return endpoint, bucket
}

func randomPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "krakenctl-test-" + hex.EncodeToString(b[:])
}

func TestConformanceServer(t *testing.T) {
	endpoint, bucket := requireServer(t)
	cfg := gcs.Config{
		Bucket:   bucket,
		Endpoint: endpoint,
		Prefix:   randomPrefix(),
		// The smallest chunk, so the suite's large object (12 MiB) takes the resumable path
		// in many chunks, and its small ones the single-request path.
		ChunkSize: gcs.MinChunkSize,
	}
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b := newBackend(t, cfg)
		require.NoError(t, b.Check(t.Context()))
		return b
	})
}

func TestMissingBucketServer(t *testing.T) {
	endpoint, _ := requireServer(t)
	b := newBackend(t, gcs.Config{Bucket: "krakenctl-no-such-bucket-" + strings.TrimPrefix(randomPrefix(), "krakenctl-test-"), Endpoint: endpoint})
	require.ErrorContains(t, b.Check(t.Context()), "does not exist")
	// Reads of a missing bucket's objects say so, not "not found" (which an origin would take
	// for a blob nobody has).
	_, err := b.Stat(t.Context(), "library/ubuntu", "abc")
	require.ErrorContains(t, err, "does not exist")
	require.NotErrorIs(t, err, backend.ErrNotFound)
	err = b.Download(t.Context(), "library/ubuntu", "abc", io.Discard)
	require.ErrorContains(t, err, "does not exist")
	require.NotErrorIs(t, err, backend.ErrNotFound)
}

// recordingProxy forwards to target and records each request's method and uploadType (and
// "chunk" for a request to a resumable session),
// rewriting resumable sessions' Location so their chunks come through it too.
type recordingProxy struct {
	mu   sync.Mutex
	reqs []string
}

func (p *recordingProxy) start(t *testing.T, target string) string {
	u, err := url.Parse(target)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(u)
	var self string
	rp.ModifyResponse = func(res *http.Response) error {
		if loc := res.Header.Get("Location"); loc != "" {
			res.Header.Set("Location", strings.Replace(loc, strings.TrimSuffix(target, "/"), self, 1))
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		kind := r.Method + " " + r.URL.Query().Get("uploadType")
		if r.URL.Query().Get("upload_id") != "" {
			kind += " chunk"
		}
		p.reqs = append(p.reqs, kind)
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	self = srv.URL
	return srv.URL
}

func (p *recordingProxy) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.reqs
	p.reqs = nil
	return r
}

func count(reqs []string, want string) int {
	n := 0
	for _, r := range reqs {
		if r == want {
			n++
		}
	}
	return n
}

func TestResumableUploadServer(t *testing.T) {
	endpoint, bucket := requireServer(t)
	var proxy recordingProxy
	b := newBackend(t, gcs.Config{Bucket: bucket, Endpoint: proxy.start(t, endpoint), Prefix: randomPrefix(), ChunkSize: gcs.MinChunkSize})
	ctx := t.Context()
	const ns = "library/ubuntu"

	small := bytes.Repeat([]byte("s"), gcs.MinChunkSize) // exactly one chunk: one request
	require.NoError(t, b.Upload(ctx, ns, "small", bytes.NewReader(small), int64(len(small))))
	reqs := proxy.take()
	require.Equal(t, []string{"POST multipart"}, reqs)

	large := make([]byte, 3*gcs.MinChunkSize+12345)
	_, _ = rand.Read(large)
	require.NoError(t, b.Upload(ctx, ns, "large", bytes.NewReader(large), int64(len(large))))
	reqs = proxy.take()
	require.Equal(t, 1, count(reqs, "POST resumable"), "%v", reqs)
	require.Equal(t, 4, count(reqs, "POST resumable chunk")+count(reqs, "PUT resumable chunk"), "four chunks (three full, one short): %v", reqs)

	var got bytes.Buffer
	require.NoError(t, b.Download(ctx, ns, "large", &got))
	require.True(t, bytes.Equal(large, got.Bytes()), "downloaded %d bytes, want the %d uploaded", got.Len(), len(large))
	info, err := b.Stat(ctx, ns, "large")
	require.NoError(t, err)
	require.EqualValues(t, len(large), info.Size)
	require.WithinDuration(t, time.Now(), info.ModTime, time.Hour)

	// A large upload whose reader ends early, after several chunks went out, and one whose
	// reader fails: both fail and leave the object as it was.
	other := bytes.Repeat([]byte("x"), len(large))
	err = b.Upload(ctx, ns, "large", bytes.NewReader(other[:len(other)-1]), int64(len(other)))
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	reqs = proxy.take()
	require.Positive(t, count(reqs, "POST resumable chunk")+count(reqs, "PUT resumable chunk"), "chunks were sent before the reader ran out: %v", reqs)
	errBroken := errors.New("disk on fire")
	err = b.Upload(ctx, ns, "large", io.MultiReader(bytes.NewReader(other[:len(other)-100]), iotestErr{errBroken}), -1)
	require.ErrorIs(t, err, errBroken)
	got.Reset()
	require.NoError(t, b.Download(ctx, ns, "large", &got))
	require.True(t, bytes.Equal(large, got.Bytes()), "the failed uploads replaced the object")

	require.NoError(t, b.Delete(ctx, ns, "large"))
	require.NoError(t, b.Delete(ctx, ns, "small"))
	require.ErrorIs(t, b.Delete(ctx, ns, "small"), backend.ErrNotFound)
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

func TestCancelledUploadLeavesObjectServer(t *testing.T) {
	endpoint, bucket := requireServer(t)
	b := newBackend(t, gcs.Config{Bucket: bucket, Endpoint: endpoint, Prefix: randomPrefix(), ChunkSize: gcs.MinChunkSize})
	const ns = "library/ubuntu"
	old := []byte("the previous object")
	require.NoError(t, b.Upload(t.Context(), ns, "obj", bytes.NewReader(old), int64(len(old))))

	ctx, cancel := context.WithCancel(t.Context())
	data := bytes.Repeat([]byte("n"), 3*gcs.MinChunkSize)
	r := &cancelAfter{r: bytes.NewReader(data), n: 2 * gcs.MinChunkSize, cancel: cancel}
	err := b.Upload(ctx, ns, "obj", r, int64(len(data)))
	require.ErrorIs(t, err, context.Canceled)
	var got bytes.Buffer
	require.NoError(t, b.Download(t.Context(), ns, "obj", &got))
	require.Equal(t, old, got.Bytes())
}

// cancelAfter reads r and calls cancel once n bytes have been read.
type cancelAfter struct {
	r      io.Reader
	n      int
	read   int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.read += k
	if c.read >= c.n {
		c.cancel()
	}
	return k, err
}
