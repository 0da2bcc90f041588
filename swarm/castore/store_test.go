package castore_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/swarm/castore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeBenchFile()
		os.Exit(code)
	}))
}

func blobData(seed uint64, n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, ^seed))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func openStore(t *testing.T, dir string, opts castore.Options) *castore.Store {
	t.Helper()
	s, err := castore.Open(dir, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func ingest(t *testing.T, s *castore.Store, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	info, err := s.Ingest(t.Context(), d, bytes.NewReader(data))
	require.NoError(t, err)
	require.Equal(t, d, info.Digest)
	require.Equal(t, int64(len(data)), info.Size)
	return d
}

func readBlob(t *testing.T, s *castore.Store, d digest.Digest) []byte {
	t.Helper()
	b, err := s.Open(t.Context(), d)
	require.NoError(t, err)
	defer func() { require.NoError(t, b.Close()) }()
	data, err := io.ReadAll(b)
	require.NoError(t, err)
	return data
}

// dirNames lists the names in dir, so tests can check that no temporary file is left.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// failingReader fails the test if anything reads it.
type failingReader struct{ t *testing.T }

func (r failingReader) Read([]byte) (int, error) {
	r.t.Error("the reader was read")
	return 0, io.ErrUnexpectedEOF
}

func TestIngestAndRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(1, 3<<20+17)
	d := ingest(t, s, data)

	info, err := s.Stat(d)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), info.Size)
	require.FileExists(t, filepath.Join(dir, "blobs", "sha256", d.Encoded()))

	require.Equal(t, data, readBlob(t, s, d))
	b, err := s.Open(t.Context(), d)
	require.NoError(t, err)
	require.Equal(t, d, b.Digest())
	require.Equal(t, int64(len(data)), b.Size())
	buf := make([]byte, 100)
	_, err = b.ReadAt(buf, 1<<20)
	require.NoError(t, err)
	require.Equal(t, data[1<<20:1<<20+100], buf)
	_, err = b.Seek(-10, io.SeekEnd)
	require.NoError(t, err)
	tail, err := io.ReadAll(b)
	require.NoError(t, err)
	require.Equal(t, data[len(data)-10:], tail)
	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "Close is idempotent")

	// Already stored: the reader is not read.
	info, err = s.Ingest(t.Context(), d, failingReader{t})
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), info.Size)

	used, capacity := s.Usage()
	require.Equal(t, int64(len(data)), used)
	require.Zero(t, capacity)
	require.Equal(t, []castore.Info{info}, []castore.Info{s.List()[0]})
	require.Len(t, s.List(), 1)
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))

	empty := ingest(t, s, nil)
	require.Empty(t, readBlob(t, s, empty))

	_, err = s.Stat(digest.FromString("missing"))
	require.ErrorIs(t, err, castore.ErrNotFound)
	_, err = s.Open(t.Context(), digest.FromString("missing"))
	require.ErrorIs(t, err, castore.ErrNotFound)
}

func TestIngestSHA512(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(2, 1000)
	sum := sha512.Sum512(data)
	d := digest.NewDigestFromEncoded(digest.SHA512, hex.EncodeToString(sum[:]))
	_, err := s.Ingest(t.Context(), d, bytes.NewReader(data))
	require.NoError(t, err)
	require.Equal(t, data, readBlob(t, s, d))
	require.FileExists(t, filepath.Join(dir, "blobs", "sha512", d.Encoded()))
}

func TestIngestDigestMismatchLeavesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	s := openStore(t, dir, castore.Options{Registerer: reg})
	kept := blobData(3, 5000)
	keptD := ingest(t, s, kept)
	usedBefore, _ := s.Usage()

	wrong := digest.FromString("something else")
	_, err := s.Ingest(t.Context(), wrong, bytes.NewReader(blobData(4, 5000)))
	require.ErrorIs(t, err, castore.ErrDigestMismatch)

	_, err = s.Stat(wrong)
	require.ErrorIs(t, err, castore.ErrNotFound)
	require.NoFileExists(t, filepath.Join(dir, "blobs", "sha256", wrong.Encoded()))
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))
	require.Equal(t, []string{keptD.Encoded()}, dirNames(t, filepath.Join(dir, "blobs", "sha256")))
	used, _ := s.Usage()
	require.Equal(t, usedBefore, used)
	require.Equal(t, kept, readBlob(t, s, keptD))
	require.Equal(t, 1.0, metricValue(t, reg, "krakenctl_castore_digest_mismatches_total"))
}

func TestIngestInvalidDigest(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	for _, d := range []digest.Digest{"", "sha256:xyz", "sha256:" + digest.Digest(bytes.Repeat([]byte("A"), 64)),
		"md5:d41d8cd98f00b204e9800998ecf8427e", "sha256", "../../etc/passwd"} {
		_, err := s.Ingest(t.Context(), d, failingReader{t})
		require.ErrorIs(t, err, castore.ErrInvalidDigest, "digest %q", d)
	}
}

func TestIngestReadErrorAndCancel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(5, 3<<20)
	d := digest.FromBytes(data)

	boom := errors.New("boom")
	r := io.MultiReader(bytes.NewReader(data[:2<<20]), iotest.ErrReader(boom))
	_, err := s.Ingest(t.Context(), d, r)
	require.ErrorIs(t, err, boom)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = s.Ingest(ctx, d, bytes.NewReader(data))
	require.ErrorIs(t, err, context.Canceled)

	_, err = s.Stat(d)
	require.ErrorIs(t, err, castore.ErrNotFound)
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))
	require.Empty(t, dirNames(t, filepath.Join(dir, "blobs", "sha256")))
}

func TestConcurrentIngestOfOneDigest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(6, 1<<20)
	d := digest.FromBytes(data)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = s.Ingest(t.Context(), d, iotest.HalfReader(bytes.NewReader(data)))
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	used, _ := s.Usage()
	require.Equal(t, int64(len(data)), used)
	require.Len(t, s.List(), 1)
	require.Equal(t, data, readBlob(t, s, d))
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))
}

// TestReaderNeverSeesPartialBlob ingests blobs while readers poll for them: whatever a reader
// finds must be complete and correct, with the size Stat reported.
func TestReaderNeverSeesPartialBlob(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	const n = 12
	blobs := make([][]byte, n)
	digests := make([]digest.Digest, n)
	for i := range blobs {
		blobs[i] = blobData(uint64(100+i), 1<<20+i)
		digests[i] = digest.FromBytes(blobs[i])
	}
	done := make(chan struct{})
	var writers, readers sync.WaitGroup
	for i := range blobs {
		writers.Go(func() {
			// Small reads widen the window in which the blob is half written.
			_, err := s.Ingest(context.Background(), digests[i], smallReads{bytes.NewReader(blobs[i])})
			if err != nil {
				t.Errorf("ingest %d: %v", i, err)
			}
		})
	}
	for range 3 {
		readers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				for i, d := range digests {
					info, err := s.Stat(d)
					if errors.Is(err, castore.ErrNotFound) {
						continue
					}
					if err != nil || info.Size != int64(len(blobs[i])) {
						t.Errorf("stat %d: %+v, %v", i, info, err)
						return
					}
					b, err := s.Open(context.Background(), d)
					if err != nil {
						t.Errorf("open %d: %v", i, err)
						return
					}
					got, err := digest.FromReader(b)
					_ = b.Close()
					if err != nil || got != d {
						t.Errorf("blob %d read as %s, %v", i, got, err)
						return
					}
				}
			}
		})
	}
	writers.Wait()
	close(done)
	readers.Wait()
	for i, d := range digests {
		require.Equal(t, blobs[i], readBlob(t, s, d))
	}
}

func TestEvictionIsLRU(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 10000
	reg := prometheus.NewRegistry()
	s := openStore(t, dir, castore.Options{Capacity: 3 * size, Registerer: reg})
	a := ingest(t, s, blobData(10, size))
	b := ingest(t, s, blobData(11, size))
	c := ingest(t, s, blobData(12, size))
	readBlob(t, s, a) // A is now the most recently used; B the least.

	d := ingest(t, s, blobData(13, size))
	_, err := s.Stat(b)
	require.ErrorIs(t, err, castore.ErrNotFound, "B was least recently used")
	require.NoFileExists(t, filepath.Join(dir, "blobs", "sha256", b.Encoded()))

	// Re-ingesting counts as a use too.
	_, err = s.Ingest(t.Context(), c, failingReader{t})
	require.NoError(t, err)
	ingest(t, s, blobData(14, size))
	_, err = s.Stat(a)
	require.ErrorIs(t, err, castore.ErrNotFound, "A was least recently used")
	for _, kept := range []digest.Digest{c, d} {
		_, err := s.Stat(kept)
		require.NoError(t, err)
	}
	used, capacity := s.Usage()
	require.Equal(t, int64(3*size), used)
	require.Equal(t, int64(3*size), capacity)
	require.Equal(t, 2.0, metricValue(t, reg, "krakenctl_castore_evictions_total"))
	require.Equal(t, 2.0*size, metricValue(t, reg, "krakenctl_castore_evicted_bytes_total"))
	require.Equal(t, 3.0*size, metricValue(t, reg, "krakenctl_castore_used_bytes"))
	require.Equal(t, 3.0, metricValue(t, reg, "krakenctl_castore_blobs"))
	require.Equal(t, 5.0*size, metricValue(t, reg, "krakenctl_castore_ingested_bytes_total"))
	require.Equal(t, 3.0*size, metricValue(t, reg, "krakenctl_castore_capacity_bytes"))
}

func TestOpenAndHeldBlobsAreNeverEvicted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 10000
	s := openStore(t, dir, castore.Options{Capacity: 3 * size})
	aData := blobData(20, size)
	a := ingest(t, s, aData)
	b := ingest(t, s, blobData(21, size))
	c := ingest(t, s, blobData(22, size))

	open, err := s.Open(t.Context(), a)
	require.NoError(t, err)
	release := s.Hold(b)
	// C is the most recently used, but A is open and B held.
	d := ingest(t, s, blobData(23, size))
	_, err = s.Stat(c)
	require.ErrorIs(t, err, castore.ErrNotFound)

	// Hold works before the blob exists, and keeps it once it does.
	eData := blobData(24, size)
	e := digest.FromBytes(eData)
	releaseE := s.Hold(e)
	ingest(t, s, eData) // Evicts D, the only candidate.
	_, err = s.Stat(d)
	require.ErrorIs(t, err, castore.ErrNotFound)

	// Everything left is open or held: nothing fits, and nothing changes.
	fData := blobData(25, size)
	f := digest.FromBytes(fData)
	_, err = s.Ingest(t.Context(), f, bytes.NewReader(fData))
	require.ErrorIs(t, err, castore.ErrFull)
	_, err = s.Stat(f)
	require.ErrorIs(t, err, castore.ErrNotFound)
	for _, kept := range []digest.Digest{a, b, e} {
		_, err := s.Stat(kept)
		require.NoError(t, err)
	}
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))

	// Reading from the open blob still works, and so do the holds' releases.
	got, err := io.ReadAll(open)
	require.NoError(t, err)
	require.Equal(t, aData, got)
	require.NoError(t, open.Close())
	release()
	release() // Idempotent: must not release a second hold.
	releaseE()
	ingest(t, s, fData)
	_, err = s.Stat(b)
	require.ErrorIs(t, err, castore.ErrNotFound, "B, released, is the least recently used")
	_, err = s.Stat(a)
	require.NoError(t, err)
}

func TestHoldsAreCounted(t *testing.T) {
	t.Parallel()
	const size = 1000
	s := openStore(t, t.TempDir(), castore.Options{Capacity: size})
	a := ingest(t, s, blobData(30, size))
	r1, r2 := s.Hold(a), s.Hold(a)
	r1()
	r1()
	require.ErrorIs(t, s.Delete(a), castore.ErrInUse, "one hold is left")
	_, err := s.Ingest(t.Context(), digest.FromBytes(blobData(31, size)), bytes.NewReader(blobData(31, size)))
	require.ErrorIs(t, err, castore.ErrFull)
	r2()
	ingest(t, s, blobData(31, size))
	_, err = s.Stat(a)
	require.ErrorIs(t, err, castore.ErrNotFound)
}

func TestErrFullForBlobLargerThanCapacity(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{Capacity: 1 << 20})
	data := blobData(40, 1<<20+1)
	// The reader would go on forever: ErrFull comes as soon as the capacity is passed.
	r := io.MultiReader(bytes.NewReader(data), neverEnding{})
	_, err := s.Ingest(t.Context(), digest.FromBytes(data), r)
	require.ErrorIs(t, err, castore.ErrFull)
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))
	used, _ := s.Usage()
	require.Zero(t, used)
}

// smallReads returns at most 8 KiB per Read.
type smallReads struct{ r io.Reader }

func (s smallReads) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 8<<10)]) }

type neverEnding struct{}

func (neverEnding) Read(p []byte) (int, error) { return len(p), nil }

func TestDelete(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	d := ingest(t, s, blobData(50, 100))
	require.NoError(t, s.PutMeta(d, "metainfo", []byte("x")))

	b, err := s.Open(t.Context(), d)
	require.NoError(t, err)
	require.ErrorIs(t, s.Delete(d), castore.ErrInUse)
	require.NoError(t, b.Close())
	release := s.Hold(d)
	require.ErrorIs(t, s.Delete(d), castore.ErrInUse)
	release()

	require.NoError(t, s.Delete(d))
	require.ErrorIs(t, s.Delete(d), castore.ErrNotFound)
	_, err = s.Stat(d)
	require.ErrorIs(t, err, castore.ErrNotFound)
	_, err = s.GetMeta(d, "metainfo")
	require.ErrorIs(t, err, castore.ErrNotFound)
	require.NoDirExists(t, filepath.Join(dir, "meta", "sha256", d.Encoded()))
	used, _ := s.Usage()
	require.Zero(t, used)
}

func TestSidecarMeta(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 1000
	s := openStore(t, dir, castore.Options{Capacity: 2 * size})
	missing := digest.FromString("missing")
	require.ErrorIs(t, s.PutMeta(missing, "metainfo", []byte("x")), castore.ErrNotFound)
	_, err := s.GetMeta(missing, "metainfo")
	require.ErrorIs(t, err, castore.ErrNotFound)

	d := ingest(t, s, blobData(60, size))
	_, err = s.GetMeta(d, "metainfo")
	require.ErrorIs(t, err, castore.ErrNotFound)
	require.NoError(t, s.PutMeta(d, "metainfo", []byte("one")))
	require.NoError(t, s.PutMeta(d, "write_back-2", []byte("two")))
	require.NoError(t, s.PutMeta(d, "metainfo", []byte("three")))
	got, err := s.GetMeta(d, "metainfo")
	require.NoError(t, err)
	require.Equal(t, "three", string(got))
	got, err = s.GetMeta(d, "write_back-2")
	require.NoError(t, err)
	require.Equal(t, "two", string(got))
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))

	for _, kind := range []string{"", "../x", "a/b", "Upper", "dot.ted", string(bytes.Repeat([]byte("k"), 65))} {
		require.ErrorIs(t, s.PutMeta(d, kind, nil), castore.ErrInvalidKind, "kind %q", kind)
		_, err := s.GetMeta(d, kind)
		require.ErrorIs(t, err, castore.ErrInvalidKind, "kind %q", kind)
	}

	// Evicting the blob takes its metadata along.
	ingest(t, s, blobData(61, size))
	ingest(t, s, blobData(62, size))
	_, err = s.Stat(d)
	require.ErrorIs(t, err, castore.ErrNotFound)
	require.NoDirExists(t, filepath.Join(dir, "meta", "sha256", d.Encoded()))
}

func TestOpenCleansCrashLeftoversAndRebuildsIndex(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 1000
	s, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	old := ingest(t, s, blobData(70, size))
	mid := ingest(t, s, blobData(71, size))
	recent := ingest(t, s, blobData(72, size))
	require.NoError(t, s.PutMeta(mid, "metainfo", []byte("m")))
	require.NoError(t, s.Close())

	// Order the blobs by file time, as a long-running store would have.
	now := time.Now()
	for i, d := range []digest.Digest{old, mid, recent} {
		mt := now.Add(time.Duration(i-3) * time.Hour)
		require.NoError(t, os.Chtimes(filepath.Join(dir, "blobs", "sha256", d.Encoded()), mt, mt))
	}
	// What a crash and strangers can leave behind.
	orphan := digest.FromString("orphan")
	write := func(rel string, data string) {
		p := filepath.Join(dir, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(data), 0o644))
	}
	write("tmp/ingest-123", "partial")
	write("tmp/upload-abc/data", "partial")
	write("blobs/sha256/not-a-digest", "x")
	write("blobs/sha256/"+string(bytes.Repeat([]byte("A"), 64)), "x")
	write("blobs/md5/d41d8cd98f00b204e9800998ecf8427e", "x")
	write("blobs/stray", "x")
	write("meta/sha256/"+orphan.Encoded()+"/metainfo", "x")
	write("uploads/not-an-id/data", "x")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "uploads", "0123456789abcdef0123456789abcdef"), 0o755))

	s = openStore(t, dir, castore.Options{Capacity: 3 * size})
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))
	require.ElementsMatch(t, []string{old.Encoded(), mid.Encoded(), recent.Encoded()},
		dirNames(t, filepath.Join(dir, "blobs", "sha256")))
	require.ElementsMatch(t, []string{"sha256", "sha384", "sha512"}, dirNames(t, filepath.Join(dir, "blobs")))
	require.Equal(t, []string{mid.Encoded()}, dirNames(t, filepath.Join(dir, "meta", "sha256")))
	require.Empty(t, dirNames(t, filepath.Join(dir, "uploads")))
	used, _ := s.Usage()
	require.Equal(t, int64(3*size), used)
	got, err := s.GetMeta(mid, "metainfo")
	require.NoError(t, err)
	require.Equal(t, "m", string(got))

	// The LRU order came from the file times: the oldest goes first.
	ingest(t, s, blobData(73, size))
	_, err = s.Stat(old)
	require.ErrorIs(t, err, castore.ErrNotFound)
	ingest(t, s, blobData(74, size))
	_, err = s.Stat(mid)
	require.ErrorIs(t, err, castore.ErrNotFound)
	_, err = s.Stat(recent)
	require.NoError(t, err)
}

func TestLastUseSurvivesReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 1000
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }

	s, err := castore.Open(dir, castore.Options{Now: now})
	require.NoError(t, err)
	a := ingest(t, s, blobData(80, size))
	advance(time.Hour)
	b := ingest(t, s, blobData(81, size))
	advance(time.Hour)
	c := ingest(t, s, blobData(82, size))
	advance(time.Hour)
	readBlob(t, s, a)
	info, err := s.Stat(a)
	require.NoError(t, err)
	require.Equal(t, clock, info.LastAccess)
	require.NoError(t, s.Close())

	s = openStore(t, dir, castore.Options{Capacity: 3 * size, Now: now})
	ingest(t, s, blobData(83, size))
	_, err = s.Stat(b)
	require.ErrorIs(t, err, castore.ErrNotFound, "B is the least recently used after A was read")
	for _, kept := range []digest.Digest{a, c} {
		_, err := s.Stat(kept)
		require.NoError(t, err)
	}
}

func TestOpenExceedingCapacityEvictsNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 1000
	s, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	a := ingest(t, s, blobData(90, size))
	b := ingest(t, s, blobData(91, size))
	require.NoError(t, s.Close())

	s = openStore(t, dir, castore.Options{Capacity: size})
	used, _ := s.Usage()
	require.Equal(t, int64(2*size), used, "Open does not evict")
	release := s.Hold(a)
	defer release()
	_, err = s.Ingest(t.Context(), digest.FromBytes(blobData(92, size)), bytes.NewReader(blobData(92, size)))
	require.ErrorIs(t, err, castore.ErrFull, "only B can go, which is not enough")
	_, err = s.Stat(b)
	require.NoError(t, err, "a failed commit evicts nothing")
}

func TestLockAndClose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	s, err := castore.Open(dir, castore.Options{Registerer: reg})
	require.NoError(t, err)
	_, err = castore.Open(dir, castore.Options{})
	require.ErrorIs(t, err, castore.ErrLocked)

	data := blobData(100, 1000)
	d := ingest(t, s, data)
	b, err := s.Open(t.Context(), d)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())

	_, err = s.Ingest(t.Context(), d, failingReader{t})
	require.ErrorIs(t, err, castore.ErrClosed)
	_, err = s.Open(t.Context(), d)
	require.ErrorIs(t, err, castore.ErrClosed)
	_, err = s.Stat(d)
	require.ErrorIs(t, err, castore.ErrClosed)
	_, err = s.CreateUpload()
	require.ErrorIs(t, err, castore.ErrClosed)
	require.ErrorIs(t, s.PutMeta(d, "k", nil), castore.ErrClosed)
	got, err := io.ReadAll(b)
	require.NoError(t, err)
	require.Equal(t, data, got, "an open blob stays readable")
	require.NoError(t, b.Close())

	// The lock and the metrics are released: the same registry can take a new store.
	s2 := openStore(t, dir, castore.Options{Registerer: reg})
	_, err = s2.Stat(d)
	require.NoError(t, err)
}

func TestOpenRejectsBadOptions(t *testing.T) {
	t.Parallel()
	_, err := castore.Open(t.TempDir(), castore.Options{Capacity: -1})
	require.Error(t, err)

	reg := prometheus.NewRegistry()
	openStore(t, t.TempDir(), castore.Options{Registerer: reg})
	_, err = castore.Open(t.TempDir(), castore.Options{Registerer: reg})
	require.Error(t, err, "a second store needs its own labels")
}

func TestBlobCopiesToTCP(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	data := blobData(110, 2<<20+3)
	d := ingest(t, s, data)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	received := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- nil
			return
		}
		defer func() { _ = c.Close() }()
		b, _ := io.ReadAll(c)
		received <- b
	}()
	conn, err := new(net.Dialer).DialContext(t.Context(), "tcp", ln.Addr().String())
	require.NoError(t, err)
	b, err := s.Open(t.Context(), d)
	require.NoError(t, err)
	n, err := io.Copy(conn, b)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), n)
	require.NoError(t, b.Close())
	require.NoError(t, conn.Close())
	require.Equal(t, data, <-received)
}

// metricValue returns the value of the single-series metric name in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		require.Len(t, f.GetMetric(), 1)
		m := f.GetMetric()[0]
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
