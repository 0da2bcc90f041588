package castore

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Ingest stores the bytes of r as the blob expected, in one piece. It hashes the bytes while
// writing them to a temporary file, and commits the file only if they match expected: on
// ErrDigestMismatch, ErrFull, a read error or a cancelled ctx nothing is stored and the
// temporary file is gone. If the blob is already stored Ingest returns its Info at once,
// without reading r. Concurrent ingests of the same digest are safe: one commits, the others
// find it committed. Ingest does not close r.
//
// A blob larger than the capacity fails with ErrFull as soon as that many bytes are read.
// If the final directory sync fails the error is returned, but the blob, already verified,
// stays committed (a retry finds it).
func (s *Store) Ingest(ctx context.Context, expected digest.Digest, r io.Reader) (Info, error) {
	info, err := s.ingest(ctx, expected, r)
	if err != nil {
		return Info{}, fmt.Errorf("ingest %s: %w", expected, err)
	}
	return info, nil
}

func (s *Store) ingest(ctx context.Context, expected digest.Digest, r io.Reader) (Info, error) {
	if err := checkDigest(expected); err != nil {
		return Info{}, err
	}
	if info, ok, err := s.lookup(expected); err != nil || ok {
		return info, err
	}
	f, err := s.newTemp("ingest")
	if err != nil {
		return Info{}, err
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = f.Close() // Already closed on most paths; the temporary file goes either way.
			_ = os.Remove(f.Name())
		}
	}()
	h := expected.Algorithm().Hash()
	n, err := s.copyHashed(ctx, f, h, r, 0)
	if err != nil {
		return Info{}, err
	}
	if got := digest.NewDigest(expected.Algorithm(), h); got != expected {
		s.metrics.mismatched()
		return Info{}, fmt.Errorf("%w: the %d bytes read have digest %s", ErrDigestMismatch, n, got)
	}
	info, renamed, err := s.commit(f, expected, n)
	return info, err
}

// commit makes the verified file f (written, still open) the blob d of size bytes: fsync,
// rename into place if d is not stored yet and there is room, fsync the directory. It closes
// f; it removes nothing. renamed reports whether f's path is now the blob, so the caller
// removes f's path when it is false.
func (s *Store) commit(f *os.File, d digest.Digest, size int64) (info Info, renamed bool, err error) {
	if err := f.Sync(); err != nil {
		return Info{}, false, fmt.Errorf("sync blob: %w", err)
	}
	if err := f.Close(); err != nil {
		return Info{}, false, fmt.Errorf("close blob: %w", err)
	}
	now := s.now()
	if err := os.Chtimes(f.Name(), now, now); err != nil {
		return Info{}, false, fmt.Errorf("date blob: %w", err)
	}
	path := s.blobPath(d)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Info{}, false, ErrClosed
	}
	if e, ok := s.entries[d]; ok {
		persist := s.touchLocked(e)
		info = e.info()
		s.mu.Unlock()
		if persist {
			s.persistTouch(d, info.LastAccess)
		}
		return info, false, nil
	}
	if err := s.reserveLocked(size); err != nil {
		s.mu.Unlock()
		return Info{}, false, err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		s.mu.Unlock()
		return Info{}, false, fmt.Errorf("rename blob into place: %w", err)
	}
	e := &entry{digest: d, size: size, atime: now, persisted: now}
	e.elem = s.lru.PushFront(e)
	s.entries[d] = e
	s.used += size
	s.metrics.update(s.used, len(s.entries))
	s.metrics.ingested(size)
	info = e.info()
	s.mu.Unlock()

	if err := syncDir(filepath.Dir(path)); err != nil {
		return Info{}, true, err
	}
	return info, true, nil
}

// copyBufSize is the chunk size of copies into the store: large enough that per-call costs
// vanish, small enough that a cancelled ctx is noticed within a millisecond or so.
const copyBufSize = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyHashed copies r to w and h until r ends, checking ctx between chunks and failing with
// ErrFull once start plus the bytes copied exceed the capacity. It returns the bytes copied.
func (s *Store) copyHashed(ctx context.Context, w io.Writer, h hash.Hash, r io.Reader, start int64) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, rerr := r.Read(buf)
		if k > 0 {
			if s.capacity > 0 && start+n+int64(k) > s.capacity {
				return n, fmt.Errorf("%w: more than the capacity of %d bytes", ErrFull, s.capacity)
			}
			if _, err := w.Write(buf[:k]); err != nil {
				return n, fmt.Errorf("write blob: %w", err)
			}
			h.Write(buf[:k]) // hash.Hash.Write never fails.
			n += int64(k)
		}
		if errors.Is(rerr, io.EOF) {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("read blob: %w", rerr)
		}
	}
}
