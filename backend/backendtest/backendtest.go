// Package backendtest is the conformance suite every backend.Backend implementation passes.
//
// A writable implementation calls Run from its tests:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T) backend.Backend {
//			b, err := fs.New(fs.Config{Root: t.TempDir()})
//			require.NoError(t, err)
//			return b
//		})
//	}
//
// A read-only implementation (an upstream registry, an HTTP server that refuses PUT), whose
// Upload returns an error wrapping backend.ErrReadOnly, calls RunReadOnly with a Seed that puts
// objects into the storage behind it out of band.
//
// Every subtest runs in parallel with the others and works in namespaces of its own under a
// random per-run prefix ("conformance-<hex>/..."), so newBackend may return clients of one
// shared server or bucket, including one that already holds objects from earlier runs.
// newBackend and Seed must therefore be safe to call from several goroutines at once.
//
// A backend that cannot enumerate objects returns an error wrapping errors.ErrUnsupported from
// List; the suite then skips its listing checks.
package backendtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/backend"
)

// LargeSize is the size of the suite's large object: more than two 5 MiB parts, so S3
// multipart uploads with the minimum part size use three parts, the last one short.
const LargeSize = 12<<20 + 12345

// Seed stores data as the object (namespace, name) in the storage a read-only backend reads
// from, failing t on error. The suite only seeds names that are the lower-case hex SHA-256 of
// data, so content-addressed stores such as registries can hold them.
type Seed func(t *testing.T, namespace, name string, data []byte)

// Run runs the conformance suite for a writable backend. newBackend is called once per
// subtest and returns a ready backend; it registers any cleanup with t.
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	t.Helper()
	s := &suite{newBackend: newBackend, run: newRunID()}
	cases := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"Missing", s.testMissing},
		{"RoundTrip", s.testRoundTrip},
		{"Overwrite", s.testOverwrite},
		{"Empty", s.testEmpty},
		{"Large", s.testLarge},
		{"UnknownSize", s.testUnknownSize},
		{"SizeMismatch", s.testSizeMismatch},
		{"List", s.testList},
		{"Namespaces", s.testNamespaces},
		{"Concurrent", s.testConcurrent},
		{"ConcurrentOverwrite", s.testConcurrentOverwrite},
		{"CancelledContext", s.testCancelled},
		{"CancelDuringUpload", s.testCancelDuringUpload},
		{"CancelDuringDownload", s.testCancelDuringDownload},
		{"FailingReader", s.testFailingReader},
		{"InvalidKeys", s.testInvalidKeys},
		{"Delete", s.testDelete},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t)
		})
	}
}

// RunReadOnly runs the conformance suite for a backend whose Upload always fails with an error
// wrapping backend.ErrReadOnly. seed places objects behind the backends newBackend returns;
// it is called before the objects are read, possibly after newBackend.
func RunReadOnly(t *testing.T, newBackend func(t *testing.T) backend.Backend, seed Seed) {
	t.Helper()
	require.NotNil(t, seed, "RunReadOnly needs a Seed")
	s := &suite{newBackend: newBackend, seed: seed, run: newRunID()}
	cases := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"Missing", s.testMissing},
		{"Seeded", s.testSeeded},
		{"UploadRejected", s.testUploadRejected},
		{"List", s.testListSeeded},
		{"Namespaces", s.testNamespacesSeeded},
		{"ConcurrentDownloads", s.testConcurrentDownloads},
		{"CancelledContext", s.testCancelled},
		{"CancelDuringDownload", s.testCancelDuringDownload},
		{"InvalidKeys", s.testInvalidKeys},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t)
		})
	}
}

type suite struct {
	newBackend func(t *testing.T) backend.Backend
	seed       Seed // nil for writable backends
	run        string
}

func newRunID() string {
	var b [6]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return hex.EncodeToString(b[:])
}

// ns returns a namespace private to this run of the suite: "conformance-<run>/<parts...>".
func (s *suite) ns(parts ...string) string {
	return "conformance-" + s.run + "/" + strings.Join(parts, "/")
}

func (s *suite) readOnly() bool { return s.seed != nil }

// put stores data as (ns, name): by Upload for writable backends, by Seed otherwise.
func (s *suite) put(t *testing.T, b backend.Backend, ns, name string, data []byte) {
	t.Helper()
	if s.readOnly() {
		s.seed(t, ns, name, data)
		return
	}
	require.NoError(t, b.Upload(t.Context(), ns, name, bytes.NewReader(data), int64(len(data))), "upload %s/%s", ns, name)
}

// object returns n pseudo-random bytes derived from seed and a name for them: the hex SHA-256
// of the bytes, valid for every backend including content-addressed ones.
func object(seed uint64, n int) (name string, data []byte) {
	data = make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	return digestHex(data), data
}

func digestHex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// requireObject asserts that (ns, name) holds exactly want, through both Stat and Download.
func requireObject(t *testing.T, b backend.Backend, ns, name string, want []byte) {
	t.Helper()
	info, err := b.Stat(t.Context(), ns, name)
	require.NoError(t, err, "stat %s/%s", ns, name)
	require.Equal(t, int64(len(want)), info.Size, "stat %s/%s: size", ns, name)
	var buf bytes.Buffer
	require.NoError(t, b.Download(t.Context(), ns, name, &buf), "download %s/%s", ns, name)
	requireBytes(t, want, buf.Bytes(), "download %s/%s", ns, name)
}

// requireBytes compares possibly large byte slices without dumping them on failure.
func requireBytes(t *testing.T, want, got []byte, msgAndArgs ...any) {
	t.Helper()
	if bytes.Equal(want, got) {
		return
	}
	msg := ""
	if len(msgAndArgs) > 0 {
		msg = fmt.Sprintf(msgAndArgs[0].(string), msgAndArgs[1:]...) + ": "
	}
	first := 0
	for first < len(want) && first < len(got) && want[first] == got[first] {
		first++
	}
	t.Fatalf("%sgot %d bytes (sha256 %s), want %d bytes (sha256 %s); first difference at offset %d",
		msg, len(got), digestHex(got), len(want), digestHex(want), first)
}

func requireNotFound(t *testing.T, b backend.Backend, ns, name string) {
	t.Helper()
	_, err := b.Stat(t.Context(), ns, name)
	require.ErrorIs(t, err, backend.ErrNotFound, "stat %s/%s", ns, name)
	var buf bytes.Buffer
	err = b.Download(t.Context(), ns, name, &buf)
	require.ErrorIs(t, err, backend.ErrNotFound, "download %s/%s", ns, name)
	require.Zero(t, buf.Len(), "download %s/%s of a missing object wrote to w", ns, name)
}

// list calls List and skips the test when the backend cannot enumerate objects.
func list(t *testing.T, b backend.Backend, ns, prefix string) []string {
	t.Helper()
	names, err := b.List(t.Context(), ns, prefix)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skipf("backend does not support List: %v", err)
	}
	require.NoError(t, err, "list %s prefix %q", ns, prefix)
	return names
}

// opaque hides every method but Read, so backends cannot learn the size by seeking.
type opaque struct{ r io.Reader }

func (o opaque) Read(p []byte) (int, error) { return o.r.Read(p) }

func (s *suite) testMissing(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("missing")
	requireNotFound(t, b, ns, "absent")
	// A namespace that exists but lacks the name.
	name, data := object(1, 100)
	s.put(t, b, ns, name, data)
	requireNotFound(t, b, ns, "absent")
	requireNotFound(t, b, ns, name[:10])
	requireNotFound(t, b, s.ns("missing", "deeper"), name)
}

func (s *suite) testRoundTrip(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("roundtrip")
	// A writable backend never tells an origin that a push cannot be written back.
	require.NoError(t, backend.CheckWrite(b, ns))
	for i, n := range []int{1, 100, 32<<10 + 1} {
		name, data := object(uint64(10+i), n)
		s.put(t, b, ns, name, data)
		requireObject(t, b, ns, name, data)
	}
	// Names need not be digests.
	for _, name := range []string{"a", "blob.tar", "A_b-c.d", ".hidden", "x..y"} {
		data := []byte("object " + name)
		s.put(t, b, ns, name, data)
		requireObject(t, b, ns, name, data)
	}
}

func (s *suite) testOverwrite(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("overwrite")
	_, long := object(20, 5000)
	_, short := object(21, 10)
	_, longer := object(22, 70000)
	for _, data := range [][]byte{long, short, longer} {
		s.put(t, b, ns, "obj", data)
		requireObject(t, b, ns, "obj", data)
	}
	require.Equal(t, []string{"obj"}, list(t, b, ns, ""), "overwrites must not leave extra objects")
}

func (s *suite) testEmpty(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("empty")
	s.put(t, b, ns, "known", nil)
	requireObject(t, b, ns, "known", nil)
	require.NoError(t, b.Upload(t.Context(), ns, "unknown", opaque{bytes.NewReader(nil)}, -1))
	requireObject(t, b, ns, "unknown", nil)
	// Emptying an existing object.
	s.put(t, b, ns, "emptied", []byte("not empty yet"))
	s.put(t, b, ns, "emptied", nil)
	requireObject(t, b, ns, "emptied", nil)
}

func (s *suite) testLarge(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("large")
	name, data := object(30, LargeSize)
	s.put(t, b, ns, name, data)
	requireObject(t, b, ns, name, data)
	// The same with an unknown size and a reader that cannot seek.
	require.NoError(t, b.Upload(t.Context(), ns, "unknown-size", opaque{bytes.NewReader(data)}, -1))
	requireObject(t, b, ns, "unknown-size", data)
}

func (s *suite) testUnknownSize(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("unknown-size")
	for i, n := range []int{1, 4097, 1 << 20} {
		name, data := object(uint64(40+i), n)
		require.NoError(t, b.Upload(t.Context(), ns, name, opaque{bytes.NewReader(data)}, -1))
		requireObject(t, b, ns, name, data)
	}
}

func (s *suite) testSizeMismatch(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("size-mismatch")
	_, prev := object(50, 3000)
	s.put(t, b, ns, "obj", prev)
	_, data := object(51, 1000)
	for _, size := range []int64{999, 1001, 0} {
		err := b.Upload(t.Context(), ns, "obj", opaque{bytes.NewReader(data)}, size)
		require.Error(t, err, "upload of %d bytes declared as %d must fail", len(data), size)
		requireObject(t, b, ns, "obj", prev)
		err = b.Upload(t.Context(), ns, "fresh", opaque{bytes.NewReader(data)}, size)
		require.Error(t, err, "upload of %d bytes declared as %d must fail", len(data), size)
		requireNotFound(t, b, ns, "fresh")
	}
}

func (s *suite) testList(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("list")
	require.Empty(t, list(t, b, ns, ""), "unused namespace")
	names := []string{"c2", "b", "c10", "a", "c1", "d", "C0", "c"}
	for _, n := range names {
		s.put(t, b, ns, n, []byte(n))
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	require.Equal(t, sorted, list(t, b, ns, ""))
	require.Equal(t, []string{"c", "c1", "c10", "c2"}, list(t, b, ns, "c"))
	require.Equal(t, []string{"c1", "c10"}, list(t, b, ns, "c1"))
	require.Equal(t, []string{"c10"}, list(t, b, ns, "c10"))
	require.Empty(t, list(t, b, ns, "c100"))
	require.Empty(t, list(t, b, ns, "zz"))
	// Objects in nested or sibling namespaces are not part of this one.
	s.put(t, b, s.ns("list", "nested"), "e", []byte("e"))
	s.put(t, b, s.ns("list-sibling"), "f", []byte("f"))
	s.put(t, b, s.ns("lis"), "g", []byte("g"))
	require.Equal(t, sorted, list(t, b, ns, ""))
	require.Equal(t, []string{"e"}, list(t, b, s.ns("list", "nested"), ""))
	require.Empty(t, list(t, b, s.ns("list", "never-used"), ""))
	// A prefix that no name can have matches nothing, and never escapes the namespace.
	for _, p := range []string{"../", "/", "nested/", "nested/e"} {
		got, err := b.List(t.Context(), ns, p)
		if err != nil {
			require.ErrorIs(t, err, backend.ErrInvalidKey, "list prefix %q", p)
			continue
		}
		require.Empty(t, got, "list prefix %q", p)
	}
}

func (s *suite) testNamespaces(t *testing.T) {
	b := s.newBackend(t)
	// Object "ubuntu" in "library" and namespace "library/ubuntu" must not collide, nor
	// must namespaces that only differ by their separators.
	objects := []struct{ ns, name string }{
		{s.ns("library"), "ubuntu"},
		{s.ns("library", "ubuntu"), "ubuntu"},
		{s.ns("library", "ubuntu"), "x"},
		{s.ns("library"), "x"},
		{s.ns("library-ubuntu"), "x"},
		{s.ns("library_ubuntu"), "x"},
		{s.ns("library.ubuntu"), "x"},
		{s.ns("library", "ubuntu", "x"), "x"},
	}
	for _, o := range objects {
		s.put(t, b, o.ns, o.name, []byte(o.ns+" "+o.name))
	}
	for _, o := range objects {
		requireObject(t, b, o.ns, o.name, []byte(o.ns+" "+o.name))
	}
	require.Equal(t, []string{"ubuntu", "x"}, list(t, b, s.ns("library"), ""))
	require.Equal(t, []string{"ubuntu", "x"}, list(t, b, s.ns("library", "ubuntu"), ""))
	require.Equal(t, []string{"x"}, list(t, b, s.ns("library", "ubuntu", "x"), ""))
	requireNotFound(t, b, s.ns("library", "ubuntu", "x", "x"), "x")
}

func (s *suite) testConcurrent(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("concurrent")
	var g errgroup.Group
	for i := range 8 {
		g.Go(func() error {
			name, data := object(uint64(100+i), 64<<10+i)
			if err := b.Upload(t.Context(), ns, name, bytes.NewReader(data), int64(len(data))); err != nil {
				return fmt.Errorf("upload %d: %w", i, err)
			}
			for range 3 {
				var buf bytes.Buffer
				if err := b.Download(t.Context(), ns, name, &buf); err != nil {
					return fmt.Errorf("download %d: %w", i, err)
				}
				if !bytes.Equal(buf.Bytes(), data) {
					return fmt.Errorf("download %d: got %d bytes, want %d, content differs", i, buf.Len(), len(data))
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	require.Len(t, list(t, b, ns, ""), 8)
}

func (s *suite) testConcurrentOverwrite(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("concurrent-overwrite")
	versions := make(map[string]bool)
	var datas [][]byte
	for i := range 4 {
		_, data := object(uint64(200+i), 100<<10*(i+1))
		versions[string(data)] = true
		datas = append(datas, data)
	}
	s.put(t, b, ns, "obj", datas[0])
	var g errgroup.Group
	for i, data := range datas {
		g.Go(func() error {
			for range 3 {
				if err := b.Upload(t.Context(), ns, "obj", bytes.NewReader(data), int64(len(data))); err != nil {
					return fmt.Errorf("upload version %d: %w", i, err)
				}
			}
			return nil
		})
		g.Go(func() error {
			for range 5 {
				var buf bytes.Buffer
				if err := b.Download(t.Context(), ns, "obj", &buf); err != nil {
					return fmt.Errorf("download: %w", err)
				}
				if !versions[buf.String()] {
					return fmt.Errorf("download returned %d bytes that are none of the uploaded versions (a partial or mixed object)", buf.Len())
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	var buf bytes.Buffer
	require.NoError(t, b.Download(t.Context(), ns, "obj", &buf))
	require.True(t, versions[buf.String()], "final object is none of the uploaded versions")
	info, err := b.Stat(t.Context(), ns, "obj")
	require.NoError(t, err)
	require.Equal(t, int64(buf.Len()), info.Size)
}

func (s *suite) testCancelled(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("cancelled")
	name, data := object(300, 1000)
	s.put(t, b, ns, name, data)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := b.Stat(ctx, ns, name)
	require.ErrorIs(t, err, context.Canceled, "stat")
	var buf bytes.Buffer
	require.ErrorIs(t, b.Download(ctx, ns, name, &buf), context.Canceled, "download")
	_, err = b.List(ctx, ns, "")
	if !errors.Is(err, errors.ErrUnsupported) {
		require.ErrorIs(t, err, context.Canceled, "list")
	}
	if !s.readOnly() {
		_, other := object(301, 500)
		require.ErrorIs(t, b.Upload(ctx, ns, name, bytes.NewReader(other), int64(len(other))), context.Canceled, "upload")
		require.ErrorIs(t, b.Upload(ctx, ns, "new", bytes.NewReader(other), int64(len(other))), context.Canceled, "upload")
		requireNotFound(t, b, ns, "new")
	}
	requireObject(t, b, ns, name, data)
}

// endless yields pseudo-random bytes forever, cancels its context after cancelAfter bytes and
// fails once limit bytes have been read, so a backend that ignores cancellation fails the test
// instead of hanging it.
type endless struct {
	cancel      context.CancelFunc
	cancelAfter int64
	limit       int64
	read        int64
}

var errNotAbandoned = errors.New("backendtest: Upload kept reading long after its context was cancelled")

func (e *endless) Read(p []byte) (int, error) {
	if e.read >= e.limit {
		return 0, errNotAbandoned
	}
	n := int64(len(p))
	n = min(n, e.limit-e.read)
	for i := range p[:n] {
		p[i] = byte(e.read + int64(i))
	}
	e.read += n
	if e.read >= e.cancelAfter {
		e.cancel()
	}
	return int(n), nil
}

func (s *suite) testCancelDuringUpload(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("cancel-upload")
	name, data := object(310, 2000)
	s.put(t, b, ns, name, data)
	const limit = 128 << 20
	upload := func(name string, size int64) error {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		err := b.Upload(ctx, ns, name, &endless{cancel: cancel, cancelAfter: 256 << 10, limit: limit}, size)
		require.NotErrorIs(t, err, errNotAbandoned)
		return err
	}
	for _, size := range []int64{-1, limit} {
		require.ErrorIs(t, upload(name, size), context.Canceled, "upload with size %d", size)
		requireObject(t, b, ns, name, data)
		require.ErrorIs(t, upload("new", size), context.Canceled, "upload with size %d", size)
		requireNotFound(t, b, ns, "new")
	}
}

// cancellingWriter cancels its context on the first Write and counts what it receives.
type cancellingWriter struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	n      int
}

func (w *cancellingWriter) Write(p []byte) (int, error) {
	w.cancel()
	w.mu.Lock()
	w.n += len(p)
	w.mu.Unlock()
	return len(p), nil
}

func (s *suite) testCancelDuringDownload(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("cancel-download")
	name, data := object(320, LargeSize)
	s.put(t, b, ns, name, data)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := &cancellingWriter{cancel: cancel}
	err := b.Download(ctx, ns, name, w)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		// Allowed only if the whole object had already been handed over.
		require.Equal(t, len(data), w.n, "download returned nil after its context was cancelled without writing the whole object")
		return
	}
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, backend.ErrNotFound)
}

// failingReader yields n bytes of data and then fails with errBroken.
type failingReader struct {
	data []byte
	n    int
}

var errBroken = errors.New("backendtest: broken reader")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errBroken
	}
	k := copy(p, f.data[:min(f.n, len(f.data))])
	f.data = f.data[k:]
	f.n -= k
	return k, nil
}

func (s *suite) testFailingReader(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("failing-reader")
	name, prev := object(400, 3000)
	s.put(t, b, ns, name, prev)
	_, data := object(401, 7<<20)
	for _, n := range []int{0, 100 << 10, 6 << 20} {
		for _, size := range []int64{-1, int64(len(data))} {
			err := b.Upload(t.Context(), ns, name, &failingReader{data: data, n: n}, size)
			require.ErrorIs(t, err, errBroken, "upload failing after %d bytes, size %d", n, size)
			requireObject(t, b, ns, name, prev)
			err = b.Upload(t.Context(), ns, "new", &failingReader{data: data, n: n}, size)
			require.ErrorIs(t, err, errBroken, "upload failing after %d bytes, size %d", n, size)
			requireNotFound(t, b, ns, "new")
		}
	}
	require.Equal(t, []string{name}, list(t, b, ns, ""), "failed uploads must leave nothing behind")
}

// InvalidNamespaces are namespaces every backend rejects with backend.ErrInvalidKey.
var InvalidNamespaces = []string{
	"", "/", "..", "../x", "x/..", "x/../y", "/abs", "abs/", "a//b", "./a", "a/.", "a\\b",
	"..\\x", "A", "a b", "a\x00b", "a\nb", "-a", "a-", "a..b", strings.Repeat("a", 256),
}

// InvalidNames are object names every backend rejects with backend.ErrInvalidKey.
var InvalidNames = []string{
	"", ".", "..", "a/b", "../x", "/x", "x/", "a\\b", "..\\x", "a b", "a\x00", "a\n",
	"ü", strings.Repeat("a", 256),
}

func (s *suite) testInvalidKeys(t *testing.T) {
	b := s.newBackend(t)
	good := s.ns("invalid")
	name, data := object(500, 100)
	s.put(t, b, good, name, data)

	check := func(ns, name string) {
		t.Helper()
		_, err := b.Stat(t.Context(), ns, name)
		require.ErrorIs(t, err, backend.ErrInvalidKey, "stat %q %q", ns, name)
		var buf bytes.Buffer
		require.ErrorIs(t, b.Download(t.Context(), ns, name, &buf), backend.ErrInvalidKey, "download %q %q", ns, name)
		require.Zero(t, buf.Len())
		err = b.Upload(t.Context(), ns, name, bytes.NewReader([]byte("evil")), 4)
		require.Error(t, err, "upload %q %q", ns, name)
		if !errors.Is(err, backend.ErrReadOnly) {
			require.ErrorIs(t, err, backend.ErrInvalidKey, "upload %q %q", ns, name)
		}
	}
	for _, ns := range InvalidNamespaces {
		check(ns, "x")
		_, err := b.List(t.Context(), ns, "")
		require.ErrorIs(t, err, backend.ErrInvalidKey, "list %q", ns)
	}
	for _, n := range InvalidNames {
		check(good, n)
	}
	// Nothing was stored next to or above the good namespace.
	requireObject(t, b, good, name, data)
	names, err := b.List(t.Context(), good, "")
	if !errors.Is(err, errors.ErrUnsupported) {
		require.NoError(t, err)
		require.Equal(t, []string{name}, names)
	}
	for _, ns := range []string{s.ns("invalid", "x"), s.ns("x"), "x", "conformance-" + s.run} {
		names, err := b.List(t.Context(), ns, "")
		if errors.Is(err, errors.ErrUnsupported) {
			break
		}
		require.NoError(t, err)
		require.Empty(t, names, "list %q", ns)
	}
}

// Read-only tests.

func (s *suite) testSeeded(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("seeded")
	for i, n := range []int{0, 1, 100, 32<<10 + 1, LargeSize} {
		name, data := object(uint64(600+i), n)
		s.seed(t, ns, name, data)
		requireObject(t, b, ns, name, data)
	}
}

func (s *suite) testUploadRejected(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("upload-rejected")
	// A backend that knows it is read-only (WriteChecker) says so with ErrReadOnly; one that
	// only finds out by trying (an HTTP server refusing PUT) may say nil.
	if err := backend.CheckWrite(b, ns); err != nil {
		require.ErrorIs(t, err, backend.ErrReadOnly)
	}
	name, data := object(700, 1000)
	s.seed(t, ns, name, data)
	_, other := object(701, 500)
	for _, size := range []int64{int64(len(other)), -1} {
		err := b.Upload(t.Context(), ns, name, bytes.NewReader(other), size)
		require.ErrorIs(t, err, backend.ErrReadOnly)
		newName := digestHex(other)
		err = b.Upload(t.Context(), ns, newName, bytes.NewReader(other), size)
		require.ErrorIs(t, err, backend.ErrReadOnly)
		requireNotFound(t, b, ns, newName)
	}
	requireObject(t, b, ns, name, data)
}

func (s *suite) testListSeeded(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("list")
	require.Empty(t, list(t, b, ns, ""), "unused namespace")
	var names []string
	for i := range 5 {
		name, data := object(uint64(800+i), 10+i)
		s.seed(t, ns, name, data)
		names = append(names, name)
	}
	slices.Sort(names)
	require.Equal(t, names, list(t, b, ns, ""))
	p := names[2][:3]
	var want []string
	for _, n := range names {
		if strings.HasPrefix(n, p) {
			want = append(want, n)
		}
	}
	require.Equal(t, want, list(t, b, ns, p))
	require.Equal(t, names[1:2], list(t, b, ns, names[1]))
	require.Empty(t, list(t, b, ns, "zz"))
	require.Empty(t, list(t, b, s.ns("list", "never-used"), ""))
}

func (s *suite) testNamespacesSeeded(t *testing.T) {
	b := s.newBackend(t)
	type obj struct {
		ns, name string
		data     []byte
	}
	var objs []obj
	for i, ns := range []string{s.ns("library"), s.ns("library", "ubuntu"), s.ns("library-ubuntu")} {
		name, data := object(uint64(900+i), 200+i)
		s.seed(t, ns, name, data)
		objs = append(objs, obj{ns, name, data})
	}
	for _, o := range objs {
		requireObject(t, b, o.ns, o.name, o.data)
	}
}

func (s *suite) testConcurrentDownloads(t *testing.T) {
	b := s.newBackend(t)
	ns := s.ns("concurrent")
	type obj struct {
		name string
		data []byte
	}
	var objs []obj
	for i := range 4 {
		name, data := object(uint64(1000+i), 128<<10+i)
		s.seed(t, ns, name, data)
		objs = append(objs, obj{name, data})
	}
	var g errgroup.Group
	for i := range 8 {
		o := objs[i%len(objs)]
		g.Go(func() error {
			var buf bytes.Buffer
			if err := b.Download(t.Context(), ns, o.name, &buf); err != nil {
				return fmt.Errorf("download %s: %w", o.name, err)
			}
			if !bytes.Equal(buf.Bytes(), o.data) {
				return fmt.Errorf("download %s: got %d bytes, want %d, content differs", o.name, buf.Len(), len(o.data))
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
}
