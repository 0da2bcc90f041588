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

// copyBufsInFlight is how many chunks a copy into a file holds at once: one being read and
// hashed, the others queued for or being written.
const copyBufsInFlight = 3

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyHashed copies r into f (at f's current offset) and h until r ends, and returns the bytes
// copied. It checks ctx between chunks, and fails with ErrFull once start plus the bytes copied
// exceed the capacity. Hashing and writing overlap: this goroutine reads and hashes a chunk
// while another writes the previous ones, so an ingest takes about as long as the slower of
// the two rather than their sum. On Linux the writer also starts write-back of what it has
// written every few MiB, so the fsync at commit finds little left to do.
func (s *Store) copyHashed(ctx context.Context, f *os.File, h hash.Hash, r io.Reader, start int64) (int64, error) {
	free := make(chan *[]byte, copyBufsInFlight)
	for range copyBufsInFlight {
		free <- copyBufs.Get().(*[]byte)
	}
	type chunk struct {
		buf *[]byte
		n   int
	}
	full := make(chan chunk, copyBufsInFlight)
	failed := make(chan struct{}) // Closed when the writer fails.
	var werr error                // Set by the writer before it closes failed.
	done := make(chan struct{})
	go func() {
		defer close(done)
		wb := newWriteBack(f, start)
		for c := range full {
			if werr == nil {
				if _, err := f.Write((*c.buf)[:c.n]); err != nil {
					werr = fmt.Errorf("write blob: %w", err)
					close(failed)
				} else {
					wb.wrote(c.n)
				}
			}
			free <- c.buf
		}
	}()

	n, err := func() (int64, error) {
		var n int64
		for {
			var buf *[]byte
			select {
			case buf = <-free:
			case <-failed:
				return n, nil // The writer's error is reported below.
			}
			if err := ctx.Err(); err != nil {
				free <- buf
				return n, err
			}
			k, rerr := r.Read(*buf)
			if k > 0 {
				if s.capacity > 0 && start+n+int64(k) > s.capacity {
					free <- buf
					return n, fmt.Errorf("%w: more than the capacity of %d bytes", ErrFull, s.capacity)
				}
				h.Write((*buf)[:k]) // hash.Hash.Write never fails.
				full <- chunk{buf, k}
				n += int64(k)
			} else {
				free <- buf
			}
			if errors.Is(rerr, io.EOF) {
				return n, nil
			}
			if rerr != nil {
				return n, fmt.Errorf("read blob: %w", rerr)
			}
		}
	}()
	close(full)
	<-done
	for range copyBufsInFlight {
		copyBufs.Put(<-free)
	}
	if err == nil {
		err = werr
	}
	return n, err
}

// hashReader feeds h the bytes of r and returns how many there were, checking ctx between
// chunks.
func hashReader(ctx context.Context, h hash.Hash, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, rerr := r.Read(*bp)
		h.Write((*bp)[:k])
		n += int64(k)
		if errors.Is(rerr, io.EOF) {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("read: %w", rerr)
		}
	}
}
