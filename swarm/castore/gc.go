package castore

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// This file holds what garbage collection (server/gc, through an origin's GC API) needs of the
// store: a paged listing that never copies the whole index into one answer, and a delete that
// is conditional on the blob having been idle since a cutoff, decided under the store's lock so
// a use that races the delete either happens first (and the delete is refused) or finds the
// blob gone.

// ErrRecentlyUsed means a blob was committed, opened or re-ingested at or after the cutoff a
// conditional delete was given.
var ErrRecentlyUsed = fmt.Errorf("castore: blob used since the cutoff")

// Page returns up to n committed blobs whose digests sort after after ("" for the first page),
// sorted by digest. A page shorter than n is the last one. Blobs committed or deleted while a
// caller pages through are seen or not, but a blob present throughout is listed exactly once.
func (s *Store) Page(after digest.Digest, n int) []Info {
	if n <= 0 {
		return nil
	}
	s.mu.Lock()
	// One pass keeps the n smallest digests above after; it costs O(entries) time per page but
	// only O(n) memory, which is what bounds a GC's footprint on a large store.
	page := make([]Info, 0, n+1)
	for d, e := range s.entries {
		if after != "" && strings.Compare(string(d), string(after)) <= 0 {
			continue
		}
		if len(page) == n && strings.Compare(string(d), string(page[n-1].Digest)) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(page, d, func(in Info, t digest.Digest) int { return cmp.Compare(in.Digest, t) })
		page = slices.Insert(page, i, e.info())
		if len(page) > n {
			page = page[:n]
		}
	}
	s.mu.Unlock()
	return page
}

// DeleteIdle removes blob d like Delete, but only when it has not been used (committed, opened
// or re-ingested) at or after cutoff: it fails with ErrRecentlyUsed then, with ErrInUse while
// the blob is open or held (a read, or a write-back not yet done), and with ErrNotFound when
// there is no such blob. It returns the bytes freed. With dryRun it decides the same way under
// the same lock but removes nothing, so a dry run reports what a real run at that moment would.
func (s *Store) DeleteIdle(d digest.Digest, cutoff time.Time, dryRun bool) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("delete %s: %w", d, ErrClosed)
	}
	e, ok := s.entries[d]
	if !ok {
		return 0, fmt.Errorf("delete %s: %w", d, ErrNotFound)
	}
	if e.opens > 0 || s.holds[d] > 0 {
		return 0, fmt.Errorf("delete %s: %w", d, ErrInUse)
	}
	if !e.atime.Before(cutoff) {
		return 0, fmt.Errorf("delete %s: last used %s: %w", d, e.atime.UTC().Format(time.RFC3339), ErrRecentlyUsed)
	}
	size := e.size
	if dryRun {
		return size, nil
	}
	if err := s.removeLocked(e); err != nil {
		return 0, fmt.Errorf("delete %s: %w", d, err)
	}
	return size, nil
}

// Touch marks blob d as used now, as a read would, without opening it; false when there is no
// such blob. A GC run that started before the touch will not collect it.
func (s *Store) Touch(d digest.Digest) bool {
	_, ok, err := s.lookup(d)
	return ok && err == nil
}
