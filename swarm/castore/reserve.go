package castore

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// Space is reserved before it is written. Every write into the store (an ingest's temporary
// file, an upload session's data, an open partial download) holds a reservation, and reserved
// bytes count against the capacity together with the committed blobs: eviction makes room when
// the reservation is taken, before a byte lands on disk, so concurrent writes never overrun the
// capacity and a full store answers ErrFull at the start of a write, not after it filled the disk.
// A commit converts its reservation into the blob's size; an abort releases it.
//
// The reservation of a write of known length is taken whole up front (IngestOptions.Size,
// OpenPartial); one of unknown length grows chunk by chunk as the bytes arrive.

// reservation is space set aside for one write. n is guarded by store.mu.
type reservation struct {
	s *Store
	n int64
}

// reserve returns a reservation of n bytes, evicting to make room.
func (s *Store) reserve(n int64) (*reservation, error) {
	r := &reservation{s: s}
	if err := r.growTo(n); err != nil {
		return nil, err
	}
	return r, nil
}

// growTo makes the reservation at least total bytes, evicting to make room. It changes nothing
// and returns an error wrapping ErrFull when no room can be made.
func (r *reservation) growTo(total int64) error {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if total <= r.n {
		return nil
	}
	if s.closed {
		return ErrClosed
	}
	if err := s.makeRoomLocked(total - r.n); err != nil {
		return err
	}
	s.reserved += total - r.n
	r.n = total
	s.metrics.reservedBytes(s.reserved)
	return nil
}

// shrinkTo gives back what the reservation holds beyond total bytes.
func (r *reservation) shrinkTo(total int64) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if total >= r.n {
		return
	}
	s.reserved -= r.n - max(total, 0)
	r.n = max(total, 0)
	s.metrics.reservedBytes(s.reserved)
}

// release gives the whole reservation back. It is idempotent, and does nothing once a commit
// converted the reservation.
func (r *reservation) release() {
	if r != nil {
		r.shrinkTo(0)
	}
}

// makeRoomLocked evicts until size more bytes fit beside the committed blobs and the
// reservations: first upload sessions left by an earlier process that nobody resumed (oldest
// first), then least recently used blobs that are neither open nor held. It evicts nothing and
// returns ErrFull when that cannot free enough. s.mu is held.
func (s *Store) makeRoomLocked(size int64) error {
	if s.capacity == 0 {
		return nil
	}
	if size > s.capacity {
		return fmt.Errorf("%w: %d bytes exceed the capacity of %d", ErrFull, size, s.capacity)
	}
	over := s.used + s.reserved + size - s.capacity
	if over <= 0 {
		return nil
	}
	orphans, blobs, freed := s.victimsLocked(over)
	if freed < over {
		return fmt.Errorf("%w: %d bytes needed, %d committed and %d reserved of a capacity of %d, only %d evictable",
			ErrFull, size, s.used, s.reserved, s.capacity, freed)
	}
	if _, err := s.evictLocked(orphans, blobs); err != nil {
		return err
	}
	if over := s.used + s.reserved + size - s.capacity; over > 0 {
		// An orphan session was resumed between the choice and the eviction: kept, so short.
		return fmt.Errorf("%w: %d bytes needed, %d committed and %d reserved of a capacity of %d",
			ErrFull, size, s.used, s.reserved, s.capacity)
	}
	return nil
}

// victimsLocked picks what to evict to free over bytes, in eviction order, stopping once it has
// enough (or running out of candidates). s.mu is held.
func (s *Store) victimsLocked(over int64) (orphans []orphan, blobs []*entry, freed int64) {
	if over <= 0 {
		return nil, nil, 0
	}
	for _, o := range s.sortedOrphansLocked() {
		if freed >= over {
			return orphans, blobs, freed
		}
		if s.sessionBusy(o.id) {
			continue
		}
		orphans = append(orphans, o)
		freed += o.size
	}
	for el := s.lru.Back(); el != nil && freed < over && !s.onlyCopies; el = el.Prev() {
		e := el.Value.(*entry)
		if e.opens > 0 || s.holds[e.digest] > 0 || e.size == 0 {
			continue
		}
		blobs = append(blobs, e)
		freed += e.size
	}
	return orphans, blobs, freed
}

// evictLocked removes the chosen victims, and returns the orphan sessions it removed (one
// resumed since it was chosen is kept). s.mu is held.
func (s *Store) evictLocked(orphans []orphan, blobs []*entry) (removed []orphan, err error) {
	for _, o := range orphans {
		ok, err := s.removeOrphanLocked(o)
		if err != nil {
			return removed, fmt.Errorf("evict abandoned upload %s: %w", o.id, err)
		}
		if ok {
			removed = append(removed, o)
			s.log.Info("castore: evicted an upload session left by an earlier process", "upload_id", o.id, "size", o.size)
		}
	}
	for _, e := range blobs {
		if err := s.removeLocked(e); err != nil {
			return removed, fmt.Errorf("evict %s: %w", e.digest, err)
		}
		s.metrics.evicted(e.size)
		s.log.Debug("castore: evicted", "digest", e.digest, "size", e.size)
	}
	return removed, nil
}

// orphan is an upload session found on disk by Open that this process has not touched yet. Its
// bytes count as reserved (they are on the disk) until it is resumed, removed or evicted: a
// client may still resume it after a restart, but it is the first thing evicted when room is
// needed, since the process that took it is gone and clients usually start over elsewhere.
type orphan struct {
	id    string
	size  int64
	mtime time.Time
}

func (s *Store) sortedOrphansLocked() []orphan {
	out := make([]orphan, 0, len(s.orphans))
	for _, o := range s.orphans {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b orphan) int { return cmp.Or(a.mtime.Compare(b.mtime), cmp.Compare(a.id, b.id)) })
	return out
}

// sessionBusy reports whether an append, commit or cancel runs on session id. It takes s.upMu,
// which may be taken while s.mu is held (never the other way round).
func (s *Store) sessionBusy(id string) bool {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	sess, ok := s.uploads[id]
	return ok && sess.busy
}

// removeOrphanLocked deletes an orphan session, unless it became busy since it was chosen (a
// client resumed it): then it reports false and keeps it. s.mu is held.
func (s *Store) removeOrphanLocked(o orphan) (bool, error) {
	s.upMu.Lock()
	if sess, ok := s.uploads[o.id]; ok && sess.busy {
		s.upMu.Unlock()
		return false, nil
	}
	trash := s.path(dirTmp, "evicted-"+o.id+"-"+randomID())
	err := os.Rename(s.uploadPath(o.id), trash)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.upMu.Unlock()
		return false, err
	}
	delete(s.uploads, o.id)
	s.upMu.Unlock()
	delete(s.orphans, o.id)
	s.reserved -= o.size
	s.metrics.reservedBytes(s.reserved)
	if err == nil {
		// The space must be free before the caller writes into it.
		if err := os.RemoveAll(trash); err != nil {
			s.log.Warn("castore: cannot remove evicted upload", "upload_id", o.id, "err", err)
		}
	}
	return true, nil
}

// adoptOrphan turns session sess, loaded from disk, into one of this process: the reservation
// Open made for its bytes becomes the session's own. Called by acquire, without s.upMu.
func (s *Store) adoptOrphan(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess.res != nil {
		return
	}
	sess.res = &reservation{s: s}
	if o, ok := s.orphans[sess.id]; ok {
		delete(s.orphans, sess.id)
		sess.res.n = o.size
	}
}

// dropOrphan forgets the reservation of an orphan session removed without being adopted.
func (s *Store) dropOrphan(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.orphans[id]; ok {
		delete(s.orphans, id)
		s.reserved -= o.size
		s.metrics.reservedBytes(s.reserved)
	}
}

// TrimResult says what Trim evicted.
type TrimResult struct {
	// Blobs and BlobBytes count the committed blobs evicted.
	Blobs     int
	BlobBytes int64
	// Uploads and UploadBytes count the upload sessions of an earlier process evicted.
	Uploads     int
	UploadBytes int64
	// Over is how many bytes the store still holds beyond its capacity: what is open, held or
	// reserved and so could not be evicted. 0 when the store fits.
	Over int64
}

// Trim evicts, as a reservation would, until the committed blobs, the reservations and the
// upload sessions left by an earlier process fit within the capacity: call it at startup, once
// what must be kept is held (Open itself never evicts), so a store found over its capacity (the
// capacity was lowered, or the disk shrank) is trimmed before it serves instead of refusing
// every write. It evicts what it can even when that is not enough, and says so in Over. It logs
// what it did when it did anything.
func (s *Store) Trim() (TrimResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return TrimResult{}, fmt.Errorf("trim: %w", ErrClosed)
	}
	var res TrimResult
	if s.capacity == 0 {
		return res, nil
	}
	before := s.used + s.reserved
	over := before - s.capacity
	orphans, blobs, _ := s.victimsLocked(over)
	removed, err := s.evictLocked(orphans, blobs)
	for _, o := range removed {
		res.Uploads++
		res.UploadBytes += o.size
	}
	if err == nil {
		for _, e := range blobs {
			res.Blobs++
			res.BlobBytes += e.size
		}
	}
	res.Over = max(s.used+s.reserved-s.capacity, 0)
	if over > 0 {
		s.log.Info("castore: trimmed to capacity at startup", "dir", s.dir, "capacity_bytes", s.capacity,
			"before_bytes", before, "after_bytes", s.used+s.reserved,
			"evicted_blobs", res.Blobs, "evicted_blob_bytes", res.BlobBytes,
			"evicted_uploads", res.Uploads, "evicted_upload_bytes", res.UploadBytes, "still_over_bytes", res.Over)
	}
	if err != nil {
		return res, fmt.Errorf("trim: %w", err)
	}
	return res, nil
}

// Reserved returns the bytes reserved by writes in progress and by upload sessions: with the
// committed blobs (Usage), what counts against the capacity.
func (s *Store) Reserved() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reserved
}

// full makes err, when the disk ran out of space (ENOSPC, EDQUOT) somewhere in a write, an
// error wrapping ErrFull too, and reports every ErrFull: an error log naming the operation and
// the cause, and krakenctl_castore_full_total by reason (capacity: no room could be made within
// the capacity; disk: the file system refused the write). Every exported method that writes
// returns its error through it.
func (s *Store) full(op string, err error) error {
	if err == nil {
		return nil
	}
	reason := ""
	switch {
	case isNoSpace(err):
		reason = "disk"
		if !errors.Is(err, ErrFull) {
			err = fmt.Errorf("%w: the disk is full: %w", ErrFull, err)
		}
	case errors.Is(err, ErrFull):
		reason = "capacity"
	default:
		return err
	}
	s.metrics.full(reason)
	used, reserved := s.usage()
	s.log.Error("castore: store full", "op", op, "reason", reason, "dir", s.dir, "used_bytes", used,
		"reserved_bytes", reserved, "capacity_bytes", s.capacity, "err", err)
	return err
}

func (s *Store) usage() (used, reserved int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, s.reserved
}
