package httpbackend_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/backendtest"
	"github.com/krakenctl/krakenctl/backend/httpbackend"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// objectServer is a small object server over a directory, in the manner of nginx with the
// dav module: GET and HEAD through http.FileServer, PUT written to a temporary file and
// renamed into place only once the whole body has arrived, and, for a directory requested
// with Accept: application/json, an nginx-style JSON index.
type objectServer struct {
	dir   string
	files http.Handler
	puts  atomic.Int64
}

func newObjectServer(dir string) *objectServer {
	return &objectServer{dir: dir, files: http.FileServer(http.Dir(dir))}
}

func (s *objectServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if slices.Contains(strings.Split(r.URL.Path, "/"), "..") {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if strings.HasSuffix(r.URL.Path, "/") && strings.Contains(r.Header.Get("Accept"), "application/json") {
			s.jsonIndex(w, r)
			return
		}
		s.files.ServeHTTP(w, r)
	case http.MethodPut:
		s.puts.Add(1)
		s.put(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (s *objectServer) jsonIndex(w http.ResponseWriter, r *http.Request) {
	entries, err := os.ReadDir(filepath.Join(s.dir, filepath.FromSlash(path.Clean(r.URL.Path))))
	if err != nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	type entry struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	var out []entry
	for _, e := range entries {
		typ := "file"
		if e.IsDir() {
			typ = "directory"
		}
		out = append(out, entry{e.Name(), typ})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *objectServer) put(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/") {
		http.Error(w, "cannot PUT a directory", http.StatusConflict)
		return
	}
	target := filepath.Join(s.dir, filepath.FromSlash(path.Clean(r.URL.Path)))
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), "put-*.tmp~")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // fails harmlessly once renamed into place
	n, err := io.Copy(tmp, r.Body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && r.ContentLength >= 0 && n != r.ContentLength {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		http.Error(w, "incomplete body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// seedFile writes data where an object server under dir serves (namespace, name).
func seedFile(t *testing.T, dir, namespace, name string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(namespace), "_objects", name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	tmp := p + ".seed~"
	require.NoError(t, os.WriteFile(tmp, data, 0o644))
	require.NoError(t, os.Rename(tmp, p))
}

// newBackend returns a Backend for cfg whose connections are closed when t ends.
func newBackend(t *testing.T, cfg httpbackend.Config) *httpbackend.Backend {
	t.Helper()
	b, err := httpbackend.New(cfg, httpbackend.Deps{})
	require.NoError(t, err)
	t.Cleanup(b.CloseIdleConnections)
	return b
}

func TestConformance(t *testing.T) {
	for _, list := range []httpbackend.ListFormat{httpbackend.ListJSON, httpbackend.ListHTML} {
		t.Run(string(list), func(t *testing.T) {
			srv := httptest.NewServer(http.StripPrefix("/blobs", newObjectServer(t.TempDir())))
			t.Cleanup(srv.Close)
			backendtest.Run(t, func(t *testing.T) backend.Backend {
				return newBackend(t, httpbackend.Config{URL: srv.URL + "/blobs/", AllowPut: true, List: list})
			})
		})
	}
}

// TestConformanceUnlisted runs the suite without a listing format: List must report
// errors.ErrUnsupported and everything else still works.
func TestConformanceUnlisted(t *testing.T) {
	srv := httptest.NewServer(newObjectServer(t.TempDir()))
	t.Cleanup(srv.Close)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return newBackend(t, httpbackend.Config{URL: srv.URL, AllowPut: true})
	})
}

// readOnlyFileServer is a plain static file server: GET and HEAD of dir, 405 for the rest.
func readOnlyFileServer(dir string) http.Handler {
	files := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		files.ServeHTTP(w, r)
	})
}

func TestConformanceReadOnlyFileServer(t *testing.T) {
	// allow_put off refuses uploads locally; on, the server's 405 must be read the same way.
	for _, allowPut := range []bool{false, true} {
		t.Run("allow_put="+strconv.FormatBool(allowPut), func(t *testing.T) {
			dir := t.TempDir()
			srv := httptest.NewServer(readOnlyFileServer(dir))
			t.Cleanup(srv.Close)
			backendtest.RunReadOnly(t, func(t *testing.T) backend.Backend {
				return newBackend(t, httpbackend.Config{URL: srv.URL, AllowPut: allowPut, List: httpbackend.ListHTML})
			}, func(t *testing.T, namespace, name string, data []byte) {
				seedFile(t, dir, namespace, name, data)
			})
		})
	}
}

func TestUploadWithoutAllowPutSendsNothing(t *testing.T) {
	t.Parallel()
	objs := newObjectServer(t.TempDir())
	srv := httptest.NewServer(objs)
	t.Cleanup(srv.Close)
	b := newBackend(t, httpbackend.Config{URL: srv.URL})
	err := b.Upload(t.Context(), "ns", "a", strings.NewReader("abc"), 3)
	require.ErrorIs(t, err, backend.ErrReadOnly)
	require.Zero(t, objs.puts.Load())
}

func TestStatusMapping(t *testing.T) {
	t.Parallel()
	status := map[string]int{
		"gone": http.StatusGone, "unauth": http.StatusUnauthorized, "forbidden": http.StatusForbidden,
		"broken": http.StatusInternalServerError, "partial": http.StatusPartialContent,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := status[path.Base(r.URL.Path)]
		if code == 0 {
			code = http.StatusNotFound
		}
		if r.Method == http.MethodPut && path.Base(r.URL.Path) == "forbidden" {
			code = http.StatusForbidden
		}
		http.Error(w, "the disk is on fire", code)
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, httpbackend.Config{URL: srv.URL, AllowPut: true, List: httpbackend.ListJSON})
	ctx := t.Context()

	for name, want := range map[string]error{
		"missing":   backend.ErrNotFound,
		"gone":      backend.ErrNotFound,
		"unauth":    httpbackend.ErrUnauthorized,
		"forbidden": httpbackend.ErrUnauthorized,
	} {
		_, err := b.Stat(ctx, "ns", name)
		require.ErrorIs(t, err, want, "stat %s", name)
		var buf bytes.Buffer
		require.ErrorIs(t, b.Download(ctx, "ns", name, &buf), want, "download %s", name)
		require.Zero(t, buf.Len())
	}
	for _, name := range []string{"broken", "partial"} {
		var buf bytes.Buffer
		err := b.Download(ctx, "ns", name, &buf)
		require.Error(t, err)
		require.NotErrorIs(t, err, backend.ErrNotFound)
		require.Contains(t, err.Error(), strconv.Itoa(status[name]))
		require.Zero(t, buf.Len(), "an error status must not leak its body into w")
	}
	var buf bytes.Buffer
	require.ErrorContains(t, b.Download(ctx, "ns", "broken", &buf), "the disk is on fire")

	require.ErrorIs(t, b.Upload(ctx, "ns", "forbidden", strings.NewReader("x"), 1), backend.ErrReadOnly)
	require.ErrorIs(t, b.Upload(ctx, "ns", "unauth", strings.NewReader("x"), 1), httpbackend.ErrUnauthorized)
	err := b.Upload(ctx, "ns", "broken", strings.NewReader("x"), 1)
	require.ErrorContains(t, err, "500")
	require.NotErrorIs(t, err, backend.ErrReadOnly)

	// A listing the server does not have is an empty namespace; a failing one is an error.
	names, err := b.List(ctx, "ns", "")
	require.NoError(t, err)
	require.Empty(t, names)
}

// 429 and 503 answers are *backend.Throttled carrying the server's Retry-After, for every
// operation; a 500 is not.
func TestThrottled(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch path.Base(r.URL.Path) {
		case "busy":
			w.Header().Set("Retry-After", "7")
			http.Error(w, "SlowDown", http.StatusServiceUnavailable)
		case "broken":
			http.Error(w, "the disk is on fire", http.StatusInternalServerError)
		default: // every name, and the listing
			w.Header().Set("Retry-After", "2")
			http.Error(w, "slow down", http.StatusTooManyRequests)
		}
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, httpbackend.Config{URL: srv.URL, AllowPut: true, List: httpbackend.ListJSON})
	ctx := t.Context()
	check := func(err error, after time.Duration, what string) {
		t.Helper()
		var th *backend.Throttled
		require.ErrorAs(t, err, &th, what)
		require.ErrorIs(t, err, backend.ErrThrottled, what)
		require.Equal(t, after, th.RetryAfter, what)
		require.ErrorContains(t, err, "ns/", what) // names the object
	}
	_, err := b.Stat(ctx, "ns", "abc")
	check(err, 2*time.Second, "stat")
	var buf bytes.Buffer
	check(b.Download(ctx, "ns", "busy", &buf), 7*time.Second, "download 503")
	require.Zero(t, buf.Len())
	check(b.Upload(ctx, "ns", "abc", strings.NewReader("x"), 1), 2*time.Second, "upload")
	_, err = b.List(ctx, "ns", "")
	var th *backend.Throttled
	require.ErrorAs(t, err, &th, "list")
	require.NotErrorIs(t, b.Download(ctx, "ns", "broken", &buf), backend.ErrThrottled)
}

func TestShortBody(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(bytes.Repeat([]byte("x"), 400))
		// Returning with fewer bytes than announced makes the server drop the connection.
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, httpbackend.Config{URL: srv.URL})
	err := b.Download(t.Context(), "ns", "obj", io.Discard)
	require.Error(t, err)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestStatNeedsContentLength(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
		if path.Base(r.URL.Path) == "sized" {
			w.Header().Set("Content-Length", "42")
		}
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, httpbackend.Config{URL: srv.URL})
	_, err := b.Stat(t.Context(), "ns", "unsized")
	require.ErrorContains(t, err, "Content-Length")
	info, err := b.Stat(t.Context(), "ns", "sized")
	require.NoError(t, err)
	require.Equal(t, int64(42), info.Size)
	require.Equal(t, time.Date(2015, 10, 21, 7, 28, 0, 0, time.UTC), info.ModTime.UTC())
}

func TestCredentialsAndHeaders(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seedFile(t, dir, "ns", "obj", []byte("secret stuff"))
	files := newObjectServer(dir)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != "alice" || pass != "s3cret" || r.Header.Get("X-Api-Key") != "k1" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	good := newBackend(t, httpbackend.Config{
		URL: srv.URL, AllowPut: true, Username: "alice", Password: "s3cret",
		Headers: map[string]string{"X-Api-Key": "k1"},
	})
	var buf bytes.Buffer
	require.NoError(t, good.Download(t.Context(), "ns", "obj", &buf))
	require.Equal(t, "secret stuff", buf.String())
	require.NoError(t, good.Upload(t.Context(), "ns", "new", strings.NewReader("hello"), 5))

	for _, cfg := range []httpbackend.Config{
		{URL: srv.URL, Username: "alice", Password: "wrong", Headers: map[string]string{"X-Api-Key": "k1"}},
		{URL: srv.URL, Username: "alice", Password: "s3cret"},
		{URL: srv.URL, Headers: map[string]string{"X-Api-Key": "k1"}},
	} {
		b := newBackend(t, cfg)
		_, err := b.Stat(t.Context(), "ns", "obj")
		require.ErrorIs(t, err, httpbackend.ErrUnauthorized)
	}
}

func TestHeaderTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	b := newBackend(t, httpbackend.Config{URL: srv.URL, AllowPut: true, Timeout: 10 * time.Millisecond})

	_, err := b.Stat(t.Context(), "ns", "obj")
	require.ErrorIs(t, err, httpbackend.ErrTimeout)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, b.Download(t.Context(), "ns", "obj", io.Discard), httpbackend.ErrTimeout)
	require.ErrorIs(t, b.Upload(t.Context(), "ns", "obj", strings.NewReader("abc"), 3), httpbackend.ErrTimeout)
	require.ErrorIs(t, b.Upload(t.Context(), "ns", "obj", strings.NewReader("abc"), -1), httpbackend.ErrTimeout)
}

// pipeTransport serves requests with a handler in-process, streaming the response body
// through a pipe, so tests under testing/synctest involve no network.
type pipeTransport struct{ h http.Handler }

type pipeWriter struct {
	header http.Header
	code   int
	pw     *io.PipeWriter
	once   sync.Once
	ready  chan struct{}
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) {
	w.once.Do(func() {
		w.code = code
		close(w.ready)
	})
}

func (w *pipeWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(p)
}

func (p pipeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	go func() {
		p.h.ServeHTTP(w, req)
		w.WriteHeader(http.StatusOK)
		_ = pw.Close() // always nil
	}()
	stop := context.AfterFunc(req.Context(), func() { pr.CloseWithError(req.Context().Err()) })
	select {
	case <-w.ready:
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	resp := &http.Response{
		Status: strconv.Itoa(w.code) + " " + http.StatusText(w.code), StatusCode: w.code,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.header.Clone(), Body: &stopBody{pr, stop}, ContentLength: -1, Request: req,
	}
	if cl, err := strconv.ParseInt(w.header.Get("Content-Length"), 10, 64); err == nil {
		resp.ContentLength = cl
	}
	return resp, nil
}

type stopBody struct {
	*io.PipeReader
	stop func() bool
}

func (b *stopBody) Close() error {
	b.stop()
	return b.PipeReader.Close()
}

// TestTimeoutSparesSlowBodies checks that Timeout bounds only the wait for response headers:
// a body that takes far longer than Timeout to stream, or a handler that is slow to answer
// after a slow upload body, still succeeds.
func TestTimeoutSparesSlowBodies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = time.Second
		var stored []byte
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.Method {
			case http.MethodGet:
				w.Header().Set("Content-Length", "6")
				_, _ = w.Write([]byte("abc"))
				time.Sleep(10 * timeout)
				_, _ = w.Write([]byte("def"))
			case http.MethodPut:
				data, err := io.ReadAll(r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				time.Sleep(timeout / 2)
				stored = data
				w.WriteHeader(http.StatusNoContent)
			}
		})
		b, err := httpbackend.New(httpbackend.Config{URL: "http://objects.test", AllowPut: true, Timeout: timeout},
			httpbackend.Deps{Transport: pipeTransport{h}})
		require.NoError(t, err)
		var buf bytes.Buffer
		require.NoError(t, b.Download(t.Context(), "ns", "obj", &buf))
		require.Equal(t, "abcdef", buf.String())

		pr, pw := io.Pipe()
		go func() {
			_, _ = pw.Write([]byte("slow"))
			time.Sleep(10 * timeout)
			_, _ = pw.Write([]byte(" body"))
			_ = pw.Close() // always nil
		}()
		require.NoError(t, b.Upload(t.Context(), "ns", "obj", pr, -1))
		require.Equal(t, "slow body", string(stored))
	})
}

// TestUploadWithholdsMismatchedBodies checks what the server receives when the reader's
// length differs from the declared size: never a complete body.
func TestUploadWithholdsMismatchedBodies(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var complete []int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err == nil && n == r.ContentLength {
			mu.Lock()
			complete = append(complete, n)
			mu.Unlock()
		}
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, httpbackend.Config{URL: srv.URL, AllowPut: true})
	data := bytes.Repeat([]byte("0123456789"), 10000)
	for _, size := range []int64{0, 1, 99999, 100001, 1 << 20} {
		err := b.Upload(t.Context(), "ns", "obj", bytes.NewReader(data), size)
		require.ErrorIs(t, err, httpbackend.ErrSizeMismatch, "size %d", size)
	}
	require.NoError(t, b.Upload(t.Context(), "ns", "obj", bytes.NewReader(data), int64(len(data))))
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []int64{int64(len(data))}, complete, "the server received a complete body for a mismatched upload")
}

func TestListFormats(t *testing.T) {
	t.Parallel()
	indexes := map[string]string{
		// nginx autoindex (html)
		"nginx": `<html><head><title>Index of /ns/_objects/</title></head><body><h1>Index of /ns/_objects/</h1><hr><pre><a href="../">../</a>
<a href="sub/">sub/</a>                                               21-Oct-2015 07:28       -
<a href="b2">b2</a>                                                 21-Oct-2015 07:28      12
<a href="a1">a1</a>                                                 21-Oct-2015 07:28      12
<a href="x.tmp~">x.tmp~</a>                                         21-Oct-2015 07:28      12
</pre><hr></body></html>`,
		// Apache mod_autoindex, with sort links and an absolute parent link
		"apache": `<table><tr><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th></tr>
<tr><td><a href="/ns/">Parent Directory</a></td></tr>
<tr><td><a href='a1'>a1</a></td></tr><tr><td><A HREF="b2">b2</A></td></tr>
<tr><td><a href="http://elsewhere.example/c3">c3</a></td></tr></table>`,
		// Go's http.FileServer escapes odd names and prefixes those with colons.
		"go": "<!doctype html>\n<pre>\n<a href=\"a1\">a1</a>\n<a href=\"b%32\">b2</a>\n<a href=\"./c:3\">c:3</a>\n<a href=\"sub/\">sub/</a>\n</pre>\n",
		// nginx autoindex_format json
		"nginx-json": `[{"name":"sub","type":"directory","mtime":"Wed, 21 Oct 2015 07:28:00 GMT"},
{"name":"b2","type":"file","mtime":"Wed, 21 Oct 2015 07:28:00 GMT","size":12},
{"name":"a1","type":"file","mtime":"Wed, 21 Oct 2015 07:28:00 GMT","size":12},
{"name":"../x","type":"file"}]`,
		"plain-json": `["b2", "a1", "a1", "no/pe", ""]`,
		"bad-json":   `{"files": ["a1"]}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /<format>/_objects/
		format := strings.Split(strings.Trim(r.URL.Path, "/"), "/")[0]
		idx, ok := indexes[format]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(idx))
	}))
	t.Cleanup(srv.Close)
	htmlB := newBackend(t, httpbackend.Config{URL: srv.URL, List: httpbackend.ListHTML})
	jsonB := newBackend(t, httpbackend.Config{URL: srv.URL, List: httpbackend.ListJSON})
	for _, c := range []struct {
		b      *httpbackend.Backend
		format string
	}{{htmlB, "nginx"}, {htmlB, "apache"}, {htmlB, "go"}, {jsonB, "nginx-json"}, {jsonB, "plain-json"}} {
		names, err := c.b.List(t.Context(), c.format, "")
		require.NoError(t, err, c.format)
		require.Equal(t, []string{"a1", "b2"}, names, c.format)
		names, err = c.b.List(t.Context(), c.format, "b")
		require.NoError(t, err, c.format)
		require.Equal(t, []string{"b2"}, names, c.format)
	}
	_, err := jsonB.List(t.Context(), "bad-json", "")
	require.ErrorContains(t, err, "decode JSON index")
	names, err := jsonB.List(t.Context(), "unknown", "")
	require.NoError(t, err)
	require.Empty(t, names)

	none := newBackend(t, httpbackend.Config{URL: srv.URL})
	_, err = none.List(t.Context(), "nginx", "")
	require.ErrorIs(t, err, httpbackend.ErrListUnsupported)
	require.ErrorIs(t, err, errors.ErrUnsupported)
}

// TestReadsFSBackendLayout checks that a static server over a directory laid out like the fs
// backend (<root>/<namespace>/_objects/<name>) is readable.
func TestReadsFSBackendLayout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "library", "ubuntu", "_objects"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "library", "ubuntu", "_objects", "layer"), []byte("bytes"), 0o644))
	srv := httptest.NewServer(readOnlyFileServer(dir))
	t.Cleanup(srv.Close)
	b := newBackend(t, httpbackend.Config{URL: srv.URL, List: httpbackend.ListHTML})
	var buf bytes.Buffer
	require.NoError(t, b.Download(t.Context(), "library/ubuntu", "layer", &buf))
	require.Equal(t, "bytes", buf.String())
	names, err := b.List(t.Context(), "library/ubuntu", "")
	require.NoError(t, err)
	require.True(t, slices.Equal([]string{"layer"}, names), "got %v", names)
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestUploadRefusedBeforeBody checks that a large upload asks for "100 Continue", so a
// server refusing PUT answers before any of the body is read.
func TestUploadRefusedBeforeBody(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(readOnlyFileServer(t.TempDir()))
	t.Cleanup(srv.Close)
	b := newBackend(t, httpbackend.Config{URL: srv.URL, AllowPut: true})
	for _, size := range []int64{32 << 20, -1} {
		r := &countingReader{r: bytes.NewReader(make([]byte, 32<<20))}
		err := b.Upload(t.Context(), "ns", "obj", r, size)
		require.ErrorIs(t, err, backend.ErrReadOnly)
		require.Zero(t, r.n.Load(), "bytes of the body read before the refusal (size %d)", size)
	}
}
