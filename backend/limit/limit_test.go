package limit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/backendtest"
	"github.com/krakenctl/krakenctl/backend/limit"
	"github.com/krakenctl/krakenctl/backend/memory"
)

const (
	ns   = "library/x"
	name = "abc"
	mib  = 1 << 20
)

// fake is a backend whose calls run a hook per operation (nil: forward to a memory backend)
// and are recorded with the (virtual) time they started.
type fake struct {
	*memory.Backend
	mu       sync.Mutex
	calls    map[string][]time.Time
	stat     func(n int) error
	upload   func(n int, r io.Reader) error // n counts from 0; nil forwards
	download func(n int, w io.Writer) error
}

func newFake() *fake { return &fake{Backend: memory.New(), calls: map[string][]time.Time{}} }

func (f *fake) record(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op] = append(f.calls[op], time.Now())
	return len(f.calls[op]) - 1
}

func (f *fake) times(op string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls[op]...)
}

func (f *fake) Stat(ctx context.Context, namespace, nm string) (backend.Info, error) {
	n := f.record("stat")
	if f.stat != nil {
		if err := f.stat(n); err != nil {
			return backend.Info{}, err
		}
	}
	return f.Backend.Stat(ctx, namespace, nm)
}

func (f *fake) Upload(ctx context.Context, namespace, nm string, r io.Reader, size int64) error {
	n := f.record("upload")
	if f.upload != nil {
		if err := f.upload(n, r); err != nil {
			return err
		}
	}
	return f.Backend.Upload(ctx, namespace, nm, r, size)
}

func (f *fake) Download(ctx context.Context, namespace, nm string, w io.Writer) error {
	n := f.record("download")
	if f.download != nil {
		if err := f.download(n, w); err != nil {
			return err
		}
	}
	return f.Backend.Download(ctx, namespace, nm, w)
}

func throttled(after time.Duration) error {
	return &backend.Throttled{RetryAfter: after, Err: errors.New("fake: 429 Too Many Requests")}
}

func newLimited(t *testing.T, inner backend.Backend, cfg limit.Config) (*limit.Backend, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	b, err := limit.New(inner, cfg, limit.Deps{Route: "r", Registerer: reg})
	require.NoError(t, err)
	return b, reg
}

func counter(t *testing.T, reg *prometheus.Registry, metric string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// The wrapper keeps the Backend contract.
func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b, err := limit.New(memory.New(), limit.Config{
			UploadRate: 512 * mib, DownloadRate: 512 * mib, Concurrency: 4, Retries: 2,
		}, limit.Deps{Route: "conformance"})
		require.NoError(t, err)
		return b
	})
}

// burst is the bucket of a 1 MiB/s rate: a tenth of a second of it.
const burst = mib / 10

// Uploads are paced as the bytes flow: at 1 MiB/s, 4 MiB take (4 MiB - the burst) / 1 MiB/s of
// virtual time, and the wait is counted; downloads are not limited by the upload rate.
func TestUploadPacedByRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, reg := newLimited(t, memory.New(), limit.Config{UploadRate: mib})
		data := bytes.Repeat([]byte("x"), 4*mib)
		start := time.Now()
		require.NoError(t, b.Upload(t.Context(), ns, name, bytes.NewReader(data), int64(len(data))))
		want := time.Duration(float64(len(data)-burst) / mib * float64(time.Second))
		require.InDelta(t, want.Seconds(), time.Since(start).Seconds(), 0.01)
		require.InDelta(t, want.Seconds(), counter(t, reg, "krakenctl_backend_rate_wait_seconds_total", "direction", "upload"), 0.01)

		start = time.Now()
		require.NoError(t, b.Download(t.Context(), ns, name, io.Discard))
		require.Zero(t, time.Since(start), "download paced by the upload rate")
	})
}

// The download rate paces Download and leaves Upload alone.
func TestDownloadPacedByRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, reg := newLimited(t, memory.New(), limit.Config{DownloadRate: mib})
		data := bytes.Repeat([]byte("y"), 3*mib)
		start := time.Now()
		require.NoError(t, b.Upload(t.Context(), ns, name, bytes.NewReader(data), int64(len(data))))
		require.Zero(t, time.Since(start), "upload paced by the download rate")

		var got bytes.Buffer
		start = time.Now()
		require.NoError(t, b.Download(t.Context(), ns, name, &got))
		require.Equal(t, data, got.Bytes())
		want := time.Duration(float64(len(data)-burst) / mib * float64(time.Second))
		require.InDelta(t, want.Seconds(), time.Since(start).Seconds(), 0.01)
		require.Positive(t, counter(t, reg, "krakenctl_backend_rate_wait_seconds_total", "direction", "download"))
	})
}

// One bucket serves every request of the route: two uploads of 2 MiB at once take as long as
// one of 4 MiB, not as long as one of 2 MiB.
func TestRateSharedByRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := newLimited(t, memory.New(), limit.Config{UploadRate: mib})
		data := bytes.Repeat([]byte("z"), 2*mib)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				require.NoError(t, b.Upload(t.Context(), ns, fmt.Sprint(name, i), bytes.NewReader(data), int64(len(data))))
			})
		}
		wg.Wait()
		want := time.Duration(float64(2*len(data)-burst) / mib * float64(time.Second))
		require.InDelta(t, want.Seconds(), time.Since(start).Seconds(), 0.01)
	})
}

// A cancelled context ends a wait for bandwidth.
func TestRateWaitRespectsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := newLimited(t, memory.New(), limit.Config{UploadRate: mib})
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		data := bytes.Repeat([]byte("x"), 8*mib)
		err := b.Upload(ctx, ns, name, bytes.NewReader(data), int64(len(data)))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		_, err = b.Stat(t.Context(), ns, name)
		require.ErrorIs(t, err, backend.ErrNotFound, "a cut-short upload stored something")
	})
}

// blocking is a backend whose Stat waits for release, counting the calls in flight.
type blocking struct {
	backend.Backend
	entered chan struct{}
	release chan struct{}
}

func (b *blocking) Stat(ctx context.Context, _, _ string) (backend.Info, error) {
	b.entered <- struct{}{}
	select {
	case <-b.release:
		return backend.Info{Size: 1}, nil
	case <-ctx.Done():
		return backend.Info{}, ctx.Err()
	}
}

// blockingUploads blocks Upload the way blocking blocks Stat, and lets Stat through.
type blockingUploads struct {
	backend.Backend
	uploads chan struct{}
	release chan struct{}
}

func (b *blockingUploads) Upload(ctx context.Context, _, _ string, r io.Reader, _ int64) error {
	b.uploads <- struct{}{}
	_, _ = io.Copy(io.Discard, r)
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *blockingUploads) Stat(context.Context, string, string) (backend.Info, error) {
	return backend.Info{Size: 1}, nil
}

// Uploads hold at most Concurrency-1 of the slots: write-back workers as many as the slots
// leave one for the reads (pull-throughs) that clients wait on.
func TestUploadsLeaveASlotForReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inner := &blockingUploads{Backend: memory.New(), uploads: make(chan struct{}, 10), release: make(chan struct{})}
		b, _ := newLimited(t, inner, limit.Config{Concurrency: 3})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				require.NoError(t, b.Upload(t.Context(), ns, name, strings.NewReader("abc"), 3))
			})
		}
		synctest.Wait()
		require.Len(t, inner.uploads, 2, "uploads in flight with concurrency 3")
		_, err := b.Stat(t.Context(), ns, name) // would wait for an upload to end without the reserve
		require.NoError(t, err)
		close(inner.release)
		wg.Wait()
		require.Len(t, inner.uploads, 4)
	})
}

// With concurrency N, the N+1th request waits until one of the N ends, and a waiting request
// gives up when its context does.
func TestConcurrencyCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inner := &blocking{Backend: memory.New(), entered: make(chan struct{}, 10), release: make(chan struct{})}
		b, reg := newLimited(t, inner, limit.Config{Concurrency: 2})
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				_, err := b.Stat(t.Context(), ns, name)
				require.NoError(t, err)
			})
		}
		synctest.Wait()
		require.Len(t, inner.entered, 2, "requests in flight with concurrency 2")

		// A fourth request whose context ends while it waits never reaches the backend.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err := b.Stat(ctx, ns, name)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Len(t, inner.entered, 2)
		require.InDelta(t, 60, counter(t, reg, "krakenctl_backend_concurrency_wait_seconds_total", "op", "stat"), 0.001)

		<-inner.entered
		inner.release <- struct{}{} // one of the two ends...
		synctest.Wait()
		require.Len(t, inner.entered, 2, "the third request did not take the freed slot") // ...and the third enters
		close(inner.release)
		wg.Wait()
	})
}

// A throttled request is tried again after the store's Retry-After (longer than the backoff),
// and counted.
func TestRetryHonoursRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.stat = func(n int) error {
			if n == 0 {
				return throttled(3 * time.Second)
			}
			return nil
		}
		require.NoError(t, f.Backend.Upload(t.Context(), ns, name, strings.NewReader("abc"), 3))
		b, reg := newLimited(t, f, limit.Config{Retries: 3, RetryMin: 10 * time.Millisecond})
		info, err := b.Stat(t.Context(), ns, name)
		require.NoError(t, err)
		require.Equal(t, int64(3), info.Size)
		calls := f.times("stat")
		require.Len(t, calls, 2)
		require.Equal(t, 3*time.Second, calls[1].Sub(calls[0]))
		require.Equal(t, 1.0, counter(t, reg, "krakenctl_backend_throttled_total", "route", "r", "op", "stat"))
		require.Equal(t, 1.0, counter(t, reg, "krakenctl_backend_retries_total", "route", "r", "op", "stat"))
	})
}

// retry_max caps a store's Retry-After.
func TestRetryAfterCappedByRetryMax(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.stat = func(n int) error {
			if n == 0 {
				return throttled(time.Hour)
			}
			return nil
		}
		b, _ := newLimited(t, f, limit.Config{Retries: 1, RetryMin: time.Second, RetryMax: 5 * time.Second})
		_, err := b.Stat(t.Context(), ns, name)
		require.ErrorIs(t, err, backend.ErrNotFound) // the second answer
		require.ErrorContains(t, err, "(attempt 2)")
		calls := f.times("stat")
		require.Len(t, calls, 2)
		require.Equal(t, 5*time.Second, calls[1].Sub(calls[0]))
	})
}

// Without a Retry-After the waits grow exponentially with jitter in the upper half, up to
// retry_max; after the last retry the store's error is returned, saying how many attempts.
func TestBackoffGrowsUntilGivingUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.stat = func(int) error { return throttled(0) }
		b, reg := newLimited(t, f, limit.Config{Retries: 5, RetryMin: 100 * time.Millisecond, RetryMax: time.Second})
		_, err := b.Stat(t.Context(), ns, name)
		require.ErrorIs(t, err, backend.ErrThrottled)
		require.ErrorContains(t, err, "gave up after 6 attempts")
		calls := f.times("stat")
		require.Len(t, calls, 6)
		for i, full := range []time.Duration{100, 200, 400, 800, 1000} {
			full *= time.Millisecond
			gap := calls[i+1].Sub(calls[i])
			require.GreaterOrEqual(t, gap, full/2, "wait %d", i)
			require.LessOrEqual(t, gap, full, "wait %d", i)
		}
		require.Equal(t, 6.0, counter(t, reg, "krakenctl_backend_throttled_total", "op", "stat"))
		require.Equal(t, 5.0, counter(t, reg, "krakenctl_backend_retries_total", "op", "stat"))
	})
}

// Answers no retry can change are returned at once.
func TestNoRetry(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"not found", fmt.Errorf("fake: %w", backend.ErrNotFound)},
		{"read-only", fmt.Errorf("fake: %w", backend.ErrReadOnly)},
		{"invalid key", fmt.Errorf("fake: %w", backend.ErrInvalidKey)},
		{"no route", fmt.Errorf("fake: %w", backend.ErrNoRoute)},
		{"other", errors.New("fake: 500 Internal Server Error")},
		{"deadline", fmt.Errorf("fake: %w", context.DeadlineExceeded)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			f.stat = func(int) error { return tc.err }
			b, _ := newLimited(t, f, limit.Config{Retries: 5, RetryMin: time.Millisecond})
			_, err := b.Stat(t.Context(), ns, name)
			require.ErrorIs(t, err, tc.err)
			require.Len(t, f.times("stat"), 1)
		})
	}
}

// A cancelled context stops the retries, even of a throttled request.
func TestNoRetryAfterCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		ctx, cancel := context.WithCancel(t.Context())
		f.stat = func(int) error { cancel(); return throttled(0) }
		b, _ := newLimited(t, f, limit.Config{Retries: 5})
		_, err := b.Stat(ctx, ns, name)
		require.ErrorIs(t, err, backend.ErrThrottled)
		require.Len(t, f.times("stat"), 1)
	})
}

// A wait that would outlast the context's deadline is not started.
func TestNoRetryPastDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.stat = func(int) error { return throttled(10 * time.Second) }
		b, _ := newLimited(t, f, limit.Config{Retries: 5})
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := b.Stat(ctx, ns, name)
		require.ErrorIs(t, err, backend.ErrThrottled)
		require.ErrorContains(t, err, "deadline")
		require.Len(t, f.times("stat"), 1)
		require.Zero(t, time.Since(start))
	})
}

// readSome reads n bytes of r, as a backend does before the store refuses.
func readSome(r io.Reader, n int) error {
	_, err := io.ReadFull(r, make([]byte, n))
	return err
}

// nonSeeker hides a reader's Seek.
type nonSeeker struct{ io.Reader }

// An Upload whose reader was read from is retried only when it can be rewound: a seekable
// reader is sought back to where it stood (not to 0), and the stored object is whole.
func TestUploadRetryNeedsSeeker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		data := []byte("0123456789abcdef")
		throttleFirst := func(n int, r io.Reader) error {
			if n == 0 {
				if err := readSome(r, 4); err != nil {
					return err
				}
				return throttled(0)
			}
			return nil
		}

		f := newFake()
		f.upload = throttleFirst
		b, _ := newLimited(t, f, limit.Config{Retries: 3})
		err := b.Upload(t.Context(), ns, name, nonSeeker{bytes.NewReader(data)}, int64(len(data)))
		require.ErrorIs(t, err, backend.ErrThrottled)
		require.NotContains(t, err.Error(), "gave up", "the first error is returned as it was")
		require.Len(t, f.times("upload"), 1, "a non-seekable reader was retried")

		f = newFake()
		f.upload = throttleFirst
		b, _ = newLimited(t, f, limit.Config{Retries: 3})
		r := bytes.NewReader(append([]byte("skip"), data...))
		_, err = r.Seek(4, io.SeekStart)
		require.NoError(t, err)
		require.NoError(t, b.Upload(t.Context(), ns, name, r, int64(len(data))))
		require.Len(t, f.times("upload"), 2)
		got, ok := f.Peek(ns, name)
		require.True(t, ok)
		require.Equal(t, data, got)
	})
}

// A reader nothing was read from needs no rewinding: the refusal before the body is retried.
func TestUploadRetriedBeforeBodyWithoutSeeker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.upload = func(n int, _ io.Reader) error {
			if n == 0 {
				return throttled(0)
			}
			return nil
		}
		b, _ := newLimited(t, f, limit.Config{Retries: 1})
		require.NoError(t, b.Upload(t.Context(), ns, name, nonSeeker{strings.NewReader("abc")}, 3))
		got, _ := f.Peek(ns, name)
		require.Equal(t, "abc", string(got))
	})
}

// A Download that wrote to w is never retried; one that wrote nothing is.
func TestDownloadRetryOnlyBeforeWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			first   error
			written int
			calls   int
		}{
			{"throttled after bytes", throttled(0), 5, 1},
			{"reset after bytes", fmt.Errorf("read: %w", syscall.ECONNRESET), 5, 1},
			{"throttled before bytes", throttled(0), 0, 2},
			{"reset before bytes", fmt.Errorf("read: %w", syscall.ECONNRESET), 0, 2},
		} {
			f := newFake()
			require.NoError(t, f.Backend.Upload(t.Context(), ns, name, strings.NewReader("hello world"), 11))
			f.download = func(n int, w io.Writer) error {
				if n > 0 {
					return nil
				}
				if _, err := w.Write([]byte("hello world")[:tc.written]); err != nil {
					return err
				}
				return tc.first
			}
			b, _ := newLimited(t, f, limit.Config{Retries: 3})
			var got bytes.Buffer
			err := b.Download(t.Context(), ns, name, &got)
			require.Len(t, f.times("download"), tc.calls, tc.name)
			if tc.calls == 1 {
				require.ErrorIs(t, err, tc.first, tc.name)
			} else {
				require.NoError(t, err, tc.name)
				require.Equal(t, "hello world", got.String(), tc.name)
			}
		}
	})
}

// A connection reset is retried for a request that moved no object bytes, and not for an
// Upload whose body the store had started to take, even a seekable one.
func TestConnResetRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reset := &netError{syscall.ECONNRESET}
		f := newFake()
		f.stat = func(n int) error {
			if n == 0 {
				return fmt.Errorf("HEAD: %w", reset)
			}
			return nil
		}
		f.upload = func(_ int, r io.Reader) error {
			if err := readSome(r, 2); err != nil {
				return err
			}
			return fmt.Errorf("PUT: %w", reset)
		}
		b, _ := newLimited(t, f, limit.Config{Retries: 3})
		_, err := b.Stat(t.Context(), ns, name)
		require.ErrorIs(t, err, backend.ErrNotFound)
		require.Len(t, f.times("stat"), 2)

		err = b.Upload(t.Context(), ns, name, strings.NewReader("abcdef"), 6)
		require.ErrorIs(t, err, syscall.ECONNRESET)
		require.Len(t, f.times("upload"), 1)
	})
}

type netError struct{ err error }

func (e *netError) Error() string { return "read tcp 127.0.0.1:1->127.0.0.1:2: " + e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

// The wrapper passes the optional interfaces through.
func TestDelegates(t *testing.T) {
	inner := memory.New()
	b, _ := newLimited(t, inner, limit.Config{Concurrency: 1})
	require.Same(t, backend.Backend(inner), b.Unwrap())
	require.NoError(t, backend.CheckWrite(b, ns))
	require.NoError(t, b.Upload(t.Context(), ns, name, strings.NewReader("x"), 1))
	require.NoError(t, backend.Delete(t.Context(), b, ns, name))
	require.ErrorIs(t, backend.Delete(t.Context(), b, ns, name), backend.ErrNotFound)

	ro, _ := newLimited(t, readOnly{inner}, limit.Config{})
	require.ErrorIs(t, backend.CheckWrite(ro, ns), backend.ErrReadOnly)
	require.ErrorIs(t, backend.Delete(t.Context(), ro, ns, name), errors.ErrUnsupported)
}

type readOnly struct{ backend.Backend }

func (readOnly) CheckWrite(string) error { return backend.ErrReadOnly }

// Two routes in one registry share the metric vectors.
func TestMetricsShared(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, route := range []string{"a", "b"} {
		f := newFake()
		f.stat = func(int) error { return throttled(0) }
		b, err := limit.New(f, limit.Config{}, limit.Deps{Route: route, Registerer: reg})
		require.NoError(t, err)
		_, err = b.Stat(t.Context(), ns, name)
		require.ErrorIs(t, err, backend.ErrThrottled)
	}
	require.Equal(t, 1.0, counter(t, reg, "krakenctl_backend_throttled_total", "route", "a"))
	require.Equal(t, 1.0, counter(t, reg, "krakenctl_backend_throttled_total", "route", "b"))
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  limit.Config
		want string
	}{
		{limit.Config{UploadRate: -1}, "upload_rate:"},
		{limit.Config{DownloadRate: -1}, "download_rate:"},
		{limit.Config{Concurrency: -1}, "concurrency:"},
		{limit.Config{Retries: -1}, "retries:"},
		{limit.Config{Retries: limit.MaxRetries + 1}, "retries:"},
		{limit.Config{RetryMin: -time.Second}, "retry_min:"},
		{limit.Config{RetryMin: time.Minute, RetryMax: time.Second}, "retry_max:"},
	} {
		_, err := limit.New(memory.New(), tc.cfg, limit.Deps{})
		require.ErrorContains(t, err, tc.want)
	}
	c := limit.Config{RetryMin: time.Minute}
	c.Defaults()
	require.Equal(t, time.Minute, c.RetryMax, "a retry_min above the default retry_max raises it")
	require.NoError(t, c.Validate())
}
