// Package httpbackend stores objects on a plain HTTP server. Object (namespace, name) lives at
// <url>/<namespace>/_objects/<name>, the layout of the fs backend, so a web server exporting
// an fs backend's root serves its objects, and the object "ubuntu" of namespace "library"
// cannot collide with the namespace "library/ubuntu" (namespace components never start with
// "_"). Stat is a HEAD, Download a GET and Upload a PUT (only when the config allows it).
// Listing is optional because plain HTTP has no standard way to list; see Backend.List.
//
// The package relies on the server for the atomicity promised by backend.Backend.Upload: a
// server that stores a PUT body as it arrives (rather than to a temporary file renamed into
// place when complete) can expose partial objects. nginx's dav module and most WebDAV servers
// write atomically. Upload itself makes sure a server never receives a complete body when the
// reader yields fewer or more bytes than the declared size.
package httpbackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/krakenctl/krakenctl/backend"
)

// Sentinel errors, wrapped with %w.
var (
	// ErrListUnsupported is returned by List when the config has no listing format. It wraps
	// errors.ErrUnsupported.
	ErrListUnsupported = fmt.Errorf("httpbackend: listing not configured: %w", errors.ErrUnsupported)
	// ErrTimeout means the server did not send response headers within Config.Timeout. Errors
	// wrapping it also wrap context.DeadlineExceeded.
	ErrTimeout = errors.New("httpbackend: timed out waiting for response headers")
	// ErrUnauthorized means the server answered 401 Unauthorized (or 403 to a read).
	ErrUnauthorized = errors.New("httpbackend: unauthorized")
	// ErrSizeMismatch means a body's length disagreed with its declared size.
	ErrSizeMismatch = errors.New("httpbackend: size mismatch")
)

// Deps are the optional collaborators of a Backend.
type Deps struct {
	// Transport sends the requests; nil means a clone of http.DefaultTransport with
	// transparent compression turned off (so Content-Length describes the stored bytes).
	Transport http.RoundTripper
}

// Backend is a backend.Backend over a plain HTTP server. It is safe for concurrent use.
type Backend struct {
	cfg    Config
	base   *url.URL
	client *http.Client
}

// New returns a Backend for cfg, after applying defaults and validating it.
func New(cfg Config, deps Deps) (*Backend, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parse url: %w", err)
	}
	base.Path = strings.TrimRight(base.Path, "/")
	base.RawPath = ""
	rt := deps.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DisableCompression = true
		rt = t
	}
	return &Backend{cfg: cfg, base: base, client: &http.Client{Transport: rt}}, nil
}

// CheckWrite implements backend.WriteChecker: without Config.AllowPut no Upload is ever sent.
// A server that answers PUT with 403 or 405 is only found out by trying.
func (b *Backend) CheckWrite(string) error {
	if !b.cfg.AllowPut {
		return fmt.Errorf("%w: an http backend with allow_put off", backend.ErrReadOnly)
	}
	return nil
}

// CloseIdleConnections closes the connections kept open for reuse. The Backend stays
// usable; call it when dropping a Backend so its connections do not linger.
func (b *Backend) CloseIdleConnections() { b.client.CloseIdleConnections() }

// objectsDir is the directory of a namespace holding its objects.
const objectsDir = "_objects"

// objectURL checks the key and returns the object's URL; with dir it returns the URL of the
// directory holding the namespace's objects (with a trailing slash) instead.
func (b *Backend) objectURL(namespace, name string, dir bool) (string, error) {
	if err := backend.CheckNamespace(namespace); err != nil {
		return "", err
	}
	u := *b.base
	u.Path += "/" + namespace + "/" + objectsDir + "/"
	if !dir {
		if err := backend.CheckName(name); err != nil {
			return "", err
		}
		u.Path += name
	}
	return u.String(), nil
}

// Stat implements backend.Backend with a HEAD request. The server must send Content-Length;
// Last-Modified, when present, becomes Info.ModTime.
func (b *Backend) Stat(ctx context.Context, namespace, name string) (backend.Info, error) {
	u, err := b.objectURL(namespace, name, false)
	if err != nil {
		return backend.Info{}, fmt.Errorf("stat %s/%s: %w", namespace, name, err)
	}
	resp, err := b.send(ctx, http.MethodHead, u, nil, 0, "")
	if err != nil {
		return backend.Info{}, fmt.Errorf("stat %s/%s: %w", namespace, name, err)
	}
	defer closeBody(resp)
	if err := readStatus(resp); err != nil {
		return backend.Info{}, fmt.Errorf("stat %s/%s: %w", namespace, name, err)
	}
	if resp.ContentLength < 0 {
		return backend.Info{}, fmt.Errorf("stat %s/%s: server sent no Content-Length", namespace, name)
	}
	info := backend.Info{Size: resp.ContentLength}
	if lm := resp.Header.Get("Last-Modified"); lm != "" {
		if t, err := http.ParseTime(lm); err == nil {
			info.ModTime = t
		}
	}
	return info, nil
}

// Download implements backend.Backend with a GET request, streaming the body to w. A body
// shorter or longer than the Content-Length the server announced is an error.
func (b *Backend) Download(ctx context.Context, namespace, name string, w io.Writer) error {
	u, err := b.objectURL(namespace, name, false)
	if err != nil {
		return fmt.Errorf("download %s/%s: %w", namespace, name, err)
	}
	resp, err := b.send(ctx, http.MethodGet, u, nil, 0, "")
	if err != nil {
		return fmt.Errorf("download %s/%s: %w", namespace, name, err)
	}
	defer closeBody(resp)
	if err := readStatus(resp); err != nil {
		return fmt.Errorf("download %s/%s: %w", namespace, name, err)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return fmt.Errorf("download %s/%s: after %d bytes: %w", namespace, name, n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("download %s/%s: %w: got %d bytes, Content-Length %d", namespace, name, ErrSizeMismatch, n, resp.ContentLength)
	}
	return nil
}

// Upload implements backend.Backend with a PUT request. Without Config.AllowPut, or when the
// server answers 403 or 405, it returns an error wrapping backend.ErrReadOnly. With size >= 0
// the body is sent with that Content-Length and a reader yielding any other number of bytes
// fails the request before the server has received a complete body; with size -1 the body
// is sent chunked. Bodies of unknown size or of at least 1 MiB are sent with
// "Expect: 100-continue", so a server that refuses the PUT does so before the body is read.
// r is never read after Upload returns.
func (b *Backend) Upload(ctx context.Context, namespace, name string, r io.Reader, size int64) error {
	u, err := b.objectURL(namespace, name, false)
	if err != nil {
		return fmt.Errorf("upload %s/%s: %w", namespace, name, err)
	}
	if !b.cfg.AllowPut {
		return fmt.Errorf("upload %s/%s: %w: allow_put is off", namespace, name, backend.ErrReadOnly)
	}
	if size < -1 {
		return fmt.Errorf("upload %s/%s: invalid size %d", namespace, name, size)
	}
	body := &sizedReader{r: r, remaining: size}
	defer body.detach()
	var rb io.Reader = body
	if size == 0 {
		// A zero-length request goes out without reading the body; check r is empty here.
		if err := body.probeEnd(); err != nil {
			return fmt.Errorf("upload %s/%s: %w", namespace, name, err)
		}
		rb = nil
	}
	resp, err := b.send(ctx, http.MethodPut, u, rb, size, "")
	if err != nil {
		if berr := body.failure(); berr != nil {
			err = berr
		}
		return fmt.Errorf("upload %s/%s: %w", namespace, name, err)
	}
	defer closeBody(resp)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("upload %s/%s: %w: server answered %s", namespace, name, backend.ErrReadOnly, resp.Status)
	case resp.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("upload %s/%s: %w: %s", namespace, name, ErrUnauthorized, resp.Status)
	case backend.ThrottledStatus(resp.StatusCode):
		return fmt.Errorf("upload %s/%s: %w", namespace, name, throttled(resp))
	default:
		return fmt.Errorf("upload %s/%s: %w", namespace, name, unexpectedStatus(resp))
	}
}

// expectContinueMin is the body size from which Upload asks the server for a
// "100 Continue" before sending the body.
const expectContinueMin = 1 << 20

// send performs one request. Config.Timeout bounds the wait for response headers, counted
// from the end of the request body. The returned response's body must be closed.
func (b *Backend) send(ctx context.Context, method, u string, body io.Reader, size int64, accept string) (*http.Response, error) {
	rctx, cancel := context.WithCancel(ctx)
	hd := &headerDeadline{d: b.cfg.Timeout, cancel: cancel}
	if sr, ok := body.(*sizedReader); ok {
		sr.setOnEOF(hd.arm)
	} else {
		hd.arm()
	}
	req, err := http.NewRequestWithContext(rctx, method, u, body)
	if err != nil {
		hd.disarm()
		cancel()
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.ContentLength = size
		if size < 0 || size >= expectContinueMin {
			// Let the server refuse (405, 401, 413...) before the body is sent.
			req.Header.Set("Expect", "100-continue")
		}
	}
	for k, v := range b.cfg.Headers {
		req.Header.Set(k, v)
	}
	if b.cfg.Username != "" {
		req.SetBasicAuth(b.cfg.Username, b.cfg.Password)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := b.client.Do(req)
	timedOut := hd.disarm()
	if timedOut && ctx.Err() == nil {
		if err == nil {
			closeBody(resp)
		}
		cancel()
		return nil, fmt.Errorf("%s %s: %w after %s: %w", method, u, ErrTimeout, b.cfg.Timeout, context.DeadlineExceeded)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// readStatus maps a read's response status to an error: nil for 200, ErrNotFound for 404
// and 410, a *backend.Throttled for 429 and 503.
func readStatus(resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusNotFound, http.StatusGone:
		return backend.ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%w: %s", ErrUnauthorized, resp.Status)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return throttled(resp)
	default:
		return unexpectedStatus(resp)
	}
}

// throttled is the error of a 429 or 503 answer: a *backend.Throttled carrying the server's
// Retry-After, so a limits wrapper (backend/limit) or the write-back queue waits as asked.
func throttled(resp *http.Response) error {
	return &backend.Throttled{
		RetryAfter: backend.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		Err:        unexpectedStatus(resp),
	}
}

// unexpectedStatus describes resp's status and the start of its body.
func unexpectedStatus(resp *http.Response) error {
	var sb strings.Builder
	if _, err := io.Copy(&sb, io.LimitReader(resp.Body, 512)); err != nil {
		sb.WriteString("…")
	}
	msg := strings.Join(strings.Fields(sb.String()), " ")
	if msg == "" {
		return fmt.Errorf("unexpected status %s", resp.Status)
	}
	return fmt.Errorf("unexpected status %s: %s", resp.Status, msg)
}

// closeBody drains a little of resp's body, so the connection can be reused, and closes it.
func closeBody(resp *http.Response) {
	// Errors here only mean the connection cannot be reused; the transport then drops it.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// cancelOnClose releases a request's context when its response body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// headerDeadline cancels a request when the response headers take longer than d to arrive
// after arm. arm is idempotent and a no-op once disarm has run.
type headerDeadline struct {
	d      time.Duration
	cancel context.CancelFunc

	mu    sync.Mutex
	timer *time.Timer
	done  bool
}

func (h *headerDeadline) arm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done || h.timer != nil {
		return
	}
	h.timer = time.AfterFunc(h.d, h.cancel)
}

// disarm stops the timer and reports whether it had already fired.
func (h *headerDeadline) disarm() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = true
	return h.timer != nil && !h.timer.Stop()
}

// sizedReader feeds an upload body from r, enforcing the declared size (remaining, or -1 for
// unknown). It withholds the final bytes until it has checked r has nothing more, so a
// server never receives a complete body for a reader of the wrong length. detach stops all
// further reads from r, waiting for one in progress.
type sizedReader struct {
	mu        sync.Mutex
	r         io.Reader
	remaining int64
	onEOF     func()
	eof       bool
	err       error // sticky; reported to the caller by failure when it is a size problem
	detached  bool
}

var errDetached = errors.New("upload body read after the request finished")

func (s *sizedReader) setOnEOF(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onEOF = f
}

func (s *sizedReader) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.detached:
		return 0, errDetached
	case s.err != nil:
		return 0, s.err
	case s.eof:
		return 0, io.EOF
	}
	if s.remaining >= 0 && int64(len(p)) > s.remaining {
		p = p[:s.remaining]
	}
	if len(p) == 0 && s.remaining != 0 {
		return 0, nil
	}
	n, err := s.r.Read(p)
	if s.remaining < 0 {
		if errors.Is(err, io.EOF) {
			s.finish()
			return n, io.EOF
		}
		if err != nil {
			s.err = err
		}
		return n, err
	}
	s.remaining -= int64(n)
	if s.remaining == 0 {
		if perr := s.probeEndLocked(); perr != nil {
			return 0, perr
		}
		s.finish()
		return n, io.EOF
	}
	if errors.Is(err, io.EOF) {
		s.err = fmt.Errorf("%w: body ended %d bytes short of its declared size", ErrSizeMismatch, s.remaining)
		return 0, s.err
	}
	if err != nil {
		s.err = err
		return 0, err
	}
	return n, nil
}

func (s *sizedReader) finish() {
	s.eof = true
	if s.onEOF != nil {
		s.onEOF()
	}
}

// probeEnd checks that r is exhausted.
func (s *sizedReader) probeEnd() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.probeEndLocked()
}

func (s *sizedReader) probeEndLocked() error {
	var one [1]byte
	for range 100 {
		n, err := s.r.Read(one[:])
		if n > 0 {
			s.err = fmt.Errorf("%w: body is longer than its declared size", ErrSizeMismatch)
			return s.err
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			s.err = err
			return err
		}
	}
	s.err = fmt.Errorf("read body: %w", io.ErrNoProgress)
	return s.err
}

// failure returns the error that stopped reading r, if any.
func (s *sizedReader) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *sizedReader) detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.detached = true
}

// Interface guards
var (
	_ backend.Backend      = (*Backend)(nil)
	_ backend.WriteChecker = (*Backend)(nil)
)
