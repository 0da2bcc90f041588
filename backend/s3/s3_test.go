package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/backendtest"
	"github.com/krakenctl/krakenctl/backend/s3"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fake is an in-process S3 server (gofakes3) on loopback.
type fake struct {
	srv     *httptest.Server
	mem     *s3mem.Backend
	buckets atomic.Int64
}

func newFake(t *testing.T) *fake {
	t.Helper()
	mem := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(mem).Server())
	t.Cleanup(srv.Close)
	return &fake{srv: srv, mem: mem}
}

// bucket creates a fresh bucket and returns its name.
func (f *fake) bucket(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("bucket-%d", f.buckets.Add(1))
	require.NoError(t, f.mem.CreateBucket(name))
	return name
}

func (f *fake) config(bucket string) s3.Config {
	return s3.Config{
		Bucket:          bucket,
		Region:          "us-east-1",
		Endpoint:        f.srv.URL,
		PathStyle:       true,
		AccessKeyID:     "AKIAFAKE",
		SecretAccessKey: "fake-secret",
		PartSize:        s3.MinPartSize,
		Concurrency:     2,
	}
}

func newBackend(t *testing.T, cfg s3.Config) *s3.Backend {
	t.Helper()
	b, err := s3.New(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

func TestConformanceFake(t *testing.T) {
	f := newFake(t)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return newBackend(t, f.config(f.bucket(t)))
	})
}

func TestConformanceFakeWithPrefix(t *testing.T) {
	f := newFake(t)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		cfg := f.config(f.bucket(t))
		cfg.Prefix = "deploy/one"
		return newBackend(t, cfg)
	})
}

// rawKeys lists every key in the bucket, bypassing the backend.
func rawKeys(ctx context.Context, t *testing.T, client *awss3.Client, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	p := awss3.NewListObjectsV2Paginator(client, &awss3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		require.NoError(t, err)
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

func rawClient(cfg s3.Config) *awss3.Client {
	return awss3.New(awss3.Options{
		Region:       cfg.Region,
		BaseEndpoint: aws.String(cfg.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		HTTPClient:   &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
}

func TestKeyLayout(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	cfg := f.config(f.bucket(t))
	cfg.Prefix = "deploy/one"
	b := newBackend(t, cfg)
	ctx := t.Context()
	require.NoError(t, b.Upload(ctx, "library", "ubuntu", strings.NewReader("a"), 1))
	require.NoError(t, b.Upload(ctx, "library/ubuntu", "abc", strings.NewReader("b"), 1))
	require.Equal(t, []string{"deploy/one/library/_objects/ubuntu", "deploy/one/library/ubuntu/_objects/abc"},
		rawKeys(ctx, t, rawClient(cfg), cfg.Bucket, ""))

	// Keys outside the layout, or with names no object can have, are not listed.
	raw := rawClient(cfg)
	for _, k := range []string{"deploy/one/library/_objects/sub/x", "deploy/one/library/_objects/a~b", "deploy/one/library/stray"} {
		_, err := raw.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String(cfg.Bucket), Key: aws.String(k), Body: strings.NewReader("x")})
		require.NoError(t, err)
	}
	names, err := b.List(ctx, "library", "")
	require.NoError(t, err)
	require.Equal(t, []string{"ubuntu"}, names)
}

// counter counts the multipart requests passing through to the fake.
type counter struct {
	mu                     sync.Mutex
	creates, parts, aborts int
	completes, singlePuts  int
}

func (c *counter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		c.mu.Lock()
		switch {
		case r.Method == http.MethodPost && q.Has("uploads"):
			c.creates++
		case r.Method == http.MethodPut && q.Has("partNumber"):
			c.parts++
		case r.Method == http.MethodDelete && q.Has("uploadId"):
			c.aborts++
		case r.Method == http.MethodPost && q.Has("uploadId"):
			c.completes++
		case r.Method == http.MethodPut:
			c.singlePuts++
		}
		c.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func TestMultipart(t *testing.T) {
	t.Parallel()
	mem := s3mem.New()
	require.NoError(t, mem.CreateBucket("b"))
	var c counter
	srv := httptest.NewServer(c.wrap(gofakes3.New(mem).Server()))
	t.Cleanup(srv.Close)
	cfg := (&fake{srv: srv}).config("b")
	b := newBackend(t, cfg)
	ctx := t.Context()

	data := bytes.Repeat([]byte("0123456789abcdef"), (11<<20)/16)
	require.NoError(t, b.Upload(ctx, "ns", "big", bytes.NewReader(data), int64(len(data))))
	require.Equal(t, counter{creates: 1, parts: 3, completes: 1}, c.snapshot())

	c.reset()
	require.NoError(t, b.Upload(ctx, "ns", "small", bytes.NewReader(data[:1<<20]), 1<<20))
	require.Equal(t, counter{singlePuts: 1}, c.snapshot())

	// A reader failing after two parts: the multipart upload is aborted.
	c.reset()
	err := b.Upload(ctx, "ns", "big", io.MultiReader(bytes.NewReader(data[:10<<20+1]), iotest.ErrReader(errors.New("boom"))), -1)
	require.ErrorContains(t, err, "boom")
	got := c.snapshot()
	require.Equal(t, 1, got.creates)
	require.Equal(t, 1, got.aborts)
	require.Zero(t, got.completes)
	var buf bytes.Buffer
	require.NoError(t, b.Download(ctx, "ns", "big", &buf))
	require.True(t, bytes.Equal(data, buf.Bytes()), "the previous object must survive a failed upload")
}

func (c *counter) snapshot() counter {
	c.mu.Lock()
	defer c.mu.Unlock()
	return counter{creates: c.creates, parts: c.parts, aborts: c.aborts, completes: c.completes, singlePuts: c.singlePuts}
}

func (c *counter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.creates, c.parts, c.aborts, c.completes, c.singlePuts = 0, 0, 0, 0, 0
}

func TestClose(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	b := newBackend(t, f.config(f.bucket(t)))
	ctx := t.Context()
	require.NoError(t, b.Upload(ctx, "ns", "x", strings.NewReader("x"), 1))
	require.NoError(t, b.Close())
	_, err := b.Stat(ctx, "ns", "x")
	require.Error(t, err)
	require.NotErrorIs(t, err, backend.ErrNotFound)
}

func TestMissingBucketIsNotNotFound(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	b := newBackend(t, f.config("no-such-bucket"))
	ctx := t.Context()
	var buf bytes.Buffer
	err := b.Download(ctx, "ns", "x", &buf)
	require.ErrorContains(t, err, "no-such-bucket does not exist")
	require.NotErrorIs(t, err, backend.ErrNotFound)
	_, err = b.List(ctx, "ns", "")
	require.ErrorContains(t, err, "does not exist")
	require.Error(t, b.Upload(ctx, "ns", "x", strings.NewReader("x"), 1))
	require.ErrorContains(t, b.Check(ctx), "does not exist")

	ok := newBackend(t, f.config(f.bucket(t)))
	require.NoError(t, ok.Check(ctx))
}

// TestAccessDeniedInProcess checks the mapping of 403 answers against a server that refuses
// every request the way S3 does when the signature is wrong.
func TestAccessDeniedInProcess(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		if r.Method != http.MethodHead {
			_, _ = fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code>`+
				`<Message>The request signature we calculated does not match the signature you provided.</Message></Error>`)
		}
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, s3.Config{
		Bucket: "b", Region: "us-east-1", Endpoint: srv.URL, PathStyle: true,
		AccessKeyID: "AKIA", SecretAccessKey: "wrong",
	})
	requireAccessDenied(t, b)
}

func requireAccessDenied(t *testing.T, b *s3.Backend) {
	t.Helper()
	ctx := t.Context()
	_, err := b.Stat(ctx, "ns", "x")
	require.ErrorIs(t, err, s3.ErrAccessDenied)
	require.NotErrorIs(t, err, backend.ErrNotFound)
	var buf bytes.Buffer
	err = b.Download(ctx, "ns", "x", &buf)
	require.ErrorIs(t, err, s3.ErrAccessDenied)
	require.NotErrorIs(t, err, backend.ErrNotFound)
	require.Zero(t, buf.Len())
	require.ErrorIs(t, b.Upload(ctx, "ns", "x", strings.NewReader("x"), 1), s3.ErrAccessDenied)
	_, err = b.List(ctx, "ns", "")
	require.ErrorIs(t, err, s3.ErrAccessDenied)
	require.ErrorIs(t, b.Check(ctx), s3.ErrAccessDenied)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() s3.Config {
		c := s3.Config{Bucket: "b"}
		c.Defaults()
		return c
	}
	require.NoError(t, valid().Validate())
	cases := []struct {
		key    string
		modify func(c *s3.Config)
	}{
		{"bucket", func(c *s3.Config) { c.Bucket = "" }},
		{"bucket", func(c *s3.Config) { c.Bucket = "a/b" }},
		{"endpoint", func(c *s3.Config) { c.Endpoint = "127.0.0.1:9000" }},
		{"endpoint", func(c *s3.Config) { c.Endpoint = "ftp://host" }},
		{"endpoint", func(c *s3.Config) { c.Endpoint = "http://" }},
		{"secret_access_key", func(c *s3.Config) { c.AccessKeyID = "id" }},
		{"secret_access_key", func(c *s3.Config) { c.SecretAccessKey = "secret" }},
		{"session_token", func(c *s3.Config) { c.SessionToken = "token" }},
		{"prefix", func(c *s3.Config) { c.Prefix = "/abs" }},
		{"prefix", func(c *s3.Config) { c.Prefix = "trailing/" }},
		{"prefix", func(c *s3.Config) { c.Prefix = "a//b" }},
		{"prefix", func(c *s3.Config) { c.Prefix = "a/../b" }},
		{"part_size", func(c *s3.Config) { c.PartSize = s3.MinPartSize - 1 }},
		{"part_size", func(c *s3.Config) { c.PartSize = s3.MaxPartSize + 1 }},
		{"concurrency", func(c *s3.Config) { c.Concurrency = -1 }},
		{"concurrency", func(c *s3.Config) { c.Concurrency = 65 }},
	}
	for _, c := range cases {
		cfg := valid()
		c.modify(&cfg)
		err := cfg.Validate()
		require.Error(t, err, "%+v", cfg)
		require.True(t, strings.HasPrefix(err.Error(), c.key+":"), "error %q should name key %s", err, c.key)
	}
	ok := valid()
	ok.Endpoint, ok.Prefix, ok.AccessKeyID, ok.SecretAccessKey, ok.SessionToken = "https://s3.example:9000", "a/b.c", "id", "secret", "tok"
	require.NoError(t, ok.Validate())

	var d s3.Config
	d.Defaults()
	require.Equal(t, int64(s3.DefaultPartSize), d.PartSize)
	require.Equal(t, s3.DefaultConcurrency, d.Concurrency)

	_, err := s3.New(t.Context(), s3.Config{})
	require.ErrorContains(t, err, "bucket: must be set")
}

func TestRegionRequired(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_PROFILE", "")
	_, err := s3.New(t.Context(), s3.Config{Bucket: "b", AccessKeyID: "a", SecretAccessKey: "b"})
	require.ErrorContains(t, err, "region: must be set")
}

// Tests against a real S3-compatible server, configured the way the AWS tools are. CI
// (scripts/test.sh) starts SeaweedFS with scripts/s3-server.sh, exports these variables and sets
// KRAKENCTL_REQUIRE_REAL_SERVERS=1, which turns the skip into a failure.

type realServer struct {
	endpoint, bucket, region, keyID, secret string
}

func requireReal(t *testing.T) realServer {
	t.Helper()
	r := realServer{
		endpoint: os.Getenv("S3_ENDPOINT"),
		bucket:   os.Getenv("S3_BUCKET"),
		region:   os.Getenv("AWS_REGION"),
		keyID:    os.Getenv("AWS_ACCESS_KEY_ID"),
		secret:   os.Getenv("AWS_SECRET_ACCESS_KEY"),
	}
	if r.endpoint == "" {
		msg := "S3_ENDPOINT is not set; start a real S3 server with `eval \"$(scripts/s3-server.sh start 19000 krakenctl-test)\"` " +
			"(it exports S3_ENDPOINT, S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)"
		if os.Getenv("KRAKENCTL_REQUIRE_REAL_SERVERS") == "1" {
			t.Fatal(msg + " (KRAKENCTL_REQUIRE_REAL_SERVERS=1 forbids skipping)")
		}
		t.Skip(msg)
	}
	for k, v := range map[string]string{"S3_BUCKET": r.bucket, "AWS_REGION": r.region, "AWS_ACCESS_KEY_ID": r.keyID, "AWS_SECRET_ACCESS_KEY": r.secret} {
		if v == "" {
			t.Fatalf("S3_ENDPOINT is set but %s is not", k)
		}
	}
	return r
}

func randomPrefix(t *testing.T) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "krakenctl-test-" + hex.EncodeToString(b[:])
}

func TestConformanceReal(t *testing.T) {
	r := requireReal(t)
	prefix := randomPrefix(t)
	cfg := s3.Config{
		// No credentials or region here: the standard AWS chain reads them from the environment.
		Bucket:      r.bucket,
		Endpoint:    r.endpoint,
		PathStyle:   true,
		Prefix:      prefix,
		PartSize:    s3.MinPartSize,
		Concurrency: 2,
	}
	raw := rawClient(s3.Config{Region: r.region, Endpoint: r.endpoint, AccessKeyID: r.keyID, SecretAccessKey: r.secret})
	t.Cleanup(func() { deleteAll(t, raw, r.bucket, prefix+"/") })
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b := newBackend(t, cfg)
		require.NoError(t, b.Check(t.Context()))
		return b
	})
}

// deleteAll removes the objects a test left under prefix, so repeated runs do not fill the
// bucket.
func deleteAll(t *testing.T, client *awss3.Client, bucket, prefix string) {
	ctx := context.Background() // t.Context is already cancelled when cleanups run
	keys := rawKeys(ctx, t, client, bucket, prefix)
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		var ids []types.ObjectIdentifier
		for _, k := range keys[:n] {
			ids = append(ids, types.ObjectIdentifier{Key: aws.String(k)})
		}
		_, err := client.DeleteObjects(ctx, &awss3.DeleteObjectsInput{Bucket: aws.String(bucket), Delete: &types.Delete{Objects: ids}})
		if err != nil {
			t.Errorf("clean up %d test objects under %s: %v", len(keys), prefix, err)
			return
		}
		keys = keys[n:]
	}
}

func TestWrongSecretReal(t *testing.T) {
	r := requireReal(t)
	b := newBackend(t, s3.Config{
		Bucket:          r.bucket,
		Region:          r.region,
		Endpoint:        r.endpoint,
		PathStyle:       true,
		AccessKeyID:     r.keyID,
		SecretAccessKey: r.secret + "-wrong",
		Prefix:          randomPrefix(t),
	})
	requireAccessDenied(t, b)
	_, err := b.Stat(t.Context(), "ns", "x")
	t.Logf("wrong secret: %v", err)
}

func TestWrongBucketReal(t *testing.T) {
	r := requireReal(t)
	b := newBackend(t, s3.Config{
		Bucket:    "krakenctl-no-such-bucket-" + strings.TrimPrefix(randomPrefix(t), "krakenctl-test-"),
		Endpoint:  r.endpoint,
		PathStyle: true,
	})
	err := b.Check(t.Context())
	require.ErrorContains(t, err, "does not exist")
	var buf bytes.Buffer
	require.NotErrorIs(t, b.Download(t.Context(), "ns", "x", &buf), backend.ErrNotFound)
}

// SlowDown (503), 429 and the other throttling answers are *backend.Throttled with the
// server's Retry-After, returned after one request: the SDK's retryer leaves them to the
// route's limits. Other 5xx answers are still retried by the SDK.
func TestThrottled(t *testing.T) {
	t.Parallel()
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		code, status := "SlowDown", http.StatusServiceUnavailable
		switch {
		case strings.Contains(r.URL.Path, "/broken/"):
			code, status = "InternalError", http.StatusInternalServerError
		case strings.Contains(r.URL.Path, "/limited/"):
			code, status = "TooManyRequests", http.StatusTooManyRequests
		default:
			w.Header().Set("Retry-After", "3")
		}
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			_, _ = fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>Please reduce your request rate.</Message></Error>`, code)
		}
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, s3.Config{
		Bucket: "b", Region: "us-east-1", Endpoint: srv.URL, PathStyle: true,
		AccessKeyID: "AKIA", SecretAccessKey: "secret",
	})
	ctx := t.Context()
	once := func(what string, after time.Duration, call func() error) {
		t.Helper()
		before := requests.Load()
		err := call()
		var th *backend.Throttled
		require.ErrorAs(t, err, &th, what)
		require.Equal(t, after, th.RetryAfter, what)
		require.ErrorContains(t, err, "bucket b", what)
		require.Equal(t, int64(1), requests.Load()-before, "%s: requests sent", what)
	}
	once("stat", 3*time.Second, func() error { _, err := b.Stat(ctx, "ns", "x"); return err })
	var buf bytes.Buffer
	once("download", 3*time.Second, func() error { return b.Download(ctx, "ns", "x", &buf) })
	require.Zero(t, buf.Len())
	once("upload", 3*time.Second, func() error { return b.Upload(ctx, "ns", "x", strings.NewReader("x"), 1) })
	once("list", 3*time.Second, func() error { _, err := b.List(ctx, "ns", ""); return err })
	once("429", 0, func() error { return b.Download(ctx, "limited", "x", &buf) })

	before := requests.Load()
	err := b.Download(ctx, "broken", "x", &buf)
	require.Error(t, err)
	require.NotErrorIs(t, err, backend.ErrThrottled)
	require.Equal(t, int64(3), requests.Load()-before, "the SDK's own retries of a 500")
}
