package castore_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/castore"
)

// pieces splits [0, size) into ranges of pieceLen bytes (the last one shorter).
func pieces(size, pieceLen int) [][2]int {
	var ps [][2]int
	for off := 0; off < size; off += pieceLen {
		ps = append(ps, [2]int{off, min(off+pieceLen, size)})
	}
	return ps
}

func writePiece(t *testing.T, p *castore.Partial, data []byte, r [2]int) {
	t.Helper()
	n, err := p.WriteAt(data[r[0]:r[1]], int64(r[0]))
	require.NoError(t, err)
	require.Equal(t, r[1]-r[0], n)
}

func openPartial(t *testing.T, s *castore.Store, d digest.Digest, size int) *castore.Partial {
	t.Helper()
	p, err := s.OpenPartial(d, int64(size))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

func partialDir(dir string, d digest.Digest) string {
	return filepath.Join(dir, "partial", string(d.Algorithm()), d.Encoded())
}

func readAll(t *testing.T, r io.ReaderAt, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	n, err := r.ReadAt(b, 0)
	if n < size || err != nil {
		require.ErrorIs(t, err, io.EOF)
	}
	require.Equal(t, size, n)
	return b
}

func TestPartialOutOfOrderCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	s := openStore(t, dir, castore.Options{Registerer: reg})
	data := blobData(300, 3<<20+12345)
	d := digest.FromBytes(data)

	p := openPartial(t, s, d, len(data))
	require.Equal(t, d, p.Digest())
	require.Equal(t, int64(len(data)), p.Size())
	require.Zero(t, p.Hashed())
	fi, err := os.Stat(filepath.Join(partialDir(dir, d), "data"))
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), fi.Size(), "the data file has the blob's size from the start")

	ps := pieces(len(data), 256<<10)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	for i, r := range ps {
		writePiece(t, p, data, r)
		if i == len(ps)/2 {
			// Half-way: written pieces read back, the rest is zeros, and no blob exists yet.
			got := make([]byte, r[1]-r[0])
			_, err := p.ReadAt(got, int64(r[0]))
			require.NoError(t, err)
			require.Equal(t, data[r[0]:r[1]], got)
			last := ps[len(ps)-1]
			if _, err := p.ReadAt(got[:last[1]-last[0]], int64(last[0])); err != nil {
				require.ErrorIs(t, err, io.EOF)
			}
			require.Equal(t, make([]byte, last[1]-last[0]), got[:last[1]-last[0]])
			_, err = s.Stat(d)
			require.ErrorIs(t, err, castore.ErrNotFound)
		}
	}
	require.Equal(t, []castore.PartialInfo{{Digest: d, Size: int64(len(data)), ModTime: s.Partials()[0].ModTime}}, s.Partials())
	used, _ := s.Usage()
	require.Zero(t, used, "partial downloads are not counted against the capacity")

	info, err := p.Commit(t.Context())
	require.NoError(t, err)
	require.Equal(t, d, info.Digest)
	require.Equal(t, int64(len(data)), info.Size)
	require.Equal(t, int64(len(data)), p.Hashed())
	require.Equal(t, data, readBlob(t, s, d))
	require.Empty(t, s.Partials())
	require.NoDirExists(t, partialDir(dir, d))
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))
	require.InDelta(t, float64(len(data)), metricValue(t, reg, "krakenctl_castore_used_bytes"), 0)
	require.InDelta(t, float64(len(data)), metricValue(t, reg, "krakenctl_castore_ingested_bytes_total"), 0)

	// The Partial is spent.
	_, err = p.WriteAt([]byte{1}, 0)
	require.ErrorIs(t, err, fs.ErrClosed)
	_, err = p.ReadAt(make([]byte, 1), 0)
	require.ErrorIs(t, err, fs.ErrClosed)
	_, err = p.Commit(t.Context())
	require.ErrorIs(t, err, fs.ErrClosed)
	_, err = p.OpenFile()
	require.ErrorIs(t, err, fs.ErrClosed)
	_, err = p.State()
	require.ErrorIs(t, err, fs.ErrClosed)
	require.ErrorIs(t, p.SaveState(nil), fs.ErrClosed)
	require.ErrorIs(t, p.HashTo(t.Context(), 1), fs.ErrClosed)
	require.NoError(t, p.Close(), "Close after Commit does nothing")
	_, err = s.OpenPartial(d, int64(len(data)))
	require.ErrorIs(t, err, castore.ErrExists)
}

func TestPartialHashToFreezesThePrefixAndSparesCommitTheReread(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(310, 2<<20+100)
	d := digest.FromBytes(data)
	p := openPartial(t, s, d, len(data))
	ps := pieces(len(data), 100<<10)

	// Pieces complete in order here; the prefix is hashed as it grows.
	for i, r := range ps[:len(ps)/2] {
		writePiece(t, p, data, r)
		if i%3 == 2 {
			require.NoError(t, p.HashTo(t.Context(), int64(r[1])))
			require.Equal(t, int64(r[1]), p.Hashed())
		}
	}
	hashed := p.Hashed()
	require.Positive(t, hashed)
	require.NoError(t, p.HashTo(t.Context(), hashed-1), "hashing less than Hashed does nothing")
	require.Equal(t, hashed, p.Hashed())

	// A write into the hashed prefix cannot change what Commit will rename into place.
	_, err := p.WriteAt([]byte("corrupt"), hashed-3)
	require.ErrorIs(t, err, castore.ErrRangeFrozen)
	_, err = p.WriteAt([]byte{0}, 0)
	require.ErrorIs(t, err, castore.ErrRangeFrozen)
	require.Equal(t, data[:hashed], readAll(t, p, int(hashed)))
	_, err = p.WriteAt(nil, 0)
	require.NoError(t, err, "an empty write overlaps nothing")

	for _, r := range ps[len(ps)/2:] {
		writePiece(t, p, data, r)
	}
	require.NoError(t, p.HashTo(t.Context(), p.Size()))
	require.Equal(t, p.Size(), p.Hashed())
	_, err = p.WriteAt([]byte{0}, p.Size()-1)
	require.ErrorIs(t, err, castore.ErrRangeFrozen)

	// Nothing is left to hash, so Commit reads nothing and never looks at its cancelled ctx.
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = p.Commit(cancelled)
	require.NoError(t, err)
	require.Equal(t, data, readBlob(t, s, d))
}

func TestPartialCommitHashesWhatIsLeft(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(320, 3<<20)
	d := digest.FromBytes(data)
	p := openPartial(t, s, d, len(data))
	writePiece(t, p, data, [2]int{0, len(data)})
	require.NoError(t, p.HashTo(t.Context(), 1<<20))

	// With bytes left to hash, a cancelled ctx stops Commit and changes nothing on disk; the
	// whole range is frozen, and the Partial stays open for a retry.
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := p.Commit(cancelled)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, int64(1<<20), p.Hashed())
	_, err = s.Stat(d)
	require.ErrorIs(t, err, castore.ErrNotFound)
	require.Len(t, s.Partials(), 1)
	_, err = p.WriteAt([]byte{0}, p.Size()-1)
	require.ErrorIs(t, err, castore.ErrRangeFrozen)

	_, err = p.Commit(t.Context())
	require.NoError(t, err)
	require.Equal(t, data, readBlob(t, s, d))
	require.Empty(t, s.Partials())
}

func TestPartialDigestMismatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	s := openStore(t, dir, castore.Options{Registerer: reg})
	data := blobData(330, 1<<20)
	d := digest.FromBytes(data)
	p := openPartial(t, s, d, len(data))
	bad := bytes.Clone(data)
	bad[12345] ^= 1
	writePiece(t, p, bad, [2]int{0, len(bad)})
	require.NoError(t, p.SaveState([]byte("all pieces")))

	_, err := p.Commit(t.Context())
	require.ErrorIs(t, err, castore.ErrDigestMismatch)
	_, err = s.Stat(d)
	require.ErrorIs(t, err, castore.ErrNotFound)
	require.Empty(t, dirNames(t, filepath.Join(dir, "blobs", "sha256")))
	require.Empty(t, s.Partials())
	require.NoDirExists(t, partialDir(dir, d))
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))
	require.InDelta(t, 1, metricValue(t, reg, "krakenctl_castore_digest_mismatches_total"), 0)
	_, err = p.WriteAt([]byte{1}, 0)
	require.ErrorIs(t, err, fs.ErrClosed, "the Partial is spent")

	// The download starts over from nothing.
	p2 := openPartial(t, s, d, len(data))
	state, err := p2.State()
	require.NoError(t, err)
	require.Nil(t, state)
	require.Equal(t, make([]byte, len(data)), readAll(t, p2, len(data)))
}

func TestPartialVerifyChecksWithoutCommitting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	s := openStore(t, dir, castore.Options{Registerer: reg})
	data := blobData(331, 3<<20)
	d := digest.FromBytes(data)
	p := openPartial(t, s, d, len(data))
	writePiece(t, p, data, [2]int{0, len(data)})

	// A good blob: verified, frozen whole, but not in the store until Commit.
	require.NoError(t, p.Verify(t.Context()))
	require.Equal(t, int64(len(data)), p.Hashed())
	_, err := s.Stat(d)
	require.ErrorIs(t, err, castore.ErrNotFound)
	require.Len(t, s.Partials(), 1)
	_, err = p.WriteAt([]byte{0}, p.Size()-1)
	require.ErrorIs(t, err, castore.ErrRangeFrozen)
	require.NoError(t, p.Verify(t.Context()), "verifying twice is harmless")
	_, err = p.Commit(t.Context())
	require.NoError(t, err)
	require.Equal(t, data, readBlob(t, s, d))
	require.Zero(t, metricValue(t, reg, "krakenctl_castore_digest_mismatches_total"))

	// A bad one: the Partial is spent and gone, as after a failed Commit.
	data2 := blobData(332, 1<<20)
	d2 := digest.FromBytes(data2)
	p2 := openPartial(t, s, d2, len(data2))
	bad := bytes.Clone(data2)
	bad[len(bad)-1] ^= 1
	writePiece(t, p2, bad, [2]int{0, len(bad)})
	err = p2.Verify(t.Context())
	require.ErrorIs(t, err, castore.ErrDigestMismatch)
	require.InDelta(t, 1, metricValue(t, reg, "krakenctl_castore_digest_mismatches_total"), 0)
	require.NoDirExists(t, partialDir(dir, d2))
	_, err = s.Stat(d2)
	require.ErrorIs(t, err, castore.ErrNotFound)
	_, err = p2.Commit(t.Context())
	require.ErrorIs(t, err, fs.ErrClosed)

	// A cancelled ctx with bytes left to hash changes nothing; a retry succeeds.
	data3 := blobData(333, 2<<20)
	d3 := digest.FromBytes(data3)
	p3 := openPartial(t, s, d3, len(data3))
	writePiece(t, p3, data3, [2]int{0, len(data3)})
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, p3.Verify(cancelled), context.Canceled)
	require.Len(t, s.Partials(), 1)
	require.NoError(t, p3.Verify(t.Context()))
}

func TestPartialResumesAfterReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := blobData(340, 2<<20+7)
	d := digest.FromBytes(data)
	ps := pieces(len(data), 128<<10)
	bitfield := make([]byte, len(ps))

	s, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	p, err := s.OpenPartial(d, int64(len(data)))
	require.NoError(t, err)
	state, err := p.State()
	require.NoError(t, err)
	require.Nil(t, state, "a new partial download has no state")
	for i := 0; i < len(ps); i += 2 { // Every other piece.
		writePiece(t, p, data, ps[i])
		bitfield[i] = 1
	}
	require.NoError(t, p.SaveState(bitfield))
	require.NoError(t, p.HashTo(t.Context(), int64(ps[0][1])))
	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "Close is idempotent")
	require.NoError(t, s.Close())

	s = openStore(t, dir, castore.Options{})
	infos := s.Partials()
	require.Len(t, infos, 1)
	require.Equal(t, d, infos[0].Digest)
	require.Equal(t, int64(len(data)), infos[0].Size)
	require.False(t, infos[0].ModTime.IsZero())

	p = openPartial(t, s, d, len(data))
	require.Zero(t, p.Hashed(), "the hash is not persisted")
	state, err = p.State()
	require.NoError(t, err)
	require.Equal(t, bitfield, state)
	got := readAll(t, p, len(data))
	for i, r := range ps {
		if bitfield[i] == 1 {
			require.Equal(t, data[r[0]:r[1]], got[r[0]:r[1]], "piece %d", i)
			continue
		}
		require.Equal(t, make([]byte, r[1]-r[0]), got[r[0]:r[1]], "piece %d", i)
		writePiece(t, p, data, r)
	}
	_, err = p.Commit(t.Context())
	require.NoError(t, err)
	require.Equal(t, data, readBlob(t, s, d))
}

func TestPartialDamagedStateReadsAsNone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	d := digest.FromString("damaged")
	p := openPartial(t, s, d, 100)
	require.NoError(t, p.SaveState([]byte{}))
	state, err := p.State()
	require.NoError(t, err)
	require.Equal(t, []byte{}, state, "an empty state is a state")

	require.NoError(t, p.SaveState([]byte("bitfield")))
	stateFile := filepath.Join(partialDir(dir, d), "state")
	b, err := os.ReadFile(stateFile)
	require.NoError(t, err)
	for name, damaged := range map[string][]byte{
		"flipped":   append(append([]byte{}, b[:6]...), append([]byte{b[6] ^ 0xff}, b[7:]...)...),
		"truncated": b[:len(b)-1],
		"empty":     {},
		"foreign":   []byte("bitfield"),
	} {
		require.NoError(t, os.WriteFile(stateFile, damaged, 0o600))
		state, err := p.State()
		require.NoError(t, err, name)
		require.Nil(t, state, name)
	}

	require.ErrorIs(t, p.SaveState(make([]byte, castore.MaxPartialState+1)), castore.ErrOutOfRange)
	big := blobData(341, castore.MaxPartialState)
	require.NoError(t, p.SaveState(big))
	state, err = p.State()
	require.NoError(t, err)
	require.Equal(t, big, state)
}

func TestPartialOfAnotherSizeIsDiscarded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	d := digest.FromString("resized")
	p, err := s.OpenPartial(d, 1000)
	require.NoError(t, err)
	_, err = p.WriteAt(bytes.Repeat([]byte{7}, 1000), 0)
	require.NoError(t, err)
	require.NoError(t, p.SaveState([]byte("everything")))
	require.NoError(t, p.Close())

	p = openPartial(t, s, d, 1500)
	require.Equal(t, int64(1500), p.Size())
	state, err := p.State()
	require.NoError(t, err)
	require.Nil(t, state, "the state of the other size is gone")
	require.Equal(t, make([]byte, 1500), readAll(t, p, 1500), "and so are its bytes")
	require.Equal(t, int64(1500), s.Partials()[0].Size)
	require.NoFileExists(t, filepath.Join(partialDir(dir, d), "state"))
}

func TestPartialBusyExistsAndInvalid(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{Capacity: 1 << 20})
	d := digest.FromString("busy")

	p, err := s.OpenPartial(d, 10)
	require.NoError(t, err)
	_, err = s.OpenPartial(d, 10)
	require.ErrorIs(t, err, castore.ErrPartialBusy)
	require.ErrorIs(t, s.RemovePartial(d), castore.ErrPartialBusy)
	require.NoError(t, p.Close())
	p, err = s.OpenPartial(d, 10)
	require.NoError(t, err, "Close releases the digest")
	require.NoError(t, p.Close())

	stored := ingest(t, s, []byte("stored"))
	_, err = s.OpenPartial(stored, 6)
	require.ErrorIs(t, err, castore.ErrExists)

	for _, bad := range []digest.Digest{"", "sha256:bad", "md5:d41d8cd98f00b204e9800998ecf8427e",
		digest.Digest("sha256:" + string(bytes.Repeat([]byte("A"), 64)))} {
		_, err = s.OpenPartial(bad, 1)
		require.ErrorIs(t, err, castore.ErrInvalidDigest, "digest %q", bad)
		require.ErrorIs(t, s.RemovePartial(bad), castore.ErrInvalidDigest, "digest %q", bad)
	}
	_, err = s.OpenPartial(d, -1)
	require.ErrorIs(t, err, castore.ErrOutOfRange)
	_, err = s.OpenPartial(d, 1<<20+1)
	require.ErrorIs(t, err, castore.ErrFull, "a blob larger than the capacity could never be committed")
	require.Equal(t, []digest.Digest{d}, partialDigests(s), "failed opens create nothing")
}

func partialDigests(s *castore.Store) []digest.Digest {
	var ds []digest.Digest
	for _, pi := range s.Partials() {
		ds = append(ds, pi.Digest)
	}
	return ds
}

func TestPartialBounds(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	data := blobData(350, 1000)
	d := digest.FromBytes(data)
	p := openPartial(t, s, d, len(data))

	for _, w := range []struct {
		off int64
		n   int
	}{{-1, 1}, {1000, 1}, {999, 2}, {1001, 0}, {0, 1001}, {1 << 62, 10}} {
		n, err := p.WriteAt(bytes.Repeat([]byte{9}, w.n), w.off)
		require.ErrorIs(t, err, castore.ErrOutOfRange, "%d bytes at %d", w.n, w.off)
		require.Zero(t, n)
	}
	require.Equal(t, make([]byte, 1000), readAll(t, p, 1000), "a refused write writes nothing")
	_, err := p.WriteAt(nil, 1000)
	require.NoError(t, err, "an empty write at the end is in bounds")
	writePiece(t, p, data, [2]int{0, 1000})

	// io.ReaderAt semantics, checked by the standard library's reader tests.
	require.NoError(t, iotest.TestReader(io.NewSectionReader(p, 0, 1000), data))
	buf := make([]byte, 10)
	n, err := p.ReadAt(buf, 995)
	require.ErrorIs(t, err, io.EOF)
	require.Equal(t, 5, n)
	require.Equal(t, data[995:], buf[:5])
	n, err = p.ReadAt(buf, 1000)
	require.Equal(t, io.EOF, err, "io.EOF itself, as io.ReaderAt callers may compare it")
	require.Zero(t, n)
	_, err = p.ReadAt(buf, -1)
	require.ErrorIs(t, err, castore.ErrOutOfRange)

	require.ErrorIs(t, p.HashTo(t.Context(), -1), castore.ErrOutOfRange)
	require.ErrorIs(t, p.HashTo(t.Context(), 1001), castore.ErrOutOfRange)
	require.Zero(t, p.Hashed())
	_, err = p.Commit(t.Context())
	require.NoError(t, err)

	// An empty blob is a partial download of no bytes.
	empty := digest.FromBytes(nil)
	pe := openPartial(t, s, empty, 0)
	_, err = pe.WriteAt([]byte{1}, 0)
	require.ErrorIs(t, err, castore.ErrOutOfRange)
	info, err := pe.Commit(t.Context())
	require.NoError(t, err)
	require.Zero(t, info.Size)
	require.Empty(t, readBlob(t, s, empty))
}

func TestPartialOpenFileServesWhileDownloadingAndSurvivesCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(360, 2<<20+3)
	d := digest.FromBytes(data)
	p := openPartial(t, s, d, len(data))
	half := len(data) / 2
	writePiece(t, p, data, [2]int{half, len(data)})

	f, err := p.OpenFile()
	require.NoError(t, err)
	defer func() { _ = f.Close() }() // read-only
	g, err := p.OpenFile()
	require.NoError(t, err)
	defer func() { _ = g.Close() }() // read-only

	// Send the written half over TCP straight from the descriptor, as a peer connection would.
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
	_, err = f.Seek(int64(half), io.SeekStart)
	require.NoError(t, err)
	n, err := io.CopyN(conn, f, int64(len(data)-half))
	require.NoError(t, err)
	require.Equal(t, int64(len(data)-half), n)
	require.NoError(t, conn.Close())
	require.Equal(t, data[half:], <-received)

	// Each descriptor has its own offset; the file is read-only.
	off, err := g.Seek(0, io.SeekCurrent)
	require.NoError(t, err)
	require.Zero(t, off)
	_, err = g.Write([]byte{1})
	require.Error(t, err)

	writePiece(t, p, data, [2]int{0, half})
	_, err = p.Commit(t.Context())
	require.NoError(t, err)
	// The descriptors outlive the commit and read the blob, which is the same file.
	_, err = f.Seek(0, io.SeekStart)
	require.NoError(t, err)
	got, err := io.ReadAll(f)
	require.NoError(t, err)
	require.Equal(t, data, got)
	got, err = io.ReadAll(g)
	require.NoError(t, err)
	require.Equal(t, data, got)
}

func TestPartialOpenFileOutlivesClose(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	d := digest.FromString("outlives")
	p, err := s.OpenPartial(d, 4)
	require.NoError(t, err)
	_, err = p.WriteAt([]byte("abcd"), 0)
	require.NoError(t, err)
	f, err := p.OpenFile()
	require.NoError(t, err)
	defer func() { require.NoError(t, f.Close()) }()
	require.NoError(t, p.Close())
	_, err = p.OpenFile()
	require.ErrorIs(t, err, fs.ErrClosed)
	got, err := io.ReadAll(f)
	require.NoError(t, err)
	require.Equal(t, "abcd", string(got))
}

func TestPartialConcurrentWritesReadsAndHashing(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	data := blobData(370, 4<<20+99)
	d := digest.FromBytes(data)
	p := openPartial(t, s, d, len(data))
	ps := pieces(len(data), 64<<10)

	// Four writers take pieces in a shuffled order; a hasher follows the complete prefix, as a
	// scheduler would, and readers re-read written pieces meanwhile.
	order := rand.New(rand.NewPCG(3, 4)).Perm(len(ps))
	work := make(chan int)
	done := make(chan int, len(ps))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 4 {
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for i := range work {
				r := ps[i]
				if _, err := p.WriteAt(data[r[0]:r[1]], int64(r[0])); err != nil {
					errs <- err
					return
				}
				n, err := p.ReadAt(buf[:r[1]-r[0]], int64(r[0]))
				if err != nil && !errors.Is(err, io.EOF) {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], data[r[0]:r[1]]) {
					errs <- io.ErrUnexpectedEOF
					return
				}
				done <- i
			}
		})
	}
	hashed := make(chan error, 1)
	go func() {
		have := make([]bool, len(ps))
		next := 0
		for range ps {
			have[<-done] = true
			for next < len(ps) && have[next] {
				next++
			}
			if next > 0 {
				if err := p.HashTo(t.Context(), int64(ps[next-1][1])); err != nil {
					hashed <- err
					return
				}
			}
		}
		hashed <- nil
	}()
	for _, i := range order {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, <-hashed)
	require.Equal(t, p.Size(), p.Hashed())
	_, err := p.Commit(t.Context())
	require.NoError(t, err)
	require.Equal(t, data, readBlob(t, s, d))
}

func TestPartialCommitEvictsOrKeepsThePartialWhenFull(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 1000
	s := openStore(t, dir, castore.Options{Capacity: 2 * size})
	a := ingest(t, s, blobData(380, size))
	b := ingest(t, s, blobData(381, size))

	// C evicts A, the least recently used.
	cData := blobData(382, size)
	c := digest.FromBytes(cData)
	pc := openPartial(t, s, c, size)
	writePiece(t, pc, cData, [2]int{0, size})
	_, err := pc.Commit(t.Context())
	require.NoError(t, err)
	_, err = s.Stat(a)
	require.ErrorIs(t, err, castore.ErrNotFound)
	_, err = s.Stat(b)
	require.NoError(t, err)

	// With B and C held there is no room for E: the reservation OpenPartial takes fails with
	// ErrFull before anything is written, and evicts nothing.
	releaseB, releaseC := s.Hold(b), s.Hold(c)
	defer releaseC()
	eData := blobData(383, size)
	e := digest.FromBytes(eData)
	_, err = s.OpenPartial(e, size)
	require.ErrorIs(t, err, castore.ErrFull)
	require.Empty(t, partialDigests(s))
	_, err = s.Stat(b)
	require.NoError(t, err, "a refused reservation evicts nothing")
	used, _ := s.Usage()
	require.Equal(t, int64(2*size), used)

	// Once B may go, opening E evicts it at once, before a byte of E is written.
	releaseB()
	pe := openPartial(t, s, e, size)
	_, err = s.Stat(b)
	require.ErrorIs(t, err, castore.ErrNotFound)
	require.Equal(t, int64(size), s.Reserved())
	writePiece(t, pe, eData, [2]int{0, size})
	_, err = pe.Commit(t.Context())
	require.NoError(t, err)
	require.Equal(t, eData, readBlob(t, s, e))
	require.Zero(t, s.Reserved())
	require.Empty(t, s.Partials())
}

func TestPartialCommitOfBlobStoredMeanwhile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(390, 5000)
	d := digest.FromBytes(data)
	p := openPartial(t, s, d, len(data))
	writePiece(t, p, data, [2]int{0, 100}) // Incomplete: it is not hashed at all.
	ingested := ingest(t, s, data)
	info, err := p.Commit(t.Context())
	require.NoError(t, err)
	require.Equal(t, ingested, info.Digest)
	require.Equal(t, int64(len(data)), info.Size)
	require.Zero(t, p.Hashed())
	require.Empty(t, s.Partials())
	require.NoDirExists(t, partialDir(dir, d))
	require.Equal(t, data, readBlob(t, s, d))
}

func TestPartialSHA512(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	data := blobData(400, 300000)
	sum := sha512.Sum512(data)
	d := digest.NewDigestFromEncoded(digest.SHA512, hex.EncodeToString(sum[:]))
	p := openPartial(t, s, d, len(data))
	writePiece(t, p, data, [2]int{100000, len(data)})
	writePiece(t, p, data, [2]int{0, 100000})
	require.NoError(t, p.HashTo(t.Context(), 100000))
	_, err := p.Commit(t.Context())
	require.NoError(t, err)
	require.Equal(t, data, readBlob(t, s, d))
}

func TestRemovePartial(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	d := digest.FromString("remove me")
	require.NoError(t, s.RemovePartial(d), "removing what is absent succeeds")
	p, err := s.OpenPartial(d, 10)
	require.NoError(t, err)
	require.NoError(t, p.SaveState([]byte("x")))
	f, err := p.OpenFile()
	require.NoError(t, err)
	defer func() { require.NoError(t, f.Close()) }()
	require.NoError(t, p.Close())
	require.NoError(t, s.RemovePartial(d))
	require.Empty(t, s.Partials())
	require.NoDirExists(t, partialDir(dir, d))
	require.Empty(t, dirNames(t, filepath.Join(dir, "tmp")))
	_, err = io.ReadAll(f)
	require.NoError(t, err, "an open descriptor outlives the removal")
}

func TestOpenKeepsPartialsAndRemovesStrays(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	keep := digest.FromString("keep")
	p, err := s.OpenPartial(keep, 3)
	require.NoError(t, err)
	_, err = p.WriteAt([]byte("abc"), 0)
	require.NoError(t, err)
	require.NoError(t, p.SaveState([]byte("s")))
	require.NoError(t, p.Close())
	committed := ingest(t, s, []byte("committed"))
	require.NoError(t, s.Close())

	write := func(rel string) {
		path := filepath.Join(dir, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte("x"), 0o644))
	}
	// Leftovers of a crash between a commit's rename and its cleanup, of a crash while
	// creating, and strangers.
	write("partial/sha256/" + committed.Encoded() + "/data")
	write("partial/sha256/" + digest.FromString("no data").Encoded() + "/state")
	require.NoError(t, os.MkdirAll(partialDir(dir, digest.FromString("empty")), 0o755))
	write("partial/sha256/not-a-digest/data")
	write("partial/sha256/" + digest.FromString("a file").Encoded())
	write("partial/md5/d41d8cd98f00b204e9800998ecf8427e/data")
	write("partial/stray")

	s = openStore(t, dir, castore.Options{})
	require.Equal(t, []digest.Digest{keep}, partialDigests(s))
	require.Equal(t, []string{keep.Encoded()}, dirNames(t, filepath.Join(dir, "partial", "sha256")))
	require.ElementsMatch(t, []string{"sha256", "sha384", "sha512"}, dirNames(t, filepath.Join(dir, "partial")))
	p = openPartial(t, s, keep, 3)
	require.Equal(t, []byte("abc"), readAll(t, p, 3))
	state, err := p.State()
	require.NoError(t, err)
	require.Equal(t, []byte("s"), state)
}

func TestPartialAfterStoreClose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	data := []byte("hello, partial")
	d := digest.FromBytes(data)
	p, err := s.OpenPartial(d, int64(len(data)))
	require.NoError(t, err)
	writePiece(t, p, data, [2]int{0, len(data)})
	require.NoError(t, p.SaveState([]byte("all")))
	require.NoError(t, s.Close())

	// Reads go on, as for an open Blob; changes to the directory stop.
	require.Equal(t, data, readAll(t, p, len(data)))
	f, err := p.OpenFile()
	require.NoError(t, err)
	got, err := io.ReadAll(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, data, got)
	state, err := p.State()
	require.NoError(t, err)
	require.Equal(t, "all", string(state))
	require.NoError(t, p.HashTo(t.Context(), 5))
	_, err = p.WriteAt([]byte("x"), int64(len(data)-1))
	require.ErrorIs(t, err, castore.ErrClosed)
	require.ErrorIs(t, p.SaveState(nil), castore.ErrClosed)
	_, err = p.Commit(t.Context())
	require.ErrorIs(t, err, castore.ErrClosed)
	require.NoError(t, p.Close())

	_, err = s.OpenPartial(d, 1)
	require.ErrorIs(t, err, castore.ErrClosed)
	require.ErrorIs(t, s.RemovePartial(d), castore.ErrClosed)
	require.Nil(t, s.Partials())

	// Nothing was lost: the next process resumes the download and commits it.
	s = openStore(t, dir, castore.Options{})
	p = openPartial(t, s, d, len(data))
	_, err = p.Commit(t.Context())
	require.NoError(t, err)
	require.Equal(t, data, readBlob(t, s, d))
}

func TestPartialCloseDuringWrites(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), castore.Options{})
	d := digest.FromString("close during writes")
	const size = 1 << 20
	p, err := s.OpenPartial(d, size)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			buf := bytes.Repeat([]byte{byte(w)}, 4096)
			for off := int64(w) * size / 4; off < int64(w+1)*size/4; off += 4096 {
				if _, err := p.WriteAt(buf, off); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	require.NoError(t, p.Close())
	wg.Wait()
	close(errs)
	for err := range errs {
		require.ErrorIs(t, err, fs.ErrClosed, "a write fails only because of Close")
	}
	_, err = p.WriteAt([]byte{1}, 0)
	require.ErrorIs(t, err, fs.ErrClosed)
	p2 := openPartial(t, s, d, size)
	require.Equal(t, int64(size), p2.Size(), "the digest was released, the file kept")
}

// TestPartialHashToOfATruncatedFileFails truncates the data file under an open Partial, as
// another process might: hashing the missing bytes must fail with an error, and so must Verify.
func TestPartialHashToOfATruncatedFileFails(t *testing.T) {
	t.Parallel()
	data := blobData(801, 3<<20+100)
	d := digest.FromBytes(data)
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	p := openPartial(t, s, d, len(data))
	for _, r := range pieces(len(data), 1<<20) {
		writePiece(t, p, data, r)
	}
	require.NoError(t, os.Truncate(filepath.Join(partialDir(dir, d), "data"), 1<<20+5))
	require.ErrorContains(t, p.HashTo(t.Context(), int64(len(data))), "truncated")
	require.Less(t, p.Hashed(), int64(len(data)))
	require.Error(t, p.Verify(t.Context()))
}
