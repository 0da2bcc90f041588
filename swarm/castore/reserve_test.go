package castore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/castore"
)

// fullCount returns krakenctl_castore_full_total{reason}.
func fullCount(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != "krakenctl_castore_full_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no krakenctl_castore_full_total{reason=%q}", reason)
	return 0
}

// TestIngestReservesDeclaredSizeFirst checks that a declared size that cannot fit fails with
// ErrFull before a byte is read, is counted, and evicts nothing.
func TestIngestReservesDeclaredSizeFirst(t *testing.T) {
	t.Parallel()
	const size = 1000
	reg := prometheus.NewRegistry()
	s := openStore(t, t.TempDir(), castore.Options{Capacity: 2 * size, Registerer: reg})
	held := ingest(t, s, blobData(500, size))
	release := s.Hold(held)
	defer release()
	other := ingest(t, s, blobData(501, size))
	_ = s.Hold(other) // both held: nothing can go

	data := blobData(502, size)
	_, err := s.IngestWith(t.Context(), digest.FromBytes(data), failingReader{t}, castore.IngestOptions{Size: size})
	require.ErrorIs(t, err, castore.ErrFull)
	require.Equal(t, float64(1), fullCount(t, reg, "capacity"))
	require.Equal(t, float64(0), fullCount(t, reg, "disk"))
	require.Zero(t, s.Reserved())
	used, _ := s.Usage()
	require.Equal(t, int64(2*size), used, "nothing evicted")
}

// blockingReader yields data once release is closed, so a test can hold ingests in flight.
type blockingReader struct {
	r       io.Reader
	release <-chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	<-b.release
	return b.r.Read(p)
}

// TestConcurrentIngestsEvictAtReservation checks the case of five concurrent uploads into a
// store with room for two (F8): the reservations evict the old blobs up front, the writes
// that fit all succeed, the ones that cannot fit fail with ErrFull before they write, and
// what is stored is intact.
func TestConcurrentIngestsEvictAtReservation(t *testing.T) {
	t.Parallel()
	const size = 4000
	s := openStore(t, t.TempDir(), castore.Options{Capacity: 2 * size})
	old1 := ingest(t, s, blobData(510, size))
	old2 := ingest(t, s, blobData(511, size))

	release := make(chan struct{})
	type result struct {
		d   digest.Digest
		err error
	}
	results := make(chan result, 5)
	var wg sync.WaitGroup
	started := make(chan struct{}, 5)
	for i := range 5 {
		data := blobData(uint64(520+i), size)
		d := digest.FromBytes(data)
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			_, err := s.IngestWith(context.Background(), d,
				&blockingReader{r: bytes.NewReader(data), release: release}, castore.IngestOptions{Size: size})
			results <- result{d, err}
		}()
	}
	for range 5 {
		<-started
	}
	// Three of the five fail at their reservation, before reading; wait for them.
	var failed []result
	for len(failed) < 3 {
		r := <-results
		require.ErrorIs(t, r.err, castore.ErrFull, "only a reservation can fail before the release")
		failed = append(failed, r)
	}
	require.Equal(t, int64(2*size), s.Reserved())
	for _, d := range []digest.Digest{old1, old2} {
		_, err := s.Stat(d)
		require.ErrorIs(t, err, castore.ErrNotFound, "evicted at reservation time")
	}
	close(release)
	wg.Wait()
	close(results)
	var stored []digest.Digest
	for r := range results {
		require.NoError(t, r.err)
		stored = append(stored, r.d)
	}
	require.Len(t, stored, 2)
	for i := range 5 {
		data := blobData(uint64(520+i), size)
		for _, d := range stored {
			if d == digest.FromBytes(data) {
				require.Equal(t, data, readBlob(t, s, d))
			}
		}
	}
	used, _ := s.Usage()
	require.Equal(t, int64(2*size), used)
	require.Zero(t, s.Reserved())
}

// TestDiskFullAtEveryStepIsErrFull fails each step of a commit as a full disk would: every
// one answers an error wrapping ErrFull and ENOSPC, counted as reason "disk", and leaves
// nothing behind: no blob, no metadata, no temporary file, no reservation. The session of a
// failed upload commit survives for a retry, which then succeeds.
func TestDiskFullAtEveryStepIsErrFull(t *testing.T) {
	t.Parallel()
	steps := []string{castore.StepWrite, castore.StepSync, castore.StepPrepare, castore.StepMeta,
		castore.StepMetaRename, castore.StepRename}
	for i, step := range steps {
		for _, upload := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/upload=%v", step, upload), func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				reg := prometheus.NewRegistry()
				s := openStore(t, dir, castore.Options{Capacity: 1 << 20, Registerer: reg})
				var mu sync.Mutex
				armed := true
				s.SetFault(func(name string) error {
					mu.Lock()
					defer mu.Unlock()
					if armed && name == step {
						return &os.PathError{Op: "write", Path: "fault", Err: syscall.ENOSPC}
					}
					return nil
				})
				data := blobData(uint64(530+i), 3000)
				d := digest.FromBytes(data)
				prepare := func(_ context.Context, st *castore.Staged) error {
					return st.PutMeta("metainfo", []byte("mi"))
				}
				var id string
				var err error
				if upload {
					id, err = s.CreateUpload()
					require.NoError(t, err)
					_, err = s.AppendUpload(t.Context(), id, 0, bytes.NewReader(data))
					if err == nil {
						_, err = s.CommitUploadWith(t.Context(), id, d, castore.CommitOptions{Prepare: prepare})
					}
				} else {
					_, err = s.IngestWith(t.Context(), d, bytes.NewReader(data), castore.IngestOptions{Prepare: prepare})
				}
				require.ErrorIs(t, err, castore.ErrFull)
				require.ErrorIs(t, err, syscall.ENOSPC)
				require.Equal(t, float64(1), fullCount(t, reg, "disk"))
				_, err = s.Stat(d)
				require.ErrorIs(t, err, castore.ErrNotFound)
				_, err = s.GetMeta(d, "metainfo")
				require.ErrorIs(t, err, castore.ErrNotFound)
				require.NoDirExists(t, filepath.Join(dir, "meta", "sha256", d.Encoded()))
				require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))
				require.Empty(t, dirNames(t, filepath.Join(dir, "blobs", "sha256")))
				if !upload {
					require.Zero(t, s.Reserved())
					return
				}
				// The session keeps what it acknowledged (nothing, after a failed append) and
				// its reservation covers exactly that; a retry completes it.
				n, err := s.UploadSize(id)
				require.NoError(t, err)
				require.Equal(t, n, s.Reserved())
				mu.Lock()
				armed = false
				mu.Unlock()
				if n == 0 {
					_, err = s.AppendUpload(t.Context(), id, 0, bytes.NewReader(data))
					require.NoError(t, err)
				}
				_, err = s.CommitUploadWith(t.Context(), id, d, castore.CommitOptions{Prepare: prepare})
				require.NoError(t, err)
				require.Equal(t, data, readBlob(t, s, d))
				mi, err := s.GetMeta(d, "metainfo")
				require.NoError(t, err)
				require.Equal(t, "mi", string(mi))
				require.Zero(t, s.Reserved())
			})
		}
	}
}

// TestPrepareRunsBeforeTheBlobIsVisible checks the order of an atomic commit: Prepare sees the
// verified bytes while the blob is not yet visible, its metadata is in place the moment the
// blob is, and a failing Prepare stores nothing.
func TestPrepareRunsBeforeTheBlobIsVisible(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	data := blobData(540, 5000)
	d := digest.FromBytes(data)

	errPrepare := errors.New("queue unavailable")
	_, err := s.IngestWith(t.Context(), d, bytes.NewReader(data), castore.IngestOptions{
		Prepare: func(context.Context, *castore.Staged) error { return errPrepare },
	})
	require.ErrorIs(t, err, errPrepare)
	_, err = s.Stat(d)
	require.ErrorIs(t, err, castore.ErrNotFound)

	calls := 0
	_, err = s.IngestWith(t.Context(), d, bytes.NewReader(data), castore.IngestOptions{
		Prepare: func(_ context.Context, st *castore.Staged) error {
			calls++
			require.Equal(t, d, st.Digest())
			require.Equal(t, int64(len(data)), st.Size())
			_, err := s.Stat(d)
			require.ErrorIs(t, err, castore.ErrNotFound, "not visible during Prepare")
			f, err := st.Open()
			require.NoError(t, err)
			got, err := io.ReadAll(f)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			require.Equal(t, data, got, "Prepare reads the verified bytes")
			require.ErrorIs(t, st.PutMeta("Bad Kind", nil), castore.ErrInvalidKind)
			return st.PutMeta("namespace", []byte("library/app"))
		},
	})
	require.NoError(t, err)
	require.Equal(t, 1, calls)
	ns, err := s.GetMeta(d, "namespace")
	require.NoError(t, err)
	require.Equal(t, "library/app", string(ns))

	// Stored already: Prepare is not called again.
	_, err = s.IngestWith(t.Context(), d, bytes.NewReader(data), castore.IngestOptions{
		Prepare: func(context.Context, *castore.Staged) error { calls++; return nil },
	})
	require.NoError(t, err)
	require.Equal(t, 1, calls)
}

// TestTrimAtStartup reopens a store with a lower capacity: Open evicts nothing, Trim evicts
// the least recently used blobs that are not held until the store fits.
func TestTrimAtStartup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 1000
	s, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	var ds []digest.Digest
	for i := range 5 {
		ds = append(ds, ingest(t, s, blobData(uint64(550+i), size)))
		// Distinct last uses, oldest first.
		require.NoError(t, os.Chtimes(filepath.Join(dir, "blobs", "sha256", ds[i].Encoded()),
			timeAt(i), timeAt(i)))
	}
	require.NoError(t, s.Close())

	s = openStore(t, dir, castore.Options{Capacity: 2 * size})
	used, _ := s.Usage()
	require.Equal(t, int64(5*size), used, "Open evicts nothing")
	release := s.Hold(ds[0]) // the oldest, held (waiting for write-back, say)
	defer release()
	res, err := s.Trim()
	require.NoError(t, err)
	require.Equal(t, castore.TrimResult{Blobs: 3, BlobBytes: 3 * size}, res)
	used, _ = s.Usage()
	require.Equal(t, int64(2*size), used)
	for i, d := range ds {
		_, err := s.Stat(d)
		if i == 0 || i == 4 {
			require.NoError(t, err, "held, or the most recently used")
		} else {
			require.ErrorIs(t, err, castore.ErrNotFound)
		}
	}
	res, err = s.Trim()
	require.NoError(t, err)
	require.Equal(t, castore.TrimResult{}, res, "nothing more to do")
}

// TestOrphanUploadsReservedAndEvictedFirst checks the sessions a killed process left: they
// count as reserved after a restart, a client can still resume one, and the others are the
// first thing evicted when room is needed, before any committed blob.
func TestOrphanUploadsReservedAndEvictedFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 1000
	s, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	kept := ingest(t, s, blobData(560, size))
	abandoned, err := s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, abandoned, 0, blobData(561, size))
	resumed, err := s.CreateUpload()
	require.NoError(t, err)
	data := blobData(562, size)
	appendChunk(t, s, resumed, 0, data[:size/2])
	require.NoError(t, s.Close())

	s = openStore(t, dir, castore.Options{Capacity: 3 * size})
	require.Equal(t, int64(size+size/2), s.Reserved(), "the sessions on disk are reserved")
	appendChunk(t, s, resumed, size/2, data[size/2:])
	require.Equal(t, int64(2*size), s.Reserved(), "the resumed session's reservation grew with it")

	// A new blob needs a third slot: the abandoned session goes, the committed blob stays.
	ingest(t, s, blobData(563, size))
	_, err = s.UploadSize(abandoned)
	require.ErrorIs(t, err, castore.ErrUploadUnknown)
	_, err = s.Stat(kept)
	require.NoError(t, err)
	_, err = s.CommitUpload(t.Context(), resumed, digest.FromBytes(data))
	require.NoError(t, err)
	require.Zero(t, s.Reserved())
	used, _ := s.Usage()
	require.Equal(t, int64(3*size), used)
}

// TestTrimEvictsOrphansFirst checks that Trim reclaims a killed process's sessions before
// committed blobs.
func TestTrimEvictsOrphansFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 1000
	s, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	d := ingest(t, s, blobData(570, size))
	id, err := s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, id, 0, blobData(571, size))
	require.NoError(t, s.Close())

	s = openStore(t, dir, castore.Options{Capacity: size})
	res, err := s.Trim()
	require.NoError(t, err)
	require.Equal(t, castore.TrimResult{Uploads: 1, UploadBytes: size}, res)
	_, err = s.Stat(d)
	require.NoError(t, err)
	require.Zero(t, s.Reserved())
	require.Empty(t, dirNames(t, filepath.Join(dir, "uploads")))
}

// timeAt returns a distinct moment for the i-th blob, oldest first.
func timeAt(i int) time.Time { return time.Date(2026, 1, 1, 0, i, 0, 0, time.UTC) }

// TestPartialReservesItsSize checks that an open partial download reserves the blob's size
// (from its metainfo) and gives it back when closed to be resumed later.
func TestPartialReservesItsSize(t *testing.T) {
	t.Parallel()
	const size = 1000
	s := openStore(t, t.TempDir(), castore.Options{Capacity: 2 * size})
	data := blobData(580, size)
	d := digest.FromBytes(data)
	p, err := s.OpenPartial(d, size)
	require.NoError(t, err)
	require.Equal(t, int64(size), s.Reserved())
	_, err = s.OpenPartial(digest.FromBytes(blobData(581, 2*size)), 2*size)
	require.ErrorIs(t, err, castore.ErrFull, "the open partial's reservation leaves no room")
	require.NoError(t, p.Close())
	require.Zero(t, s.Reserved())
	require.Equal(t, []digest.Digest{d}, partialDigests(s), "kept on disk to be resumed")
}
