package registry_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/backend/registry"
)

// pipeTransport serves requests in-process with the handler for their host, streaming
// response bodies through a pipe, so token lifetimes can be tested under testing/synctest.
type pipeTransport map[string]http.Handler

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
	h, ok := p[req.URL.Host]
	if !ok {
		return nil, &net404{req.URL.Host}
	}
	// Hand the handler a request as a server would see it: no scheme or host in the URL.
	sreq := req.Clone(req.Context())
	sreq.Host = req.URL.Host
	sreq.URL = &url.URL{Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery}
	sreq.RequestURI = sreq.URL.RequestURI()
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	go func() {
		h.ServeHTTP(w, sreq)
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
	if req.Method == http.MethodHead {
		resp.Body = http.NoBody
		_ = pr.Close() // always nil
		stop()
	}
	return resp, nil
}

type net404 struct{ host string }

func (e *net404) Error() string { return "no such host " + e.host }

type stopBody struct {
	*io.PipeReader
	stop func() bool
}

func (b *stopBody) Close() error {
	b.stop()
	return b.PipeReader.Close()
}

// tokenWorld is a registry requiring bearer tokens from its token service, reached through
// a pipeTransport, with one blob in each of the repositories "a" and "b".
type tokenWorld struct {
	guard  *bearerGuard
	b      *registry.Backend
	digest string
	data   []byte
}

func newTokenWorld(t *testing.T, expiresIn int) *tokenWorld {
	blobs := newRepoBlobs()
	guard := newBearerGuard(newRegistryHandler(blobs), "http://auth.test/token")
	guard.user, guard.pass, guard.expiresIn = "alice", "s3cret", expiresIn
	data := []byte("layer bytes")
	d := hexDigest(data)
	blobs.put("a", "sha256:"+d, data)
	blobs.put("b", "sha256:"+d, data)
	b, err := registry.New(registry.Config{Address: "registry.test", Insecure: true, Username: "alice", Password: "s3cret"},
		registry.Deps{Transport: pipeTransport{"registry.test": guard, "auth.test": http.HandlerFunc(guard.issue)}})
	require.NoError(t, err)
	return &tokenWorld{guard: guard, b: b, digest: d, data: data}
}

// pull reads the blob from repo through Stat and Download.
func (w *tokenWorld) pull(t *testing.T, repo string) {
	t.Helper()
	info, err := w.b.Stat(t.Context(), repo, w.digest)
	require.NoError(t, err)
	require.Equal(t, int64(len(w.data)), info.Size)
	var buf bytes.Buffer
	require.NoError(t, w.b.Download(t.Context(), repo, w.digest, &buf))
	require.Equal(t, w.data, buf.Bytes())
}

func (w *tokenWorld) requireFetches(t *testing.T, want map[string]int, wantRejected int) {
	t.Helper()
	fetches, rejected := w.guard.stats()
	require.Equal(t, want, fetches, "tokens fetched per scope")
	require.Equal(t, wantRejected, rejected, "requests whose token the registry rejected")
}

func TestTokenCachedPerScope(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newTokenWorld(t, 300)
		for range 5 {
			w.pull(t, "a")
		}
		w.requireFetches(t, map[string]int{"repository:a:pull": 1}, 0)
		w.pull(t, "b")
		w.pull(t, "a")
		w.requireFetches(t, map[string]int{"repository:a:pull": 1, "repository:b:pull": 1}, 0)
	})
}

func TestTokenConcurrentFetchesShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newTokenWorld(t, 300)
		var g errgroup.Group
		for range 8 {
			g.Go(func() error {
				_, err := w.b.Stat(t.Context(), "a", w.digest)
				return err
			})
		}
		require.NoError(t, g.Wait())
		w.requireFetches(t, map[string]int{"repository:a:pull": 1}, 0)
	})
}

func TestTokenRefreshedBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newTokenWorld(t, 300)
		w.pull(t, "a")
		time.Sleep(200 * time.Second)
		w.pull(t, "a")
		w.requireFetches(t, map[string]int{"repository:a:pull": 1}, 0)
		// Past 90% of its lifetime the token is replaced before the registry sees it lapse.
		time.Sleep(100 * time.Second)
		w.pull(t, "a")
		w.requireFetches(t, map[string]int{"repository:a:pull": 2}, 0)
		w.pull(t, "a")
		w.requireFetches(t, map[string]int{"repository:a:pull": 2}, 0)
	})
}

func TestTokenDefaultLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newTokenWorld(t, 0) // no expires_in: 60 s by the specification
		w.pull(t, "a")
		time.Sleep(30 * time.Second)
		w.pull(t, "a")
		w.requireFetches(t, map[string]int{"repository:a:pull": 1}, 0)
		time.Sleep(30 * time.Second)
		w.pull(t, "a")
		w.requireFetches(t, map[string]int{"repository:a:pull": 2}, 0)
	})
}

func TestTokenRefetchedAfter401(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newTokenWorld(t, 3600)
		w.pull(t, "a")
		w.guard.revokeAll()
		// The cached token is rejected once, replaced, and the request succeeds.
		info, err := w.b.Stat(t.Context(), "a", w.digest)
		require.NoError(t, err)
		require.Equal(t, int64(len(w.data)), info.Size)
		w.requireFetches(t, map[string]int{"repository:a:pull": 2}, 1)
		w.pull(t, "a")
		w.requireFetches(t, map[string]int{"repository:a:pull": 2}, 1)
	})
}

func TestTokenWaitStopsOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		guard := newBearerGuard(newRegistryHandler(newRepoBlobs()), "http://auth.test/token")
		slowIssue := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			<-release
			guard.issue(rw, r)
		})
		b, err := registry.New(registry.Config{Address: "registry.test", Insecure: true, Timeout: time.Hour},
			registry.Deps{Transport: pipeTransport{"registry.test": guard, "auth.test": slowIssue}})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := b.Stat(ctx, "a", hexDigest([]byte("x")))
			errc <- err
		}()
		synctest.Wait() // the Stat waits for the token
		cancel()
		require.ErrorIs(t, <-errc, context.Canceled)
		close(release) // let the shared fetch finish so the bubble can end
		synctest.Wait()
	})
}
