package castore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
)

// maxKindLen bounds the length of a sidecar metadata kind.
const maxKindLen = 64

// checkKind accepts [a-z0-9_-]{1,64}, which is always a plain file name.
func checkKind(kind string) error {
	if kind == "" || len(kind) > maxKindLen {
		return fmt.Errorf("%w %q: want 1 to %d characters", ErrInvalidKind, kind, maxKindLen)
	}
	for i := 0; i < len(kind); i++ {
		if c := kind[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return fmt.Errorf("%w %q: want only a-z, 0-9, _ and -", ErrInvalidKind, kind)
		}
	}
	return nil
}

// PutMeta stores data as the sidecar metadata kind of the committed blob d (for example its
// metainfo), replacing any earlier value atomically: readers see the old or the new bytes,
// never a mix. It fails with ErrNotFound if d is not committed. Metadata is removed with its
// blob and does not count towards the capacity.
func (s *Store) PutMeta(d digest.Digest, kind string, data []byte) error {
	if err := s.putMeta(d, kind, data); err != nil {
		return s.full("put metadata", fmt.Errorf("put metadata %s of %s: %w", kind, d, err))
	}
	return nil
}

func (s *Store) putMeta(d digest.Digest, kind string, data []byte) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if err := checkDigest(d); err != nil {
		return err
	}
	f, err := s.newTemp("meta")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // Fails harmlessly once renamed.
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	dir := s.metaDir(d)
	// Under the lock, so the blob cannot be deleted (taking its metadata with it) in between.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if _, ok := s.entries[d]; !ok {
		s.mu.Unlock()
		return ErrNotFound
	}
	err = os.MkdirAll(dir, 0o755)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, kind))
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return syncDir(dir)
}

// GetMeta returns the sidecar metadata kind of blob d, or an error wrapping ErrNotFound when
// the blob or that kind of metadata does not exist.
func (s *Store) GetMeta(d digest.Digest, kind string) ([]byte, error) {
	if err := checkKind(kind); err != nil {
		return nil, fmt.Errorf("get metadata %s of %s: %w", kind, d, err)
	}
	if err := checkDigest(d); err != nil {
		return nil, fmt.Errorf("get metadata %s of %s: %w", kind, d, err)
	}
	if s.isClosed() {
		return nil, fmt.Errorf("get metadata %s of %s: %w", kind, d, ErrClosed)
	}
	b, err := os.ReadFile(filepath.Join(s.metaDir(d), kind))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get metadata %s of %s: %w", kind, d, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get metadata %s of %s: %w", kind, d, err)
	}
	return b, nil
}

// writeFileAtomic replaces path with data through a temporary file and a rename, fsyncing the
// file first when sync is set.
func (s *Store) writeFileAtomic(path string, data []byte, sync bool) error {
	f, err := s.newTemp("write")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}
