// Package limit wraps any backend.Backend so that one process cannot saturate a store shared by
// a cluster: a bandwidth cap for uploads (the origins' write-back) and one for downloads
// (pull-through), a cap on requests in flight, and retries with exponential backoff and jitter
// when the store asks the caller to slow down (backend.ErrThrottled) or resets a connection
// before any byte of the object moved.
//
// One Backend is made per configured route (server/backends builds it from the route's
// `limits:`), and its buckets and slots are shared by every request through that route in this
// process. The limits are per process: N origins behind one bucket send up to N times the rate.
//
// What is retried, and when:
//   - an error wrapping backend.ErrThrottled, after the store's Retry-After
//     (*backend.Throttled.RetryAfter) or the backoff, whichever is longer, capped by RetryMax;
//   - an error wrapping syscall.ECONNRESET or syscall.EPIPE, only when no byte of the object
//     had moved (nothing read from an Upload's reader, nothing written by a Download);
//   - an Upload only when its reader can be rewound (an io.Seeker, sought back to where it
//     stood when Upload was called) or not a byte of it was read;
//   - a Download only when nothing was written to w (the caller owns w and has no way to
//     take bytes back);
//   - never an error wrapping backend.ErrNotFound, ErrReadOnly, ErrInvalidKey, ErrNoRoute or a
//     context error, nor any other error, and never once ctx is done or its deadline would
//     pass during the wait.
package limit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/krakenctl/krakenctl/backend"
)

// Defaults of Config.
const (
	DefaultRetryMin = 200 * time.Millisecond
	DefaultRetryMax = 30 * time.Second
	// MaxRetries bounds Config.Retries: past it a store that keeps refusing is better told to
	// the caller (the write-back queue retries on its own schedule).
	MaxRetries = 100
	// chunk is the most bytes paid for at once, and the smallest bucket: a request never holds
	// more than this ahead of its rate, so the requests of a route share it fairly.
	chunk = 64 << 10
)

// Config is a route's limits. The zero value limits nothing and retries nothing.
type Config struct {
	// UploadRate is the bytes per second all Uploads through the route send together; 0 is
	// unlimited. It is separate from DownloadRate because the two are different work: write-
	// back is background and may wait, pull-through has a client waiting, and one shared
	// bucket would let a write-back backlog starve the pulls; stores and links meter the two
	// directions separately too.
	UploadRate int64
	// DownloadRate is the bytes per second all Downloads through the route receive together;
	// 0 is unlimited.
	DownloadRate int64
	// Concurrency is the most requests (Stat, Download, Upload, List, Delete and a backend's
	// own extras) in flight to the backend at once; 0 is unlimited. A request waiting for its
	// backoff holds no slot.
	Concurrency int
	// Retries is how many times a request is tried again after a retryable failure (see the
	// package doc); 0 tries once.
	Retries int
	// RetryMin is the first backoff, doubling on each retry up to RetryMax, which also caps a
	// store's Retry-After. Zero takes DefaultRetryMin and DefaultRetryMax.
	RetryMin, RetryMax time.Duration
}

// Defaults fills in the zero-valued backoff bounds.
func (c *Config) Defaults() {
	if c.RetryMin == 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax == 0 {
		c.RetryMax = max(DefaultRetryMax, c.RetryMin)
	}
}

// Validate reports the first invalid field, named by its YAML key under a route's `limits:`.
func (c Config) Validate() error {
	switch {
	case c.UploadRate < 0:
		return fmt.Errorf("upload_rate: %d is negative (0 is unlimited)", c.UploadRate)
	case c.DownloadRate < 0:
		return fmt.Errorf("download_rate: %d is negative (0 is unlimited)", c.DownloadRate)
	case c.Concurrency < 0:
		return fmt.Errorf("concurrency: %d is negative (0 is unlimited)", c.Concurrency)
	case c.Retries < 0 || c.Retries > MaxRetries:
		return fmt.Errorf("retries: %d is outside [0, %d]", c.Retries, MaxRetries)
	case c.RetryMin < 0:
		return fmt.Errorf("retry_min: %s is negative", c.RetryMin)
	case c.RetryMax < c.RetryMin:
		return fmt.Errorf("retry_max: %s is less than retry_min %s", c.RetryMax, c.RetryMin)
	}
	return nil
}

// Deps are a Backend's collaborators.
type Deps struct {
	// Route names the route in metrics (label "route").
	Route string
	// Registerer receives the metrics; nil registers nowhere. Several Backends may share one:
	// they share its vectors, told apart by route.
	Registerer prometheus.Registerer
}

// Backend is a backend.Backend that forwards to another under its route's limits. It is safe
// for concurrent use.
type Backend struct {
	inner    backend.Backend
	cfg      Config
	up, down *rate.Limiter // nil: unlimited
	slots    chan struct{} // nil: unlimited
	// upSlots bounds the uploads among the slots to Concurrency-1 (nil when Concurrency < 2):
	// a paced write-back holds its slot for its whole transfer, and as many write-back workers
	// as slots would otherwise leave the pull-throughs clients wait on no slot at all.
	upSlots chan struct{}
	m       *routeMetrics
}

// New wraps inner in cfg's limits, after applying cfg's defaults and validating it.
func New(inner backend.Backend, cfg Config, deps Deps) (*Backend, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("backend limits: %w", err)
	}
	m, err := newMetrics(deps.Registerer, deps.Route)
	if err != nil {
		return nil, err
	}
	b := &Backend{inner: inner, cfg: cfg, up: bucket(cfg.UploadRate), down: bucket(cfg.DownloadRate), m: m}
	if cfg.Concurrency > 0 {
		b.slots = make(chan struct{}, cfg.Concurrency)
	}
	if cfg.Concurrency > 1 {
		b.upSlots = make(chan struct{}, cfg.Concurrency-1)
	}
	return b, nil
}

// bucket is a token bucket of bps bytes a second holding a tenth of a second of it (at least
// one chunk), or nil for 0.
func bucket(bps int64) *rate.Limiter {
	if bps == 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bps), max(chunk, int(min(bps/10, 1<<30))))
}

// Unwrap returns the wrapped backend, for callers that need its own methods and accept that
// they bypass the limits.
func (b *Backend) Unwrap() backend.Backend { return b.inner }

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, namespace, name string) (backend.Info, error) {
	var info backend.Info
	err := b.Do(ctx, "stat", func(ctx context.Context) error {
		var err error
		info, err = b.inner.Stat(ctx, namespace, name)
		return err
	})
	return info, err
}

// List implements backend.Backend.
func (b *Backend) List(ctx context.Context, namespace, prefix string) ([]string, error) {
	var names []string
	err := b.Do(ctx, "list", func(ctx context.Context) error {
		var err error
		names, err = b.inner.List(ctx, namespace, prefix)
		return err
	})
	return names, err
}

// Delete implements backend.Deleter; a wrapped backend that cannot delete answers an error
// wrapping errors.ErrUnsupported, as backend.Delete does.
func (b *Backend) Delete(ctx context.Context, namespace, name string) error {
	return b.Do(ctx, "delete", func(ctx context.Context) error {
		return backend.Delete(ctx, b.inner, namespace, name)
	})
}

// CheckWrite implements backend.WriteChecker with the wrapped backend's answer.
func (b *Backend) CheckWrite(namespace string) error { return backend.CheckWrite(b.inner, namespace) }

// Download implements backend.Backend. The bytes written to w are paced by DownloadRate; a
// failed attempt is retried only when it wrote nothing to w.
func (b *Backend) Download(ctx context.Context, namespace, name string, w io.Writer) error {
	pw := &pacedWriter{ctx: ctx, w: w, b: b}
	return b.do(ctx, "download", func(ctx context.Context) error {
		return b.inner.Download(ctx, namespace, name, pw)
	}, func(error) bool { return pw.written() == 0 })
}

// Upload implements backend.Backend. The bytes read from r are paced by UploadRate; a failed
// attempt is retried only when r is an io.Seeker (sought back to its position at the call) or
// no byte of r was read.
func (b *Backend) Upload(ctx context.Context, namespace, name string, r io.Reader, size int64) error {
	pr := &pacedReader{ctx: ctx, r: r, b: b}
	seeker, _ := r.(io.Seeker)
	var start int64
	if seeker != nil {
		var err error
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			seeker = nil // a Seeker that cannot report its position cannot be rewound to it
		}
	}
	return b.do(ctx, "upload", func(ctx context.Context) error {
		if pr.read() > 0 {
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return fmt.Errorf("upload %s/%s: rewind the body for a retry: %w", namespace, name, err)
			}
			pr.reset()
		}
		return b.inner.Upload(ctx, namespace, name, pr, size)
	}, func(err error) bool { return pr.read() == 0 || (seeker != nil && !connReset(err)) })
}

// Do runs fn, one call to the wrapped backend named op in metrics ("tags", "resolve_tag"),
// under the route's concurrency cap and retry policy. It is for a backend's methods beyond
// backend.Backend that move no object bytes; fn must be safe to call again.
func (b *Backend) Do(ctx context.Context, op string, fn func(context.Context) error) error {
	return b.do(ctx, op, fn, func(error) bool { return true })
}

// do runs fn in a slot, then again after a backoff while its error is retryable, canRetry
// agrees and retries remain.
func (b *Backend) do(ctx context.Context, op string, fn func(context.Context) error, canRetry func(error) bool) error {
	for attempt := 0; ; attempt++ {
		err := b.attempt(ctx, op, fn)
		if err == nil {
			return nil
		}
		var th *backend.Throttled
		throttled := errors.As(err, &th)
		if throttled {
			b.m.throttled(op).Inc()
		}
		retryable := throttled || connReset(err)
		if attempt == b.cfg.Retries || ctx.Err() != nil || !retryable || !canRetry(err) {
			switch {
			case attempt == 0:
				return err
			case attempt == b.cfg.Retries && retryable:
				return fmt.Errorf("%w (gave up after %d attempts)", err, attempt+1)
			default: // a retry met an answer no retry changes
				return fmt.Errorf("%w (attempt %d)", err, attempt+1)
			}
		}
		wait := b.backoff(attempt)
		if throttled {
			wait = max(wait, th.RetryAfter)
		}
		wait = min(wait, b.cfg.RetryMax)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return fmt.Errorf("%w (not retried: the deadline comes before the next attempt, in %s)", err, wait)
		}
		if serr := sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%w (retry cancelled: %w)", err, serr)
		}
		b.m.retries(op).Inc()
	}
}

// acquire takes a slot of ch, waiting (counted in the metrics) as long as ctx lives.
func (b *Backend) acquire(ctx context.Context, op string, ch chan struct{}) error {
	select {
	case ch <- struct{}{}:
		return nil
	default:
	}
	start := time.Now()
	defer func() { b.m.slotWait(op).Add(time.Since(start).Seconds()) }()
	select {
	case ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for a request slot (concurrency %d): %w", b.cfg.Concurrency, ctx.Err())
	}
}

// attempt runs fn holding one of the route's slots; an upload takes one of upSlots first.
func (b *Backend) attempt(ctx context.Context, op string, fn func(context.Context) error) error {
	if op == "upload" && b.upSlots != nil {
		if err := b.acquire(ctx, op, b.upSlots); err != nil {
			return err
		}
		defer func() { <-b.upSlots }()
	}
	if b.slots != nil {
		if err := b.acquire(ctx, op, b.slots); err != nil {
			return err
		}
		defer func() { <-b.slots }()
	}
	return fn(ctx)
}

// backoff is the attempt'th (from 0) exponential backoff with "equal jitter": somewhere in the
// upper half of RetryMin·2^attempt (capped by RetryMax), so that requests refused together do
// not come back together, yet none comes back at once.
func (b *Backend) backoff(attempt int) time.Duration {
	d := b.cfg.RetryMin
	for range attempt {
		if d >= b.cfg.RetryMax/2 {
			d = b.cfg.RetryMax
			break
		}
		d *= 2
	}
	d = min(d, b.cfg.RetryMax)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// connReset reports whether err is the connection reset by the store (or a write to such a
// connection), which a second connection may not meet.
func connReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pace takes n bytes' worth of tokens from l, a chunk at a time, counting the wait.
func (b *Backend) pace(ctx context.Context, l *rate.Limiter, direction string, n int) error {
	start := time.Now()
	defer func() {
		if waited := time.Since(start); waited > 0 {
			b.m.rateWait(direction).Add(waited.Seconds())
		}
	}()
	for n > 0 {
		c := min(n, l.Burst())
		if err := l.WaitN(ctx, c); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("wait for %s bandwidth: %w", direction, ctx.Err())
			}
			if _, ok := ctx.Deadline(); ok {
				// The limiter refuses a wait that would outlast the deadline; say it is one.
				return fmt.Errorf("wait for %s bandwidth: %w: %w", direction, context.DeadlineExceeded, err)
			}
			return fmt.Errorf("wait for %s bandwidth: %w", direction, err)
		}
		n -= c
	}
	return nil
}

// pacedReader is an Upload's body: it counts the bytes read, and pays for them before handing
// them to the backend, so the backend sends no faster than the route's UploadRate.
type pacedReader struct {
	// ctx is the Upload's: the reader lives exactly as long as the call that made it.
	ctx context.Context
	r   io.Reader
	b   *Backend
	mu  sync.Mutex // a backend may read from several goroutines (S3's parts)
	n   int64
}

func (p *pacedReader) read() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *pacedReader) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n = 0
}

func (p *pacedReader) Read(buf []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.b.up != nil && len(buf) > chunk {
		buf = buf[:chunk]
	}
	n, err := p.r.Read(buf)
	p.n += int64(n)
	if n > 0 && p.b.up != nil {
		if werr := p.b.pace(p.ctx, p.b.up, "upload", n); werr != nil {
			return 0, werr
		}
	}
	return n, err
}

// pacedWriter is a Download's destination: it pays for each chunk before writing it to w, so
// the backend reads from the store no faster than the route's DownloadRate (TCP flow control
// holds the store back), and counts what reached w.
type pacedWriter struct {
	ctx context.Context // the Download's, as pacedReader's
	w   io.Writer
	b   *Backend
	mu  sync.Mutex
	n   int64
}

func (p *pacedWriter) written() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *pacedWriter) Write(buf []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.b.down == nil {
		n, err := p.w.Write(buf)
		p.n += int64(n)
		return n, err
	}
	written := 0
	for len(buf) > 0 {
		c := buf[:min(len(buf), chunk)]
		if err := p.b.pace(p.ctx, p.b.down, "download", len(c)); err != nil {
			return written, err
		}
		n, err := p.w.Write(c)
		written += n
		p.n += int64(n)
		if err != nil {
			return written, err
		}
		buf = buf[len(c):]
	}
	return written, nil
}

// Interface guards
var (
	_ backend.Backend      = (*Backend)(nil)
	_ backend.Deleter      = (*Backend)(nil)
	_ backend.WriteChecker = (*Backend)(nil)
	_ io.Reader            = (*pacedReader)(nil)
	_ io.Writer            = (*pacedWriter)(nil)
)
