package castore_test

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/castore"
)

func appendChunk(t *testing.T, s *castore.Store, id string, offset int64, chunk []byte) int64 {
	t.Helper()
	n, err := s.AppendUpload(t.Context(), id, offset, bytes.NewReader(chunk))
	require.NoError(t, err)
	require.Equal(t, offset+int64(len(chunk)), n)
	return n
}

func TestUploadInChunks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(200, 3<<20+5)
	d := digest.FromBytes(data)

	id, err := s.CreateUpload()
	require.NoError(t, err)
	require.Len(t, id, 32)
	size, err := s.UploadSize(id)
	require.NoError(t, err)
	require.Zero(t, size)

	var off int64
	for _, end := range []int{1, 1 << 20, 2<<20 + 7, len(data)} {
		off = appendChunk(t, s, id, off, data[off:end])
	}
	size, err = s.UploadSize(id)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), size)
	_, err = s.Stat(d)
	require.ErrorIs(t, err, castore.ErrNotFound, "not a blob before commit")

	info, err := s.CommitUpload(t.Context(), id, d)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), info.Size)
	require.Equal(t, data, readBlob(t, s, d))
	require.Zero(t, s.RereadBytes(), "commit used the running hash")
	_, err = s.UploadSize(id)
	require.ErrorIs(t, err, castore.ErrUploadUnknown, "a committed session is gone")
	require.Empty(t, dirNames(t, filepath.Join(dir, "uploads")))
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))
}

func TestUploadResumesAcrossReopen(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		tamper     func(t *testing.T, stateFile string, earlier []byte)
		wantReread int64 // Of the first chunk's bytes.
	}{
		"hash state intact": {func(*testing.T, string, []byte) {}, 0},
		"hash state missing": {func(t *testing.T, p string, _ []byte) {
			require.NoError(t, os.Remove(p))
		}, 2},
		"hash state corrupt": {func(t *testing.T, p string, _ []byte) {
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			b[len(b)/2] ^= 0xff
			require.NoError(t, os.WriteFile(p, b, 0o600))
		}, 2},
		"hash state empty": {func(t *testing.T, p string, _ []byte) {
			require.NoError(t, os.WriteFile(p, nil, 0o600))
		}, 2},
		"hash state behind": {func(t *testing.T, p string, earlier []byte) {
			require.NoError(t, os.WriteFile(p, earlier, 0o600))
		}, 1},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			data := blobData(210, 3<<20)
			d := digest.FromBytes(data)
			third := int64(len(data) / 3)

			s, err := castore.Open(dir, castore.Options{})
			require.NoError(t, err)
			id, err := s.CreateUpload()
			require.NoError(t, err)
			appendChunk(t, s, id, 0, data[:third])
			stateFile := filepath.Join(dir, "uploads", id, "hashstate")
			earlier, err := os.ReadFile(stateFile)
			require.NoError(t, err)
			appendChunk(t, s, id, third, data[third:2*third])
			require.NoError(t, s.Close())
			tc.tamper(t, stateFile, earlier)

			s = openStore(t, dir, castore.Options{})
			size, err := s.UploadSize(id)
			require.NoError(t, err)
			require.Equal(t, 2*third, size)
			_, err = s.AppendUpload(t.Context(), id, third, bytes.NewReader(data[third:]))
			require.ErrorIs(t, err, castore.ErrBadOffset)
			appendChunk(t, s, id, 2*third, data[2*third:])
			_, err = s.CommitUpload(t.Context(), id, d)
			require.NoError(t, err)
			require.Equal(t, data, readBlob(t, s, d))
			require.Equal(t, tc.wantReread*third, s.RereadBytes())
		})
	}
}

func TestUploadCommitAfterReopenWithoutAppend(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := blobData(215, 100000)
	d := digest.FromBytes(data)
	s, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	id, err := s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, id, 0, data)
	require.NoError(t, s.Close())

	s = openStore(t, dir, castore.Options{})
	_, err = s.CommitUpload(t.Context(), id, d)
	require.NoError(t, err)
	require.Zero(t, s.RereadBytes())
	require.Equal(t, data, readBlob(t, s, d))
}

func TestUploadBadOffset(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	id, err := s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, id, 0, []byte("hello"))
	for _, off := range []int64{0, 3, 6, -1} {
		n, err := s.AppendUpload(t.Context(), id, off, failingReader{t})
		require.ErrorIs(t, err, castore.ErrBadOffset, "offset %d", off)
		require.Equal(t, int64(5), n, "the current size comes back with the error")
	}
	appendChunk(t, s, id, 5, []byte(" world"))
	_, err = s.CommitUpload(t.Context(), id, digest.FromString("hello world"))
	require.NoError(t, err)
}

func TestUploadUnknownAndMalformedIDs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	// A directory a traversing id could reach if ids were used as paths.
	victim := filepath.Join(dir, "victim")
	require.NoError(t, os.MkdirAll(victim, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(victim, "data"), []byte("keep"), 0o600))

	for _, id := range []string{"", "nope", "../victim", "../../victim", "/etc", "..",
		"0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcde/",
		"0123456789abcdef0123456789abcdef0", "0123456789abcdef0123456789abcdef"} {
		_, err := s.UploadSize(id)
		require.ErrorIs(t, err, castore.ErrUploadUnknown, "id %q", id)
		_, err = s.AppendUpload(t.Context(), id, 0, failingReader{t})
		require.ErrorIs(t, err, castore.ErrUploadUnknown, "id %q", id)
		_, err = s.CommitUpload(t.Context(), id, digest.FromString("keep"))
		require.ErrorIs(t, err, castore.ErrUploadUnknown, "id %q", id)
		require.ErrorIs(t, s.CancelUpload(id), castore.ErrUploadUnknown, "id %q", id)
	}
	got, err := os.ReadFile(filepath.Join(victim, "data"))
	require.NoError(t, err)
	require.Equal(t, "keep", string(got))
	_, err = s.Stat(digest.FromString("keep"))
	require.ErrorIs(t, err, castore.ErrNotFound)
}

func TestUploadFailedAppendRollsBack(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(220, 3<<20)
	d := digest.FromBytes(data)
	id, err := s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, id, 0, data[:1000])

	boom := errors.New("connection reset")
	r := io.MultiReader(bytes.NewReader(blobData(221, 2<<20)), iotest.ErrReader(boom))
	n, err := s.AppendUpload(t.Context(), id, 1000, r)
	require.ErrorIs(t, err, boom)
	require.Equal(t, int64(1000), n)
	size, err := s.UploadSize(id)
	require.NoError(t, err)
	require.Equal(t, int64(1000), size)
	fi, err := os.Stat(filepath.Join(dir, "uploads", id, "data"))
	require.NoError(t, err)
	require.Equal(t, int64(1000), fi.Size(), "the partial bytes were truncated away")

	appendChunk(t, s, id, 1000, data[1000:])
	_, err = s.CommitUpload(t.Context(), id, d)
	require.NoError(t, err, "the rolled-back hash matches the data again")
	require.Equal(t, data, readBlob(t, s, d))
	require.Zero(t, s.RereadBytes())
}

func TestUploadBusy(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	id, err := s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, id, 0, []byte("abc"))

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.AppendUpload(t.Context(), id, 3, pr)
		done <- err
	}()
	// Once this write returns, the append above is reading: the session is busy.
	_, err = pw.Write([]byte("def"))
	require.NoError(t, err)

	_, err = s.AppendUpload(t.Context(), id, 3, failingReader{t})
	require.ErrorIs(t, err, castore.ErrUploadBusy)
	_, err = s.CommitUpload(t.Context(), id, digest.FromString("abcdef"))
	require.ErrorIs(t, err, castore.ErrUploadBusy)
	require.ErrorIs(t, s.CancelUpload(id), castore.ErrUploadBusy)
	n, err := s.PurgeUploads(-time.Hour)
	require.NoError(t, err)
	require.Zero(t, n, "a busy session is not purged")
	size, err := s.UploadSize(id)
	require.NoError(t, err)
	require.Equal(t, int64(3), size, "the size before the running append")

	require.NoError(t, pw.Close())
	require.NoError(t, <-done)
	_, err = s.CommitUpload(t.Context(), id, digest.FromString("abcdef"))
	require.NoError(t, err)
}

func TestUploadSizeNeverShowsAPartialAppend(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	id, err := s.CreateUpload()
	require.NoError(t, err)
	const chunk, chunks = 64 << 10, 40
	done := make(chan error, 1)
	go func() {
		for i := range chunks {
			if _, err := s.AppendUpload(t.Context(), id, int64(i*chunk), bytes.NewReader(blobData(uint64(i), chunk))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	var last int64
	for {
		size, err := s.UploadSize(id)
		require.NoError(t, err)
		require.Zero(t, size%chunk, "size %d is not at a chunk boundary", size)
		require.GreaterOrEqual(t, size, last)
		last = size
		if size == chunk*chunks {
			break
		}
	}
	require.NoError(t, <-done)
}

func TestCommitUploadDigestMismatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	id, err := s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, id, 0, []byte("hello"))
	wrong := digest.FromString("goodbye")
	_, err = s.CommitUpload(t.Context(), id, wrong)
	require.ErrorIs(t, err, castore.ErrDigestMismatch)
	_, err = s.Stat(wrong)
	require.ErrorIs(t, err, castore.ErrNotFound)
	_, err = s.Stat(digest.FromString("hello"))
	require.ErrorIs(t, err, castore.ErrNotFound)
	_, err = s.UploadSize(id)
	require.ErrorIs(t, err, castore.ErrUploadUnknown, "the session is spent")
	require.Empty(t, dirNames(t, filepath.Join(dir, "uploads")))
	require.Empty(t, dirNames(t, filepath.Join(dir, "blobs", "sha256")))

	_, err = s.CommitUpload(t.Context(), "0123456789abcdef0123456789abcdef", "sha256:bad")
	require.ErrorIs(t, err, castore.ErrInvalidDigest)
}

func TestCommitUploadOfStoredBlob(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	d := ingest(t, s, []byte("hello"))
	id, err := s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, id, 0, []byte("hello"))
	info, err := s.CommitUpload(t.Context(), id, d)
	require.NoError(t, err)
	require.Equal(t, int64(5), info.Size)
	require.Empty(t, dirNames(t, filepath.Join(dir, "uploads")))
	require.Equal(t, []byte("hello"), readBlob(t, s, d))
}

func TestCommitUploadSHA512RereadsTheData(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	data := blobData(230, 200000)
	sum := sha512.Sum512(data)
	d := digest.NewDigestFromEncoded(digest.SHA512, hex.EncodeToString(sum[:]))
	id, err := s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, id, 0, data)
	_, err = s.CommitUpload(t.Context(), id, d)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), s.RereadBytes())
	require.Equal(t, data, readBlob(t, s, d))
}

// TestCommitUploadSHA256 verifies a sha512 digest but stores the blob under its SHA-256, and
// a mismatch stores nothing and spends the session.
func TestCommitUploadSHA256(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(231, 300000)
	d512 := digest.SHA512.FromBytes(data)
	d256 := digest.FromBytes(data)

	id, err := s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, id, 0, data[:1000])
	appendChunk(t, s, id, 1000, data[1000:])
	info, err := s.CommitUploadSHA256(t.Context(), id, d512)
	require.NoError(t, err)
	require.Equal(t, d256, info.Digest)
	require.Equal(t, int64(len(data)), info.Size)
	require.Equal(t, int64(len(data)), s.RereadBytes(), "only the sha512 pass reads the data again")
	require.Equal(t, data, readBlob(t, s, d256))
	_, err = s.Stat(d512)
	require.ErrorIs(t, err, castore.ErrNotFound, "nothing is stored under the sha512 digest")
	require.Empty(t, dirNames(t, filepath.Join(dir, "uploads")))

	// A sha256 digest behaves as CommitUpload.
	other := blobData(232, 5000)
	id, err = s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, id, 0, other)
	info, err = s.CommitUploadSHA256(t.Context(), id, digest.FromBytes(other))
	require.NoError(t, err)
	require.Equal(t, digest.FromBytes(other), info.Digest)

	// A mismatch stores nothing and removes the session.
	id, err = s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, id, 0, []byte("not the content"))
	_, err = s.CommitUploadSHA256(t.Context(), id, digest.SHA512.FromString("something else"))
	require.ErrorIs(t, err, castore.ErrDigestMismatch)
	_, err = s.Stat(digest.FromString("not the content"))
	require.ErrorIs(t, err, castore.ErrNotFound)
	_, err = s.UploadSize(id)
	require.ErrorIs(t, err, castore.ErrUploadUnknown)

	_, err = s.CommitUploadSHA256(t.Context(), id, "sha512:short")
	require.ErrorIs(t, err, castore.ErrInvalidDigest)
}

// TestAppendUploadFullKeepsSession checks that a session's bytes are reserved as they arrive:
// an append that finds no room fails with ErrFull and rolls back, the session survives, and a
// retry once room can be made evicts and succeeds.
func TestAppendUploadFullKeepsSession(t *testing.T) {
	t.Parallel()
	const size = 1000
	s := openStore(t, t.TempDir(), castore.Options{Capacity: size})
	held := ingest(t, s, blobData(240, size))
	release := s.Hold(held)
	data := blobData(241, size)
	id, err := s.CreateUpload()
	require.NoError(t, err)
	n, err := s.AppendUpload(t.Context(), id, 0, bytes.NewReader(data))
	require.ErrorIs(t, err, castore.ErrFull)
	require.Zero(t, n, "the failed append is rolled back")
	require.Zero(t, s.Reserved(), "and so is its reservation")
	n, err = s.UploadSize(id)
	require.NoError(t, err)
	require.Zero(t, n, "the session survives ErrFull")

	release()
	appendChunk(t, s, id, 0, data)
	_, err = s.Stat(held)
	require.ErrorIs(t, err, castore.ErrNotFound, "the append evicted the blob no longer held")
	require.Equal(t, int64(size), s.Reserved())
	_, err = s.CommitUpload(t.Context(), id, digest.FromBytes(data))
	require.NoError(t, err)
	require.Equal(t, data, readBlob(t, s, digest.FromBytes(data)))
	require.Zero(t, s.Reserved(), "the commit converts the reservation")
	used, _ := s.Usage()
	require.Equal(t, int64(size), used)

	// An upload larger than the capacity fails while appending, and rolls back.
	id, err = s.CreateUpload()
	require.NoError(t, err)
	n, err = s.AppendUpload(t.Context(), id, 0, bytes.NewReader(blobData(242, size+1)))
	require.ErrorIs(t, err, castore.ErrFull)
	require.Zero(t, n)
	require.Zero(t, s.Reserved())
}

func TestCancelAndPurgeUploads(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	cancelled, err := s.CreateUpload()
	require.NoError(t, err)
	appendChunk(t, s, cancelled, 0, []byte("x"))
	require.NoError(t, s.CancelUpload(cancelled))
	_, err = s.UploadSize(cancelled)
	require.ErrorIs(t, err, castore.ErrUploadUnknown)
	require.ErrorIs(t, s.CancelUpload(cancelled), castore.ErrUploadUnknown)

	stale, err := s.CreateUpload()
	require.NoError(t, err)
	fresh, err := s.CreateUpload()
	require.NoError(t, err)
	old := time.Now().Add(-2 * time.Hour)
	require.NoError(t, os.Chtimes(filepath.Join(dir, "uploads", stale, "data"), old, old))

	n, err := s.PurgeUploads(time.Hour)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = s.UploadSize(stale)
	require.ErrorIs(t, err, castore.ErrUploadUnknown)
	_, err = s.UploadSize(fresh)
	require.NoError(t, err)
	require.Equal(t, []string{fresh}, dirNames(t, filepath.Join(dir, "uploads")))
}

// TestUploadLabel: a session keeps its label across a reopen; an unlabelled session reads "";
// an unknown session is ErrUploadUnknown.
func TestUploadLabel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	labelled, err := s.CreateUploadLabeled("library/alpine")
	require.NoError(t, err)
	plain, err := s.CreateUpload()
	require.NoError(t, err)
	_, err = s.CreateUploadLabeled(string(make([]byte, 5000)))
	require.Error(t, err)
	require.NoError(t, s.Close())

	s = openStore(t, dir, castore.Options{})
	got, err := s.UploadLabel(labelled)
	require.NoError(t, err)
	require.Equal(t, "library/alpine", got)
	got, err = s.UploadLabel(plain)
	require.NoError(t, err)
	require.Empty(t, got)
	require.NoError(t, s.CancelUpload(labelled))
	_, err = s.UploadLabel(labelled)
	require.ErrorIs(t, err, castore.ErrUploadUnknown)
	_, err = s.UploadLabel("../etc")
	require.ErrorIs(t, err, castore.ErrUploadUnknown)
}
