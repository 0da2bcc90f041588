package castore

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Ingest stores the bytes of r as the blob expected, in one piece: IngestWith without
// options.
func (s *Store) Ingest(ctx context.Context, expected digest.Digest, r io.Reader) (Info, error) {
	return s.IngestWith(ctx, expected, r, IngestOptions{})
}

// IngestOptions tune IngestWith.
type IngestOptions struct {
	// Size is the blob's declared length (a Content-Length, a size from metainfo): reserved
	// before any byte is read, so a blob that cannot fit fails with ErrFull at once. 0 means
	// unknown: space is then reserved chunk by chunk as the bytes arrive.
	Size int64
	// Prepare, if set, runs once the bytes are verified and durable, before the blob becomes
	// visible (see Staged).
	Prepare PrepareFunc
}

// PrepareFunc is called by a commit after the blob's bytes are verified and fsynced and before
// the blob becomes visible to anyone: what it records (sidecar metadata with Staged.PutMeta,
// durable work of the caller's own such as a write-back task) is in place before the blob is,
// so a crash at any point leaves the blob either absent or complete with it. An error aborts
// the commit: nothing becomes visible. It is not called when the blob is already stored.
type PrepareFunc func(ctx context.Context, st *Staged) error

// Staged is a verified blob about to be committed, handed to a PrepareFunc.
type Staged struct {
	digest digest.Digest
	size   int64
	path   string
	meta   map[string][]byte
}

// Digest returns the digest the blob will be stored under.
func (st *Staged) Digest() digest.Digest { return st.digest }

// Size returns the blob's length in bytes.
func (st *Staged) Size() int64 { return st.size }

// Open opens the verified bytes read-only (to compute metainfo, say); the caller closes the
// file, before the PrepareFunc returns.
func (st *Staged) Open() (*os.File, error) {
	f, err := os.Open(st.path)
	if err != nil {
		return nil, fmt.Errorf("open staged %s: %w", st.digest, err)
	}
	return f, nil
}

// PutMeta sets sidecar metadata kind of the blob, as Store.PutMeta would once it is committed:
// it is written durably and moved into place before the blob.
func (st *Staged) PutMeta(kind string, data []byte) error {
	if err := checkKind(kind); err != nil {
		return fmt.Errorf("stage metadata %s of %s: %w", kind, st.digest, err)
	}
	if st.meta == nil {
		st.meta = map[string][]byte{}
	}
	st.meta[kind] = slices.Clone(data)
	return nil
}

// IngestWith stores the bytes of r as the blob expected, in one piece. It reserves space
// (opts.Size up front, or as bytes arrive), hashes the bytes while writing them to a
// temporary file, and commits the file only if they match expected: on ErrDigestMismatch,
// ErrFull (no room within the capacity, or the disk itself is full), a read error or a
// cancelled ctx nothing is stored and the temporary file and its reservation are gone. If the
// blob is already stored it returns its Info at once, without reading r. Concurrent ingests of
// the same digest are safe: one commits, the others find it committed. It does not close r.
//
// If the final directory sync fails the error is returned, but the blob, already verified,
// stays committed (a retry finds it).
func (s *Store) IngestWith(ctx context.Context, expected digest.Digest, r io.Reader, opts IngestOptions) (Info, error) {
	info, err := s.ingest(ctx, expected, r, opts)
	if err != nil {
		return Info{}, s.full("ingest", fmt.Errorf("ingest %s: %w", expected, err))
	}
	return info, nil
}

func (s *Store) ingest(ctx context.Context, expected digest.Digest, r io.Reader, opts IngestOptions) (Info, error) {
	if err := checkDigest(expected); err != nil {
		return Info{}, err
	}
	if info, ok, err := s.lookup(expected); err != nil || ok {
		return info, err
	}
	res, err := s.reserve(max(opts.Size, 0))
	if err != nil {
		return Info{}, err
	}
	defer res.release() // Nothing left to release once the commit converted it.
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
	n, err := s.copyHashed(ctx, f, h, r, 0, res)
	if err != nil {
		return Info{}, err
	}
	if got := digest.NewDigest(expected.Algorithm(), h); got != expected {
		s.metrics.mismatched()
		return Info{}, fmt.Errorf("%w: the %d bytes read have digest %s", ErrDigestMismatch, n, got)
	}
	info, renamed, err := s.commit(ctx, f, expected, n, res, opts.Prepare)
	return info, err
}

// commit makes the verified file f (written, still open) the blob d of size bytes: fsync, the
// caller's prepare (if d is not stored yet), its staged metadata into place, the rename into
// blobs/ that makes the blob visible, an fsync of the directory. The reservation res becomes
// the blob's size. It closes f; it removes nothing. renamed reports whether f's path is now
// the blob, so the caller removes f's path when it is false.
func (s *Store) commit(ctx context.Context, f *os.File, d digest.Digest, size int64, res *reservation, prepare PrepareFunc) (info Info, renamed bool, err error) {
	err = s.step(stepSync)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return Info{}, false, fmt.Errorf("sync blob: %w", err)
	}
	if err := f.Close(); err != nil {
		return Info{}, false, fmt.Errorf("close blob: %w", err)
	}
	now := s.now()
	if err := os.Chtimes(f.Name(), now, now); err != nil {
		return Info{}, false, fmt.Errorf("date blob: %w", err)
	}
	if info, ok, err := s.lookup(d); err != nil || ok {
		return info, false, err
	}
	var staged string // The directory of staged metadata, moved into meta/ before the blob.
	if prepare != nil {
		if err := s.step(stepPrepare); err != nil {
			return Info{}, false, err
		}
		st := &Staged{digest: d, size: size, path: f.Name()}
		if err := prepare(ctx, st); err != nil {
			return Info{}, false, fmt.Errorf("prepare commit: %w", err)
		}
		if len(st.meta) > 0 {
			if staged, err = s.stageMeta(st.meta); err != nil {
				return Info{}, false, fmt.Errorf("stage metadata: %w", err)
			}
			defer func() { _ = os.RemoveAll(staged) }() // Gone from there once moved into place.
		}
	}
	path := s.blobPath(d)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Info{}, false, ErrClosed
	}
	if e, ok := s.entries[d]; ok { // Committed by someone else meanwhile.
		persist := s.touchLocked(e)
		info = e.info()
		s.mu.Unlock()
		if persist {
			s.persistTouch(d, info.LastAccess)
		}
		return info, false, nil
	}
	// The reservation covers the blob unless it grew past what was reserved (it never does
	// when every byte went through copyHashed with res); make room for the rest.
	if extra := size - res.n; extra > 0 {
		if err := s.makeRoomLocked(extra); err != nil {
			s.mu.Unlock()
			return Info{}, false, err
		}
	}
	if err := s.placeLocked(d, staged, f.Name(), path); err != nil {
		s.mu.Unlock()
		return Info{}, false, err
	}
	s.reserved -= res.n
	res.n = 0
	e := &entry{digest: d, size: size, atime: now, persisted: now, created: now}
	e.elem = s.lru.PushFront(e)
	s.entries[d] = e
	s.used += size
	s.metrics.update(s.used, len(s.entries))
	s.metrics.reservedBytes(s.reserved)
	s.metrics.ingested(size)
	info = e.info()
	s.mu.Unlock()

	err = s.step(stepRenamed)
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return Info{}, true, err
	}
	return info, true, nil
}

// placeLocked moves the staged metadata directory (if any) into meta/, durably, then the
// verified file tmp into place as the blob at path: the blob is visible only once its
// metadata is, so a crash in between leaves metadata without a blob, which Open removes.
// s.mu is held.
func (s *Store) placeLocked(d digest.Digest, staged, tmp, path string) error {
	if staged != "" {
		dst := s.metaDir(d)
		err := s.step(stepMetaRename)
		if err == nil {
			// Metadata of an earlier copy of the blob, evicted while its removal failed.
			err = os.RemoveAll(dst)
		}
		if err == nil {
			err = os.MkdirAll(filepath.Dir(dst), 0o755)
		}
		if err == nil {
			err = os.Rename(staged, dst)
		}
		if err == nil {
			err = syncDir(filepath.Dir(dst))
		}
		if err != nil {
			_ = os.RemoveAll(dst)
			return fmt.Errorf("move metadata into place: %w", err)
		}
	}
	err := s.step(stepRename)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		if staged != "" {
			_ = os.RemoveAll(s.metaDir(d))
		}
		return fmt.Errorf("rename blob into place: %w", err)
	}
	return nil
}

// stageMeta writes sidecar metadata, fsynced, into a new directory in tmp/ and returns it.
func (s *Store) stageMeta(meta map[string][]byte) (string, error) {
	if err := s.step(stepMeta); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(s.path(dirTmp), "meta-")
	if err != nil {
		return "", err
	}
	for kind, data := range meta {
		if err := writeSynced(filepath.Join(dir, kind), data); err != nil {
			_ = os.RemoveAll(dir)
			return "", err
		}
	}
	if err := syncDir(dir); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// writeSynced creates path with data and fsyncs it.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyBufSize is the chunk size of copies into the store: large enough that per-call costs
// vanish, small enough that a cancelled ctx is noticed within a millisecond or so.
const copyBufSize = 1 << 20

// copyBufsInFlight is how many chunks a copy into a file holds at once: one being read and
// hashed, the others queued for or being written.
const copyBufsInFlight = 3

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyHashed copies r into f (at f's current offset) and h until r ends, and returns the bytes
// copied. It checks ctx between chunks, and grows res to cover start plus the bytes copied
// before each chunk is written, failing with ErrFull when no room can be made. Hashing and writing overlap: this goroutine reads and hashes a chunk
// while another writes the previous ones, so an ingest takes about as long as the slower of
// the two rather than their sum. On Linux the writer also starts write-back of what it has
// written every few MiB, so the fsync at commit finds little left to do.
func (s *Store) copyHashed(ctx context.Context, f *os.File, h hash.Hash, r io.Reader, start int64, res *reservation) (int64, error) {
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
				err := s.step(stepWrite)
				if err == nil {
					_, err = f.Write((*c.buf)[:c.n])
				}
				if err != nil {
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
				if err := res.growTo(start + n + int64(k)); err != nil {
					free <- buf
					return n, err
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
