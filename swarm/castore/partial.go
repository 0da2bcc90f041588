package castore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
)

// Sentinel errors of partial downloads, wrapped with %w; test them with errors.Is.
var (
	// ErrPartialBusy means another Partial for the digest is open in this process (or a
	// RemovePartial of it is running).
	ErrPartialBusy = errors.New("castore: partial download busy")
	// ErrExists means the blob is already committed, so there is nothing to download.
	ErrExists = errors.New("castore: blob already stored")
	// ErrOutOfRange means a write, hash or size falls outside the bounds of a partial download.
	ErrOutOfRange = errors.New("castore: out of range")
	// ErrRangeFrozen means a write overlaps the prefix of a partial download that HashTo or
	// Commit has hashed or started hashing: those bytes can no longer change.
	ErrRangeFrozen = errors.New("castore: range already hashed")
)

// MaxPartialState is the largest state SaveState accepts: enough for the bitfield of a blob of
// sixteen million pieces, or for a few hundred thousand byte ranges.
const MaxPartialState = 1 << 21

// dirPartial holds the partial downloads, as DIR/partial/<algorithm>/<hex>/{data,state}.
const dirPartial = "partial"

// Files of a partial download.
const (
	partialData  = "data"
	partialState = "state"
)

// The state file holds the caller's opaque state between a magic string and a checksum, so a
// file damaged on disk reads as no state rather than as a state that claims the wrong bytes:
//
//	magic "KCPS1" | state | CRC-32C of magic and state, 4 bytes big-endian
const partialStateMagic = "KCPS1"

// PartialInfo describes a partial download on disk.
type PartialInfo struct {
	Digest digest.Digest
	// Size is the blob's length in bytes: the length of the data file.
	Size int64
	// ModTime is the data file's modification time: about when a byte was last written.
	ModTime time.Time
}

// Partial is a blob being downloaded: a file of the blob's size in DIR/partial/, written in
// any order (WriteAt), readable while it is written (ReadAt, OpenFile), hashed as its prefix
// completes (HashTo) and finally committed as the blob (Commit) with its digest checked. The
// caller tracks which ranges hold verified bytes, and may persist that knowledge next to the
// data with SaveState, to resume after a restart: a new Store on the same directory lists the
// partial downloads (Store.Partials) and OpenPartial reopens one with its bytes and State.
//
// Concurrency: WriteAt, ReadAt, OpenFile, State, SaveState, Hashed, Digest and Size are safe
// for concurrent use; concurrent WriteAts must be to disjoint ranges (what overlapping ones
// leave is unspecified). HashTo and Commit are serialised by a mutex: a call waits for the one
// running. Close may be called at any time from any goroutine; calls running then finish or
// fail with an error wrapping fs.ErrClosed, as do all later calls but Close, Digest, Size and
// Hashed.
//
// Hashing freezes the prefix it covers: once HashTo(n) or Commit starts, a WriteAt that
// overlaps [0, n) fails with ErrRangeFrozen and changes nothing, so the bytes Commit renames
// into place are exactly the bytes it hashed and it never reads them twice.
//
// After Store.Close, a Partial stays readable as an open Blob does (ReadAt, OpenFile, State,
// HashTo) until it is closed, but WriteAt, SaveState and Commit fail with ErrClosed: the
// directory is no longer this process's to change.
type Partial struct {
	store  *Store
	digest digest.Digest
	size   int64
	dir    string
	res    *reservation // The blob's size, reserved until Commit converts it or Close releases it.

	hashMu   sync.Mutex   // Serialises HashTo and Commit; guards h and hashedN.
	h        hash.Hash    // Hash of the digest's algorithm over [0, hashedN).
	hashedN  int64        // Bytes fed to h.
	hashedAt atomic.Int64 // hashedN, for Hashed.

	// fileMu serialises what uses the directory by path (OpenFile, State, SaveState) with
	// Commit's rename and removal, and with Close. It is taken before mu.
	fileMu sync.Mutex

	// mu guards closed, frozen and f's lifetime: WriteAt and ReadAt hold it shared while they
	// use f, so whoever holds it exclusively knows that no write is in flight.
	mu     sync.RWMutex
	closed bool
	frozen int64    // WriteAt into [0, frozen) fails.
	f      *os.File // The data file, read-write.
}

func (s *Store) partialDir(d digest.Digest) string {
	return s.path(dirPartial, string(d.Algorithm()), d.Encoded())
}

// OpenPartial opens the partial download of blob d, of size bytes: the only Partial of d in
// this process until it is closed, so the caller must Close it (or Commit it). If DIR/partial holds one for d of that size it is
// resumed, bytes and saved state as they are; if it holds one of another size, that is
// discarded (state first) and recreated. A new partial download is a sparse file of size
// bytes, reading as zeros where nothing was written yet.
//
// It fails with an error wrapping ErrInvalidDigest for a malformed or unsupported digest,
// ErrOutOfRange for a negative size, ErrFull when size exceeds the capacity (the blob could
// never be committed), ErrExists when d is already committed (any partial download of it on
// disk is left alone; RemovePartial removes it), ErrPartialBusy while another Partial for d is
// open in this process, and ErrClosed after Close.
func (s *Store) OpenPartial(d digest.Digest, size int64) (*Partial, error) {
	p, err := s.openPartial(d, size)
	if err != nil {
		return nil, s.full("open partial", fmt.Errorf("open partial %s: %w", d, err))
	}
	return p, nil
}

func (s *Store) openPartial(d digest.Digest, size int64) (*Partial, error) {
	if err := checkDigest(d); err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("%w: negative size %d", ErrOutOfRange, size)
	}
	if s.capacity > 0 && size > s.capacity {
		return nil, fmt.Errorf("%w: blob of %d bytes exceeds the capacity of %d", ErrFull, size, s.capacity)
	}
	if _, err := s.Stat(d); err == nil {
		return nil, ErrExists
	} else if errors.Is(err, ErrClosed) {
		return nil, ErrClosed
	}
	if err := s.reservePartial(d); err != nil {
		return nil, err
	}
	res, err := s.reserve(size)
	if err != nil {
		s.releasePartial(d)
		return nil, err
	}
	f, err := s.openPartialData(d, size)
	if err != nil {
		res.release()
		s.releasePartial(d)
		return nil, err
	}
	return &Partial{
		store:  s,
		digest: d,
		size:   size,
		dir:    s.partialDir(d),
		res:    res,
		h:      d.Algorithm().Hash(),
		f:      f,
	}, nil
}

// openPartialData opens (creating it if needed) the data file of the partial download of d,
// which the caller has reserved, and makes it size bytes long.
func (s *Store) openPartialData(d digest.Digest, size int64) (*os.File, error) {
	dir := s.partialDir(d)
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, partialData), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*os.File, error) {
		_ = f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if !fi.Mode().IsRegular() {
		return fail(fmt.Errorf("%s is not a regular file", f.Name()))
	}
	if fi.Size() == size {
		return f, nil
	}
	// Another size: the bytes and the state describe another download. The state goes first
	// and for good, so that a crash in between never leaves a state beside data it does not
	// describe.
	err = os.Remove(filepath.Join(dir, partialState))
	switch {
	case err == nil:
		s.log.Info("castore: discarding partial download of another size", "digest", d,
			"size", fi.Size(), "want_size", size)
		if err := syncDir(dir); err != nil {
			return fail(err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fail(fmt.Errorf("remove state: %w", err))
	}
	if err := f.Truncate(0); err != nil {
		return fail(err)
	}
	if err := f.Truncate(size); err != nil {
		return fail(err)
	}
	return f, nil
}

// reservePartial marks d busy: a Partial of it is open, or it is being removed.
func (s *Store) reservePartial(d digest.Digest) error {
	s.partMu.Lock()
	defer s.partMu.Unlock()
	if s.partials[d] {
		return ErrPartialBusy
	}
	s.partials[d] = true
	return nil
}

func (s *Store) releasePartial(d digest.Digest) {
	s.partMu.Lock()
	delete(s.partials, d)
	s.partMu.Unlock()
}

// Partials returns the partial downloads on disk, open or not, sorted by digest: at startup,
// what there is to resume. It skips what it cannot read (Open removes what does not belong)
// and returns nil after Close.
func (s *Store) Partials() []PartialInfo {
	if s.isClosed() {
		return nil
	}
	var infos []PartialInfo
	for _, alg := range algorithms {
		names, err := os.ReadDir(s.path(dirPartial, string(alg)))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("castore: cannot list partial downloads", "algorithm", alg, "err", err)
			}
			continue
		}
		for _, de := range names {
			d := digest.NewDigestFromEncoded(alg, de.Name())
			if !de.IsDir() || checkDigest(d) != nil {
				continue
			}
			fi, err := os.Lstat(filepath.Join(s.partialDir(d), partialData))
			if err != nil || !fi.Mode().IsRegular() {
				continue // Being created or removed, or damaged.
			}
			infos = append(infos, PartialInfo{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()})
		}
	}
	slices.SortFunc(infos, func(a, b PartialInfo) int { return cmp.Compare(a.Digest, b.Digest) })
	return infos
}

// RemovePartial removes the partial download of d from disk, data and state. It succeeds when
// there is none, and fails with ErrPartialBusy while a Partial of d is open (Close it first),
// with ErrInvalidDigest for a malformed digest and with ErrClosed after Close.
func (s *Store) RemovePartial(d digest.Digest) error {
	if err := s.removePartial(d); err != nil {
		return fmt.Errorf("remove partial %s: %w", d, err)
	}
	return nil
}

func (s *Store) removePartial(d digest.Digest) error {
	if err := checkDigest(d); err != nil {
		return err
	}
	if s.isClosed() {
		return ErrClosed
	}
	if err := s.reservePartial(d); err != nil {
		return err
	}
	defer s.releasePartial(d)
	return s.removePartialDir(d)
}

// removePartialDir removes the partial download of d, which the caller has reserved: first out
// of partial/ in one rename (so Partials and a crash never see half of it), then from tmp/.
func (s *Store) removePartialDir(d digest.Digest) error {
	dir := s.partialDir(d)
	trash := s.path(dirTmp, "partial-"+d.Encoded()+"-"+randomID())
	err := os.Rename(dir, trash)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		if err := os.RemoveAll(dir); err != nil { // Slower, but the reservation keeps it unseen.
			return err
		}
	} else if err := os.RemoveAll(trash); err != nil {
		// Open empties tmp/, so this only costs disk space until then.
		s.log.Warn("castore: cannot remove partial download", "digest", d, "err", err)
	}
	return syncDir(filepath.Dir(dir))
}

// loadPartials keeps the partial downloads in partial/ that can be resumed: a directory named
// by a digest that is not committed, holding a data file. It removes everything else. Called by
// Open once the blobs are indexed.
func (s *Store) loadPartials() error {
	if err := os.MkdirAll(s.path(dirPartial), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dirPartial, err)
	}
	return s.scanDir(dirPartial, true, func(alg digest.Algorithm, name string, de fs.DirEntry) bool {
		d := digest.NewDigestFromEncoded(alg, name)
		if !de.IsDir() || checkDigest(d) != nil {
			return false
		}
		if _, ok := s.entries[d]; ok {
			return false // Committed before a crash let its partial be removed.
		}
		fi, err := os.Lstat(filepath.Join(s.partialDir(d), partialData))
		return err == nil && fi.Mode().IsRegular()
	})
}

// Digest returns the digest of the blob being downloaded.
func (p *Partial) Digest() digest.Digest { return p.digest }

// Size returns the blob's length in bytes.
func (p *Partial) Size() int64 { return p.size }

// Hashed returns the length of the prefix hashed so far by HashTo or Commit in this process.
// The hash is kept in memory only: after a restart it starts again at 0.
func (p *Partial) Hashed() int64 { return p.hashedAt.Load() }

func (p *Partial) dataPath() string  { return filepath.Join(p.dir, partialData) }
func (p *Partial) statePath() string { return filepath.Join(p.dir, partialState) }

// errClosed is what a Partial's methods return after Close or a final Commit.
func (p *Partial) errClosed() error {
	return fmt.Errorf("partial %s: %w", p.digest, fs.ErrClosed)
}

// WriteAt writes b at offset off of the blob, implementing io.WriterAt. The range must lie
// within [0, Size) (else ErrOutOfRange) and must not overlap the prefix frozen by HashTo or
// Commit (else ErrRangeFrozen); then nothing is written. It does not sync: bytes become
// durable with SaveState, Commit or the operating system's own write-back. It is safe for
// concurrent use on disjoint ranges. It fails with ErrClosed after Store.Close.
func (p *Partial) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off > p.size || int64(len(b)) > p.size-off {
		return 0, fmt.Errorf("write partial %s: %w: %d bytes at offset %d, size %d",
			p.digest, ErrOutOfRange, len(b), off, p.size)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return 0, fmt.Errorf("write %w", p.errClosed())
	}
	if len(b) > 0 && off < p.frozen {
		return 0, fmt.Errorf("write partial %s: %w: %d bytes at offset %d, hashed up to %d",
			p.digest, ErrRangeFrozen, len(b), off, p.frozen)
	}
	if p.store.isClosed() {
		return 0, fmt.Errorf("write partial %s: %w", p.digest, ErrClosed)
	}
	n, err := p.f.WriteAt(b, off)
	if err != nil {
		return n, p.store.full("write partial", fmt.Errorf("write partial %s: %w", p.digest, err))
	}
	return n, nil
}

// ReadAt reads from the blob at offset off, implementing io.ReaderAt: it returns io.EOF
// (unwrapped) when it reaches Size. Ranges not written yet read as zeros; which ranges hold
// the blob's bytes is the caller's to know. It is safe for concurrent use.
func (p *Partial) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read partial %s: %w: negative offset %d", p.digest, ErrOutOfRange, off)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return 0, fmt.Errorf("read %w", p.errClosed())
	}
	if off >= p.size {
		return 0, io.EOF
	}
	want := b
	if int64(len(want)) > p.size-off {
		want = want[:p.size-off]
	}
	n, err := p.f.ReadAt(want, off)
	if err == nil && len(want) < len(b) {
		err = io.EOF
	}
	return n, err
}

// OpenFile opens a new read-only descriptor of the data file, with its own offset, for
// callers that send ranges straight from the file: Seek to a range's start and
// io.CopyN(conn, f, n), which the net package turns into sendfile. The caller owns the file
// and must close it. It stays valid after Close and after Commit (the committed blob is the
// same file); unwritten ranges read as zeros, as with ReadAt.
func (p *Partial) OpenFile() (*os.File, error) {
	p.fileMu.Lock()
	defer p.fileMu.Unlock()
	if p.isClosed() {
		return nil, fmt.Errorf("open %w", p.errClosed())
	}
	f, err := os.Open(p.dataPath())
	if err != nil {
		return nil, fmt.Errorf("open partial %s: %w", p.digest, err)
	}
	return f, nil
}

func (p *Partial) isClosed() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.closed
}

// State returns the state last saved by SaveState, or nil and no error when none was saved
// (or it was damaged on disk: that is logged and treated as none, so a damaged state never
// claims bytes). The caller owns the returned slice.
func (p *Partial) State() ([]byte, error) {
	state, err := p.readState()
	if err != nil {
		return nil, fmt.Errorf("read partial state %s: %w", p.digest, err)
	}
	return state, nil
}

func (p *Partial) readState() ([]byte, error) {
	p.fileMu.Lock()
	defer p.fileMu.Unlock()
	if p.isClosed() {
		return nil, fs.ErrClosed
	}
	f, err := os.Open(p.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read-only
	b, err := io.ReadAll(io.LimitReader(f, int64(len(partialStateMagic)+MaxPartialState+4+1)))
	if err != nil {
		return nil, err
	}
	state, err := decodePartialState(b)
	if err != nil {
		p.store.log.Warn("castore: ignoring partial download state", "digest", p.digest, "err", err)
		return nil, nil
	}
	return state, nil
}

// SaveState replaces the saved state of the download with state, an opaque value of the
// caller's (typically the bitfield of verified pieces), at most MaxPartialState bytes. It
// first syncs the data file, then writes the state through a temporary file, a rename and a
// directory sync: a saved state is never ahead of the bytes on disk, provided it claims only
// bytes whose WriteAt returned before SaveState was called. It fails with ErrClosed after
// Store.Close.
func (p *Partial) SaveState(state []byte) error {
	if err := p.saveState(state); err != nil {
		return p.store.full("save partial state", fmt.Errorf("save partial state %s: %w", p.digest, err))
	}
	return nil
}

func (p *Partial) saveState(state []byte) error {
	if len(state) > MaxPartialState {
		return fmt.Errorf("%w: state of %d bytes exceeds the limit of %d", ErrOutOfRange,
			len(state), MaxPartialState)
	}
	if p.store.isClosed() {
		return ErrClosed
	}
	if err := p.syncData(); err != nil {
		return err
	}
	p.fileMu.Lock()
	defer p.fileMu.Unlock()
	if p.isClosed() {
		return fs.ErrClosed
	}
	if err := p.store.writeFileAtomic(p.statePath(), encodePartialState(state), true); err != nil {
		return err
	}
	return syncDir(p.dir)
}

// syncData makes the bytes written so far durable. It does not hold mu, so a slow sync does
// not hold up HashTo's freeze (and the reads and writes queued behind it); a concurrent Close
// makes it fail with fs.ErrClosed, which os.File takes care of.
func (p *Partial) syncData() error {
	if p.isClosed() {
		return fs.ErrClosed
	}
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("sync data: %w", err)
	}
	return nil
}

func encodePartialState(state []byte) []byte {
	b := make([]byte, 0, len(partialStateMagic)+len(state)+4)
	b = append(b, partialStateMagic...)
	b = append(b, state...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodePartialState(b []byte) ([]byte, error) {
	if len(b) < len(partialStateMagic)+4 || !bytes.HasPrefix(b, []byte(partialStateMagic)) {
		return nil, errors.New("bad magic")
	}
	if len(b) > len(partialStateMagic)+MaxPartialState+4 {
		return nil, fmt.Errorf("larger than %d bytes", MaxPartialState)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, errors.New("checksum mismatch")
	}
	return body[len(partialStateMagic):], nil
}

// HashTo feeds the running hash the bytes [Hashed(), n) of the file, in order, so that Commit
// has less (or nothing) left to hash. Call it as the prefix of verified pieces grows. It
// first freezes [0, n): a WriteAt overlapping it fails with ErrRangeFrozen from then on, even
// if HashTo fails, so every byte of the range must have been written. It reads in chunks and
// stops between them when ctx is cancelled; what it hashed before stays hashed. n at most
// Hashed() does nothing; n beyond Size fails with ErrOutOfRange. It may run concurrently with
// WriteAt of ranges past n; calls to HashTo and Commit are serialised by a mutex.
func (p *Partial) HashTo(ctx context.Context, n int64) error {
	if n < 0 || n > p.size {
		return fmt.Errorf("hash partial %s: %w: offset %d, size %d", p.digest, ErrOutOfRange, n, p.size)
	}
	p.hashMu.Lock()
	defer p.hashMu.Unlock()
	if err := p.hashTo(ctx, n); err != nil {
		return fmt.Errorf("hash partial %s: %w", p.digest, err)
	}
	return nil
}

// hashTo freezes [0, n) and hashes what of it is not hashed yet. p.hashMu is held.
func (p *Partial) hashTo(ctx context.Context, n int64) error {
	if n <= p.hashedN {
		if p.isClosed() {
			return fs.ErrClosed
		}
		return nil
	}
	// Taking mu exclusively waits for the writes in flight, so none of them can land in the
	// range once it is frozen.
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fs.ErrClosed
	}
	p.frozen = max(p.frozen, n)
	p.mu.Unlock()

	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	for p.hashedN < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := (*bp)[:min(int64(len(*bp)), n-p.hashedN)]
		if err := p.readFull(chunk, p.hashedN); err != nil {
			return err
		}
		p.h.Write(chunk) // hash.Hash.Write never fails.
		p.hashedN += int64(len(chunk))
		p.hashedAt.Store(p.hashedN)
	}
	return nil
}

// readFull fills b from the data file at off, which lies within the file.
func (p *Partial) readFull(b []byte, off int64) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return fs.ErrClosed
	}
	n, err := p.f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("read data: %d bytes at offset %d, want %d: file truncated", n, off, len(b))
	}
	return fmt.Errorf("read data: %w", err)
}

// Verify hashes what HashTo has not and checks the blob's digest, without committing: once it
// returns nil the whole file is frozen and holds exactly the blob's bytes, so a caller may let
// readers see all of it before Commit makes it durable and renames it into place (Commit then
// hashes nothing again). On ErrDigestMismatch the Partial is closed and its directory removed,
// as Commit does; on any other error (a cancelled ctx, say) it stays open and Verify or Commit
// can be retried. ctx bounds the hashing. It is serialised with HashTo and Commit, and fails
// with fs.ErrClosed after Close.
func (p *Partial) Verify(ctx context.Context) error {
	p.hashMu.Lock()
	defer p.hashMu.Unlock()
	if err := p.verify(ctx); err != nil {
		return fmt.Errorf("verify partial %s: %w", p.digest, err)
	}
	return nil
}

// verify hashes the rest of the file and compares the digest, closing and removing the
// Partial on a mismatch. p.hashMu is held.
func (p *Partial) verify(ctx context.Context) error {
	if err := p.hashTo(ctx, p.size); err != nil {
		return err
	}
	if got := digest.NewDigest(p.digest.Algorithm(), p.h); got != p.digest {
		p.store.metrics.mismatched()
		if err := p.finish(true); err != nil {
			p.store.log.Warn("castore: cannot remove partial download", "digest", p.digest, "err", err)
		}
		return fmt.Errorf("%w: the %d bytes written have digest %s", ErrDigestMismatch, p.size, got)
	}
	return nil
}

// Commit makes the download the blob: it hashes what HashTo has not, compares the digest,
// syncs the data and renames the file into place as Ingest and CommitUpload do, evicting
// least recently used blobs to make room (partial downloads are not counted against the
// capacity until then). Bytes HashTo hashed are not read again. ctx bounds the hashing only.
//
// On success the Partial is closed and its directory removed; so too on ErrDigestMismatch,
// after which nothing is stored and the download must start over, and when the blob has been
// committed meanwhile (by Ingest, say), in which case the stored blob's Info is returned. On
// any other error, ErrFull or a cancelled ctx for instance, nothing changes on disk and the
// Partial stays open, so Commit can be retried (or the Partial closed to resume later); once
// Commit has started hashing, its whole range stays frozen. If the final directory sync fails the error is returned, but the blob,
// already verified, stays committed. It fails with ErrClosed after Store.Close.
func (p *Partial) Commit(ctx context.Context) (Info, error) {
	info, err := p.commit(ctx)
	if err != nil {
		return Info{}, p.store.full("commit partial", fmt.Errorf("commit partial %s: %w", p.digest, err))
	}
	return info, nil
}

func (p *Partial) commit(ctx context.Context) (Info, error) {
	s := p.store
	p.hashMu.Lock()
	defer p.hashMu.Unlock()
	if p.isClosed() {
		return Info{}, fs.ErrClosed
	}
	info, ok, err := s.lookup(p.digest)
	if err != nil {
		return Info{}, err
	}
	if ok {
		if err := p.finish(true); err != nil {
			s.log.Warn("castore: cannot remove partial download", "digest", p.digest, "err", err)
		}
		return info, nil
	}
	if err := p.verify(ctx); err != nil {
		return Info{}, err
	}
	// Everything is frozen, so no write is in flight or can start: sync before taking fileMu,
	// so that OpenFile, State and SaveState wait only for the rename.
	if err := p.syncData(); err != nil {
		return Info{}, err
	}
	p.fileMu.Lock()
	defer p.fileMu.Unlock()
	if p.isClosed() { // Closed while hashing.
		return Info{}, fs.ErrClosed
	}
	f, err := os.OpenFile(p.dataPath(), os.O_WRONLY, 0)
	if err != nil {
		return Info{}, err
	}
	info, renamed, err := s.commit(ctx, f, p.digest, p.size, p.res, nil)
	if err != nil && !renamed {
		_ = f.Close() // commit may have failed before closing it.
		return Info{}, err
	}
	// Committed, by this call or meanwhile by another: the partial download is spent.
	if rerr := p.finishLocked(true); rerr != nil {
		s.log.Warn("castore: cannot remove committed partial download", "digest", p.digest, "err", rerr)
	}
	return info, err
}

// finish closes p for good, removing its directory when remove is set.
func (p *Partial) finish(remove bool) error {
	p.fileMu.Lock()
	defer p.fileMu.Unlock()
	return p.finishLocked(remove)
}

// finishLocked closes the data file, removes the directory when remove is set, then releases
// the digest for another OpenPartial. If p is already closed it does nothing: whoever closed
// it has released the digest. p.fileMu is held.
func (p *Partial) finishLocked(remove bool) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	err := p.f.Close()
	p.mu.Unlock()
	if remove {
		// A failure to close a file about to be removed loses nothing.
		err = p.store.removePartialDir(p.digest)
	}
	// Nothing left to release once Commit converted it. A partial download closed to be
	// resumed later stays on disk uncounted until it is opened again.
	p.res.release()
	p.store.releasePartial(p.digest)
	return err
}

// Close closes the data file and releases the digest for another OpenPartial, keeping the
// partial download on disk to be resumed. It does not sync: bytes written since the last
// SaveState may be lost in a crash, which the saved state does not claim. Descriptors from
// OpenFile stay open. Close is idempotent, and also does nothing after a final Commit.
func (p *Partial) Close() error {
	if err := p.finish(false); err != nil {
		return fmt.Errorf("close partial %s: %w", p.digest, err)
	}
	return nil
}

// Interface guards
var (
	_ io.ReaderAt = (*Partial)(nil)
	_ io.WriterAt = (*Partial)(nil)
	_ io.Closer   = (*Partial)(nil)
)
