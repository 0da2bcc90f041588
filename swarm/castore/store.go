package castore

import (
	"cmp"
	"container/list"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	// Register the hashes go-digest knows, so every digest.Algorithm is Available.
	_ "crypto/sha256"
	_ "crypto/sha512"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

// Sentinel errors, wrapped with %w; test them with errors.Is.
var (
	// ErrNotFound means no committed blob (or sidecar metadata) has that digest (or kind).
	ErrNotFound = errors.New("castore: not found")
	// ErrDigestMismatch means the bytes written do not hash to the expected digest.
	ErrDigestMismatch = errors.New("castore: digest mismatch")
	// ErrInvalidDigest means a digest is malformed or of an unsupported algorithm.
	ErrInvalidDigest = errors.New("castore: invalid digest")
	// ErrFull means a blob does not fit within the capacity even after evicting every blob
	// that may be evicted.
	ErrFull = errors.New("castore: store full")
	// ErrInUse means a blob cannot be deleted because it is open or held.
	ErrInUse = errors.New("castore: blob in use")
	// ErrUploadUnknown means no upload session has that id (or the id is malformed).
	ErrUploadUnknown = errors.New("castore: upload unknown")
	// ErrBadOffset means an append did not start at the session's current size.
	ErrBadOffset = errors.New("castore: bad upload offset")
	// ErrUploadBusy means another append, commit or cancel is running on the same session.
	ErrUploadBusy = errors.New("castore: upload busy")
	// ErrInvalidKind means a sidecar metadata kind is not [a-z0-9_-]{1,64}.
	ErrInvalidKind = errors.New("castore: invalid metadata kind")
	// ErrLocked means another Store (in this or another process) has the directory open.
	ErrLocked = errors.New("castore: directory locked")
	// ErrClosed means the Store was closed.
	ErrClosed = errors.New("castore: store closed")
)

// touchPersistInterval is how stale a blob's on-disk last-use time may get. The in-memory LRU
// order is exact; the file time only orders blobs after a restart, so minutes are plenty and
// most reads cost no write.
const touchPersistInterval = time.Minute

// Options configure a Store. The zero value is valid: unlimited capacity, no logs, no metrics.
type Options struct {
	// Capacity is the most bytes of committed blobs the store keeps; 0 means unlimited.
	Capacity int64
	// Logger receives evictions and cleanup notes; nil discards them.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil registers none. Two stores sharing a
	// registry need distinct labels, e.g. prometheus.WrapRegistererWith.
	Registerer prometheus.Registerer
	// Now returns the current time; nil means time.Now. It dates last uses and arrivals of
	// blobs, and is the clock of Cleanup.
	Now func() time.Time
	// DiskUsage returns the size of the file system holding the store and the bytes free on it
	// for unprivileged users; nil means statfs(2) of the directory (cleanup.go). Cleanup's
	// watermarks measure it when the store has no capacity. Tests pass a fake.
	DiskUsage func(dir string) (total, avail int64, err error)
	// OnlyCopies says the store holds the only copy of every blob (an origin with no backend
	// to write back to): no reservation evicts a committed blob, so a full store answers
	// ErrFull instead of losing an acknowledged blob, and Cleanup removes none (KeptOnlyCopy).
	// Orphaned upload sessions are still evicted, and DeleteIdle (garbage collection of
	// unreferenced blobs) still deletes.
	OnlyCopies bool
}

// Info describes a committed blob.
type Info struct {
	Digest digest.Digest
	// Size is the blob's length in bytes.
	Size int64
	// LastAccess is when the blob was last committed, opened or re-ingested.
	LastAccess time.Time
	// Created is when the blob entered this store: its commit, or after a restart the file's
	// birth time (statx), or its modification time where the file system keeps no birth time
	// (the modification time is the last use, so an age read from it is never more than the
	// real one and a TTL then removes later, never sooner).
	Created time.Time
}

// Store is a content-addressed blob store in one directory. All methods are safe for concurrent
// use by multiple goroutines.
type Store struct {
	dir      string
	capacity int64
	log      *slog.Logger
	now      func() time.Time
	disk     func(dir string) (total, avail int64, err error)
	metrics  *metrics
	reg      prometheus.Registerer
	lockFile *os.File

	mu      sync.Mutex
	closed  bool
	entries map[digest.Digest]*entry
	lru     *list.List // Of *entry; the front is the most recently used.
	used    int64
	holds   map[digest.Digest]int
	// reserved counts the bytes set aside for writes in progress, upload sessions and orphans
	// (reserve.go); used+reserved stays within the capacity.
	reserved int64
	orphans  map[string]orphan // Upload sessions of an earlier process, by id.

	upMu    sync.Mutex
	uploads map[string]*session // Sessions in use or touched since Open.

	partMu   sync.Mutex
	partials map[digest.Digest]bool // Digests with an open Partial or a RemovePartial running.

	reread atomic.Int64 // Upload bytes hashed a second time; tests check it stays 0.

	inject func(step string) error // Unit tests' fault injection (export_test.go); nil otherwise.

	onlyCopies bool // Options.OnlyCopies
}

type entry struct {
	digest    digest.Digest
	size      int64
	atime     time.Time // Last use, in memory.
	created   time.Time // Arrival in this store (Info.Created).
	persisted time.Time // Last use as written to the file's mtime.
	opens     int
	elem      *list.Element
}

// Open opens (creating it if needed) the store in dir and rebuilds its index from disk; see the
// package documentation for what it cleans up. It never evicts, even when what is on disk
// exceeds opts.Capacity: callers Hold what they must keep, then call Trim before serving (the
// next reservations would evict the excess too).
func Open(dir string, opts Options) (*Store, error) {
	if opts.Capacity < 0 {
		return nil, fmt.Errorf("open castore %s: negative capacity %d", dir, opts.Capacity)
	}
	s := &Store{
		dir:        dir,
		capacity:   opts.Capacity,
		onlyCopies: opts.OnlyCopies,
		log:        opts.Logger,
		now:        opts.Now,
		disk:       opts.DiskUsage,
		entries:    map[digest.Digest]*entry{},
		lru:        list.New(),
		holds:      map[digest.Digest]int{},
		uploads:    map[string]*session{},
		partials:   map[digest.Digest]bool{},
		orphans:    map[string]orphan{},
		metrics:    newMetrics(opts.Capacity),
		reg:        opts.Registerer,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.disk == nil {
		s.disk = diskUsage
	}
	for _, d := range []string{s.dir, s.path(dirBlobs), s.path(dirMeta), s.path(dirUploads)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open castore %s: %w", dir, err)
		}
	}
	lf, err := lockDir(s.path("LOCK"))
	if err != nil {
		return nil, fmt.Errorf("open castore %s: %w", dir, err)
	}
	s.lockFile = lf
	if err := s.load(); err != nil {
		_ = lf.Close()
		return nil, fmt.Errorf("open castore %s: %w", dir, err)
	}
	s.metrics.update(s.used, len(s.entries))
	s.metrics.reservedBytes(s.reserved)
	if err := s.metrics.register(opts.Registerer); err != nil {
		_ = lf.Close()
		return nil, fmt.Errorf("open castore %s: %w", dir, err)
	}
	return s, nil
}

// Close releases the directory lock and unregisters the metrics. Blobs already open stay
// readable until closed; most other methods then fail with ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.metrics.unregister(s.reg)
	if err := s.lockFile.Close(); err != nil {
		return fmt.Errorf("close castore %s: %w", s.dir, err)
	}
	return nil
}

// Directory names under the store's root.
const (
	dirBlobs   = "blobs"
	dirMeta    = "meta"
	dirUploads = "uploads"
	dirTmp     = "tmp"
)

// algorithms are the digest algorithms the store accepts, in the order Open scans them.
var algorithms = []digest.Algorithm{digest.SHA256, digest.SHA384, digest.SHA512}

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

func (s *Store) blobPath(d digest.Digest) string {
	return s.path(dirBlobs, string(d.Algorithm()), d.Encoded())
}

func (s *Store) metaDir(d digest.Digest) string {
	return s.path(dirMeta, string(d.Algorithm()), d.Encoded())
}

// checkDigest validates d: a well-formed digest of an algorithm the store supports.
func checkDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalidDigest, d, err)
	}
	if !slices.Contains(algorithms, d.Algorithm()) {
		return fmt.Errorf("%w %q: unsupported algorithm", ErrInvalidDigest, d)
	}
	return nil
}

// load empties tmp/, indexes blobs/ and removes what does not belong.
func (s *Store) load() error {
	if err := os.RemoveAll(s.path(dirTmp)); err != nil {
		return fmt.Errorf("remove temporary files: %w", err)
	}
	if err := os.Mkdir(s.path(dirTmp), 0o755); err != nil {
		return fmt.Errorf("create temporary directory: %w", err)
	}
	type found struct {
		d       digest.Digest
		size    int64
		mtime   time.Time
		created time.Time
	}
	var blobs []found
	if err := s.scanDir(dirBlobs, true, func(alg digest.Algorithm, name string, de fs.DirEntry) bool {
		d := digest.NewDigestFromEncoded(alg, name)
		if !de.Type().IsRegular() || checkDigest(d) != nil {
			return false
		}
		fi, err := de.Info()
		if err != nil {
			return false
		}
		created, ok := birthTime(filepath.Join(s.path(dirBlobs, string(alg)), name))
		if !ok {
			created = fi.ModTime()
		}
		blobs = append(blobs, found{d, fi.Size(), fi.ModTime(), created})
		return true
	}); err != nil {
		return err
	}
	// Oldest first, so pushing each to the front leaves the newest there.
	slices.SortFunc(blobs, func(a, b found) int {
		return cmp.Or(a.mtime.Compare(b.mtime), cmp.Compare(a.d, b.d))
	})
	for _, b := range blobs {
		e := &entry{digest: b.d, size: b.size, atime: b.mtime, persisted: b.mtime, created: b.created}
		e.elem = s.lru.PushFront(e)
		s.entries[b.d] = e
		s.used += b.size
	}
	if err := s.scanDir(dirMeta, false, func(alg digest.Algorithm, name string, de fs.DirEntry) bool {
		_, ok := s.entries[digest.NewDigestFromEncoded(alg, name)]
		return ok && de.IsDir()
	}); err != nil {
		return err
	}
	if err := s.loadPartials(); err != nil {
		return err
	}
	entries, err := os.ReadDir(s.path(dirUploads))
	if err != nil {
		return fmt.Errorf("read uploads: %w", err)
	}
	for _, de := range entries {
		id := de.Name()
		if checkUploadID(id) != nil || !de.IsDir() {
			s.removeStray(s.path(dirUploads, id))
		} else if fi, err := os.Lstat(s.uploadPath(id, uploadData)); err != nil || !fi.Mode().IsRegular() {
			s.removeStray(s.path(dirUploads, id))
		} else {
			s.orphans[id] = orphan{id: id, size: fi.Size(), mtime: fi.ModTime()}
			s.reserved += fi.Size()
		}
	}
	s.log.Info("castore opened", "dir", s.dir, "blobs", len(s.entries), "used_bytes", s.used,
		"capacity_bytes", s.capacity, "earlier_uploads", len(s.orphans), "earlier_upload_bytes", s.reserved)
	return nil
}

// scanDir walks root/<algorithm>/<name>, calling keep for each name in a known algorithm's
// directory and removing whatever keep rejects, as well as directories of unknown algorithms
// and files directly under root. With create, the algorithm directories are created.
func (s *Store) scanDir(root string, create bool, keep func(digest.Algorithm, string, fs.DirEntry) bool) error {
	top, err := os.ReadDir(s.path(root))
	if err != nil {
		return fmt.Errorf("read %s: %w", root, err)
	}
	for _, de := range top {
		if !slices.Contains(algorithms, digest.Algorithm(de.Name())) || !de.IsDir() {
			s.removeStray(s.path(root, de.Name()))
		}
	}
	for _, alg := range algorithms {
		dir := s.path(root, string(alg))
		if create {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", dir, err)
			}
		}
		names, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", dir, err)
		}
		for _, de := range names {
			if !keep(alg, de.Name(), de) {
				s.removeStray(filepath.Join(dir, de.Name()))
			}
		}
	}
	return nil
}

func (s *Store) removeStray(path string) {
	if err := os.RemoveAll(path); err != nil {
		s.log.Warn("castore: cannot remove stray file", "path", path, "err", err)
		return
	}
	s.log.Info("castore: removed stray file", "path", path)
}

// Stat returns the Info of a committed blob, or an error wrapping ErrNotFound. It does not
// count as a use for eviction.
func (s *Store) Stat(d digest.Digest) (Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Info{}, fmt.Errorf("stat %s: %w", d, ErrClosed)
	}
	e, ok := s.entries[d]
	if !ok {
		return Info{}, fmt.Errorf("stat %s: %w", d, ErrNotFound)
	}
	return e.info(), nil
}

// List returns the Info of every committed blob, sorted by digest.
func (s *Store) List() []Info {
	s.mu.Lock()
	infos := make([]Info, 0, len(s.entries))
	for _, e := range s.entries {
		infos = append(infos, e.info())
	}
	s.mu.Unlock()
	slices.SortFunc(infos, func(a, b Info) int { return cmp.Compare(a.Digest, b.Digest) })
	return infos
}

// Usage returns the bytes of committed blobs and the capacity (0 for unlimited).
func (s *Store) Usage() (used, capacity int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, s.capacity
}

// Hold protects the blob d from eviction and deletion until release is called, whether or not
// it exists yet: hold a digest before ingesting it when it must not be evicted before you are
// done with it (an origin holds blobs whose write-back to durable storage is pending). Holds
// are counted, kept in memory only, and released by calling release; release is idempotent.
func (s *Store) Hold(d digest.Digest) (release func()) {
	s.mu.Lock()
	s.holds[d]++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.holds[d]--; s.holds[d] <= 0 {
				delete(s.holds, d)
			}
		})
	}
}

// Delete removes the blob d and its sidecar metadata. It fails with ErrNotFound if there is no
// such blob and with ErrInUse while it is open or held.
func (s *Store) Delete(d digest.Digest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("delete %s: %w", d, ErrClosed)
	}
	e, ok := s.entries[d]
	if !ok {
		return fmt.Errorf("delete %s: %w", d, ErrNotFound)
	}
	if e.opens > 0 || s.holds[d] > 0 {
		return fmt.Errorf("delete %s: %w", d, ErrInUse)
	}
	if err := s.removeLocked(e); err != nil {
		return fmt.Errorf("delete %s: %w", d, err)
	}
	return nil
}

// removeLocked deletes e's file and metadata and drops it from the index. s.mu is held.
func (s *Store) removeLocked(e *entry) error {
	if err := os.Remove(s.blobPath(e.digest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	delete(s.entries, e.digest)
	s.lru.Remove(e.elem)
	s.used -= e.size
	s.metrics.update(s.used, len(s.entries))
	if err := os.RemoveAll(s.metaDir(e.digest)); err != nil {
		// Open removes metadata without a blob, so this only costs disk space until then.
		s.log.Warn("castore: cannot remove metadata", "digest", e.digest, "err", err)
	}
	return nil
}

// forgetLocked drops e, whose file is already gone, from the index with its metadata (which
// would describe a blob that is not there). Readers holding the old file open keep reading it.
// s.mu is held.
func (s *Store) forgetLocked(e *entry) {
	if cur, ok := s.entries[e.digest]; !ok || cur != e {
		return
	}
	if err := s.removeLocked(e); err != nil {
		s.log.Warn("castore: cannot forget vanished blob", "digest", e.digest, "err", err)
	}
}

// touchLocked marks e as just used and reports whether its file time should be updated.
// s.mu is held.
func (s *Store) touchLocked(e *entry) (persist bool) {
	e.atime = s.now()
	s.lru.MoveToFront(e.elem)
	if e.atime.Sub(e.persisted) >= touchPersistInterval {
		e.persisted = e.atime
		return true
	}
	return false
}

// persistTouch records a use in the blob's mtime. A blob deleted meanwhile is no error, and a
// failure only makes the order after a restart less exact, so it is logged, not returned.
func (s *Store) persistTouch(d digest.Digest, t time.Time) {
	if err := os.Chtimes(s.blobPath(d), time.Time{}, t); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("castore: cannot record last use", "digest", d, "err", err)
	}
}

// lookup returns the Info of d and marks it used, if it is committed.
func (s *Store) lookup(d digest.Digest) (Info, bool, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Info{}, false, ErrClosed
	}
	e, ok := s.entries[d]
	if !ok {
		s.mu.Unlock()
		return Info{}, false, nil
	}
	persist := s.touchLocked(e)
	info := e.info()
	s.mu.Unlock()
	if persist {
		s.persistTouch(d, info.LastAccess)
	}
	return info, true, nil
}

func (e *entry) info() Info {
	return Info{Digest: e.digest, Size: e.size, LastAccess: e.atime, Created: e.created}
}

// Open opens the committed blob d for reading, or fails with an error wrapping ErrNotFound.
// A blob whose file was removed behind the store's back is forgotten (logged, and from then on
// unknown to Stat) and reported as ErrNotFound, so the caller can fetch it again.
// The blob counts as used, and cannot be evicted or deleted until the Blob is closed.
func (s *Store) Open(ctx context.Context, d digest.Digest) (*Blob, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("open blob %s: %w", d, ErrClosed)
	}
	e, ok := s.entries[d]
	if !ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("open blob %s: %w", d, ErrNotFound)
	}
	// Opening under the lock keeps eviction and Delete from removing the file in between.
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		// Removed behind the store's back (by hand, a cleanup script, a disk swap): forget the
		// entry so the caller can fetch the blob again, rather than answer "present" to every
		// Stat and fail every Open.
		s.forgetLocked(e)
		s.mu.Unlock()
		s.log.Warn("castore: blob file is gone; forgot the blob", "digest", d, "path", s.blobPath(d))
		return nil, fmt.Errorf("open blob %s: file vanished: %w", d, ErrNotFound)
	}
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	e.opens++
	persist := s.touchLocked(e)
	atime := e.atime
	s.mu.Unlock()
	if persist {
		s.persistTouch(d, atime)
	}
	return &Blob{f: f, digest: d, size: e.size, store: s, entry: e}, nil
}

func (s *Store) unpin(e *entry) {
	s.mu.Lock()
	e.opens--
	s.mu.Unlock()
}

// Steps of a write at which faults are injected: unit tests make them fail as a full disk
// would (Store.inject), and binaries built with the krakenctl_faults tag can be killed there
// (crashAt) to test recovery.
const (
	stepWrite      = "write"       // before each chunk is written to a temporary or session file
	stepSync       = "sync"        // before the verified data is fsynced
	stepPrepare    = "prepare"     // before the caller's Prepare runs
	stepMeta       = "meta"        // before the staged sidecar metadata is written
	stepMetaRename = "meta-rename" // before the metadata moves into meta/
	stepRename     = "rename"      // before the blob moves into blobs/: the last step before it is visible
	stepRenamed    = "renamed"     // after the rename, before the directory sync
)

// step marks a fault-injection point.
func (s *Store) step(name string) error {
	crashAt(name)
	if s.inject != nil {
		return s.inject(name)
	}
	return nil
}

// newTemp creates a temporary file in tmp/, which Open empties after a crash.
func (s *Store) newTemp(prefix string) (*os.File, error) {
	f, err := os.CreateTemp(s.path(dirTmp), prefix+"-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	return f, nil
}

// randomID returns 32 lower-case hex characters from crypto/rand.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails.
	return hex.EncodeToString(b[:])
}

// syncDir makes a rename or creation in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
