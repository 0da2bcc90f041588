package castore

import (
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
)

// Files of an upload session, in DIR/uploads/<id>/.
const (
	uploadData      = "data"
	uploadHashState = "hashstate"
	// uploadLabel holds the label given to CreateUploadLabeled; it never changes.
	uploadLabel = "label"
)

// maxUploadLabel bounds a session's label.
const maxUploadLabel = 4096

// uploadIDLen is the length of an upload id: 16 random bytes in lower-case hex.
const uploadIDLen = 32

// session is an upload session known to this process. Its fields are owned by whoever set
// busy (under s.upMu); size is also read under s.upMu.
type session struct {
	id     string
	busy   bool
	size   int64     // Bytes received and acknowledged: the length of the data file.
	hashed int64     // Bytes of the data file fed to h; at most size.
	h      hash.Hash // SHA-256 of the first hashed bytes.
	label  string    // CreateUploadLabeled's label; never changes
	// res reserves the session's bytes against the capacity; nil for a session of an earlier
	// process until acquire adopts it (its bytes are reserved as an orphan meanwhile).
	res *reservation
}

// checkUploadID accepts exactly the ids CreateUpload makes, so an id can never name a path
// outside DIR/uploads.
func checkUploadID(id string) error {
	if len(id) != uploadIDLen || !isLowerHex(id) {
		return fmt.Errorf("%w: malformed id %q", ErrUploadUnknown, id)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (s *Store) uploadPath(id string, elem ...string) string {
	return s.path(append([]string{dirUploads, id}, elem...)...)
}

// CreateUpload starts an empty upload session and returns its id: 32 random lower-case hex
// characters. The session lives on disk until committed, cancelled or purged.
func (s *Store) CreateUpload() (string, error) { return s.CreateUploadLabeled("") }

// CreateUploadLabeled is CreateUpload for a session that carries label (at most 4 KiB), which
// UploadLabel returns for as long as the session lives. Callers use it to tie a session to
// what it was opened for (the origin: the namespace), which a session id alone does not.
func (s *Store) CreateUploadLabeled(label string) (string, error) {
	if len(label) > maxUploadLabel {
		return "", fmt.Errorf("create upload: label of %d bytes exceeds %d", len(label), maxUploadLabel)
	}
	if s.isClosed() {
		return "", fmt.Errorf("create upload: %w", ErrClosed)
	}
	id := randomID()
	// Build the session in tmp/ and rename it into place, so a crash never leaves a session
	// without its data file.
	staging := s.path(dirTmp, "upload-"+id)
	if err := os.Mkdir(staging, 0o755); err != nil {
		return "", fmt.Errorf("create upload: %w", err)
	}
	f, err := os.OpenFile(staging+"/"+uploadData, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		err = f.Close()
	}
	if err == nil && label != "" {
		err = os.WriteFile(staging+"/"+uploadLabel, []byte(label), 0o600)
	}
	if err == nil {
		err = os.Rename(staging, s.uploadPath(id))
	}
	if err != nil {
		_ = os.RemoveAll(staging)
		return "", s.full("create upload", fmt.Errorf("create upload: %w", err))
	}
	s.upMu.Lock()
	s.uploads[id] = &session{id: id, h: sha256.New(), label: label, res: &reservation{s: s}}
	s.upMu.Unlock()
	return id, nil
}

// UploadLabel returns the label session id was created with ("" for none), or an error wrapping
// ErrUploadUnknown when there is no such session. A session left by an earlier process is
// loaded once, as the first append to it would (the later calls answer from memory).
func (s *Store) UploadLabel(id string) (string, error) {
	if err := checkUploadID(id); err != nil {
		return "", fmt.Errorf("upload label: %w", err)
	}
	s.upMu.Lock()
	defer s.upMu.Unlock()
	sess, ok := s.uploads[id]
	if !ok {
		var err error
		if sess, err = s.loadSession(id); err != nil {
			return "", fmt.Errorf("upload label: %w", err)
		}
		s.uploads[id] = sess
	}
	return sess.label, nil
}

// readLabel reads a session's label file ("" when it has none).
func (s *Store) readLabel(id string) (string, error) {
	b, err := os.ReadFile(s.uploadPath(id, uploadLabel))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return string(b), err
}

// UploadSize returns the number of bytes the session has received: the offset the next append
// must start at. During an append it returns the size before that append.
func (s *Store) UploadSize(id string) (int64, error) {
	if err := checkUploadID(id); err != nil {
		return 0, fmt.Errorf("upload size: %w", err)
	}
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if sess, ok := s.uploads[id]; ok {
		return sess.size, nil
	}
	fi, err := os.Stat(s.uploadPath(id, uploadData))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("upload size %s: %w", id, ErrUploadUnknown)
	}
	if err != nil {
		return 0, fmt.Errorf("upload size %s: %w", id, err)
	}
	return fi.Size(), nil
}

// AppendUpload appends the bytes of r to the session, which must have exactly offset bytes so
// far (else ErrBadOffset, and nothing is read). It returns the session's size afterwards, also
// with ErrBadOffset and other errors once the session is found (0 with ErrUploadUnknown or
// ErrUploadBusy). The
// bytes are fsynced before it returns. Space is reserved as the bytes arrive, evicting to make
// room. If it fails partway (a read error, a cancelled ctx, ErrFull when no room can be made
// or the disk is full), the session is truncated back to its size before the call, which it
// returns with the error, and its reservation shrinks back. A concurrent append, commit or
// cancel of the same session fails with ErrUploadBusy. AppendUpload does not close r.
func (s *Store) AppendUpload(ctx context.Context, id string, offset int64, r io.Reader) (int64, error) {
	sess, err := s.acquire(id)
	if err != nil {
		return 0, fmt.Errorf("append upload: %w", err)
	}
	defer s.release(sess)
	if err := s.appendUpload(ctx, sess, offset, r); err != nil {
		return sess.size, s.full("append upload", fmt.Errorf("append upload %s: %w", id, err))
	}
	return sess.size, nil
}

func (s *Store) appendUpload(ctx context.Context, sess *session, offset int64, r io.Reader) error {
	if offset != sess.size {
		return fmt.Errorf("%w: offset %d, the upload has %d bytes", ErrBadOffset, offset, sess.size)
	}
	if err := s.catchUp(ctx, sess); err != nil {
		return err
	}
	saved, err := sess.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return fmt.Errorf("save hash state: %w", err)
	}
	path := s.uploadPath(sess.id, uploadData)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	var n int64
	_, err = f.Seek(sess.size, io.SeekStart)
	if err == nil {
		n, err = s.copyHashed(ctx, f, sess.h, r, sess.size, sess.res)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.rollback(sess, path, saved)
		return err
	}
	s.setSize(sess, sess.size+n)
	sess.hashed = sess.size
	s.saveHashState(sess)
	return nil
}

// setSize changes the session's size under s.upMu, where UploadSize reads it; the session's
// owner may read it without the lock.
func (s *Store) setSize(sess *session, size int64) {
	s.upMu.Lock()
	sess.size = size
	s.upMu.Unlock()
}

// rollback returns the session to its size before a failed append: the data truncated back,
// the hash restored. If either fails, the session takes whatever size the file has and its
// hash starts over, to be caught up from the file.
func (s *Store) rollback(sess *session, path string, saved []byte) {
	defer func() { sess.res.shrinkTo(sess.size) }()
	err := os.Truncate(path, sess.size)
	if err == nil {
		err = sess.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(saved)
		if err == nil {
			return
		}
	}
	s.log.Warn("castore: cannot roll back upload", "upload_id", sess.id, "err", err)
	sess.h, sess.hashed = sha256.New(), 0
	if fi, serr := os.Stat(path); serr == nil {
		s.setSize(sess, fi.Size())
	}
}

// saveHashState persists the session's hash (the data it covers is already fsynced). Failure
// costs only a re-read at commit, so it is logged and the stale state file removed.
func (s *Store) saveHashState(sess *session) {
	b, err := encodeHashState(hashState{alg: digest.SHA256, offset: sess.hashed, h: sess.h})
	if err == nil {
		err = s.writeFileAtomic(s.uploadPath(sess.id, uploadHashState), b, false)
	}
	if err != nil {
		s.log.Warn("castore: cannot save upload hash state", "upload_id", sess.id, "err", err)
		_ = os.Remove(s.uploadPath(sess.id, uploadHashState))
	}
}

// catchUp feeds the session's hash the bytes of the data file it has not hashed yet: none
// normally, all of them after a restart without a usable hash state.
func (s *Store) catchUp(ctx context.Context, sess *session) error {
	if sess.hashed == sess.size {
		return nil
	}
	if err := s.hashFile(ctx, s.uploadPath(sess.id, uploadData), sess.h, sess.hashed, sess.size); err != nil {
		sess.h, sess.hashed = sha256.New(), 0
		return err
	}
	sess.hashed = sess.size
	return nil
}

// hashFile feeds h the bytes [from, to) of the file at path.
func (s *Store) hashFile(ctx context.Context, path string, h hash.Hash, from, to int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read upload: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only
	n, err := hashReader(ctx, h, io.NewSectionReader(f, from, to-from))
	if err != nil {
		return fmt.Errorf("read upload: %w", err)
	}
	s.reread.Add(n)
	if n != to-from {
		return fmt.Errorf("read upload: %d bytes, want %d", n, to-from)
	}
	return nil
}

// CommitUpload verifies that the session's bytes have the digest expected and commits them as
// that blob. On ErrDigestMismatch the session is removed (as the OCI distribution API expects:
// the upload is spent) and nothing is stored. On ErrFull or another failure before the blob is
// committed the session is kept, unchanged, so the commit may be retried. If the blob is
// already stored the session is removed and the stored blob's Info returned. The data is not
// read again when the session's SHA-256 state covers it (expected is a sha256 digest and the
// state survived); otherwise it is.
func (s *Store) CommitUpload(ctx context.Context, id string, expected digest.Digest) (Info, error) {
	if err := checkDigest(expected); err != nil {
		return Info{}, fmt.Errorf("commit upload %s: %w", id, err)
	}
	sess, err := s.acquire(id)
	if err != nil {
		return Info{}, fmt.Errorf("commit upload: %w", err)
	}
	info, err := s.commitUpload(ctx, sess, expected, CommitOptions{})
	if err != nil {
		return Info{}, s.full("commit upload", fmt.Errorf("commit upload %s as %s: %w", id, expected, err))
	}
	return info, nil
}

// CommitOptions tune CommitUploadWith.
type CommitOptions struct {
	// AsSHA256 stores the blob under the SHA-256 of its bytes whatever digest verifies it, as
	// CommitUploadSHA256 does.
	AsSHA256 bool
	// Prepare, if set, runs once the bytes are verified and durable, before the blob becomes
	// visible (see PrepareFunc).
	Prepare PrepareFunc
}

// CommitUploadWith is CommitUpload, or CommitUploadSHA256 with opts.AsSHA256, with a
// PrepareFunc that makes the blob's metadata and the caller's own records durable before the
// blob is visible. When Prepare fails the session is kept, as for any failure before the commit.
func (s *Store) CommitUploadWith(ctx context.Context, id string, expected digest.Digest, opts CommitOptions) (Info, error) {
	if err := checkDigest(expected); err != nil {
		return Info{}, fmt.Errorf("commit upload %s: %w", id, err)
	}
	sess, err := s.acquire(id)
	if err != nil {
		return Info{}, fmt.Errorf("commit upload: %w", err)
	}
	info, err := s.commitUpload(ctx, sess, expected, opts)
	if err != nil {
		return Info{}, s.full("commit upload", fmt.Errorf("commit upload %s verified by %s: %w", id, expected, err))
	}
	return info, nil
}

// CommitUploadSHA256 is CommitUpload for content that must be stored under its SHA-256 digest
// whatever digest the client verifies it with: it checks that the session's bytes hash to
// expected (any supported algorithm), then commits them as the blob named by their SHA-256,
// which the returned Info carries. With a sha256 expected it is CommitUpload. The SHA-256 comes
// from the session's persisted state, so only the bytes for a non-SHA-256 expected are read
// again. Errors and the fate of the session are as for CommitUpload.
func (s *Store) CommitUploadSHA256(ctx context.Context, id string, expected digest.Digest) (Info, error) {
	if err := checkDigest(expected); err != nil {
		return Info{}, fmt.Errorf("commit upload %s: %w", id, err)
	}
	sess, err := s.acquire(id)
	if err != nil {
		return Info{}, fmt.Errorf("commit upload: %w", err)
	}
	info, err := s.commitUpload(ctx, sess, expected, CommitOptions{AsSHA256: true})
	if err != nil {
		return Info{}, s.full("commit upload", fmt.Errorf("commit upload %s verified by %s: %w", id, expected, err))
	}
	return info, nil
}

// commitUpload commits sess, which it releases or removes: under expected, or with asSHA256
// under the SHA-256 of its bytes once they match expected.
func (s *Store) commitUpload(ctx context.Context, sess *session, expected digest.Digest, opts CommitOptions) (Info, error) {
	asSHA256 := opts.AsSHA256
	keep := true
	defer func() {
		if keep {
			s.release(sess)
		}
	}()
	var got, sum256 digest.Digest
	if expected.Algorithm() == digest.SHA256 || asSHA256 {
		if err := s.catchUp(ctx, sess); err != nil {
			return Info{}, err
		}
		sum256 = digest.NewDigest(digest.SHA256, sess.h)
		got = sum256
	}
	if expected.Algorithm() != digest.SHA256 {
		h := expected.Algorithm().Hash()
		if err := s.hashFile(ctx, s.uploadPath(sess.id, uploadData), h, 0, sess.size); err != nil {
			return Info{}, err
		}
		got = digest.NewDigest(expected.Algorithm(), h)
	}
	if got != expected {
		s.metrics.mismatched()
		keep = false
		s.removeSession(sess)
		return Info{}, fmt.Errorf("%w: the %d bytes uploaded have digest %s", ErrDigestMismatch, sess.size, got)
	}
	name := expected
	if asSHA256 {
		name = sum256
	}
	f, err := os.OpenFile(s.uploadPath(sess.id, uploadData), os.O_WRONLY, 0)
	if err != nil {
		return Info{}, err
	}
	info, renamed, err := s.commit(ctx, f, name, sess.size, sess.res, opts.Prepare)
	if err != nil && !renamed {
		_ = f.Close() // commit may have failed before closing it.
		return Info{}, err
	}
	keep = false
	s.removeSession(sess)
	return info, err
}

// CancelUpload removes the session and its data. It fails with ErrUploadUnknown if there is
// no such session and with ErrUploadBusy while an append or commit runs on it.
func (s *Store) CancelUpload(id string) error {
	sess, err := s.acquire(id)
	if err != nil {
		return fmt.Errorf("cancel upload: %w", err)
	}
	s.removeSession(sess)
	return nil
}

// PurgeUploads removes the sessions that have received no bytes for longer than olderThan
// (judged by the data file's modification time) and are not busy, and returns how many it
// removed.
func (s *Store) PurgeUploads(olderThan time.Duration) (int, error) {
	if s.isClosed() {
		return 0, fmt.Errorf("purge uploads: %w", ErrClosed)
	}
	entries, err := os.ReadDir(s.path(dirUploads))
	if err != nil {
		return 0, fmt.Errorf("purge uploads: %w", err)
	}
	cutoff := s.now().Add(-olderThan)
	stale := func(id string) bool {
		fi, err := os.Stat(s.uploadPath(id, uploadData))
		return err == nil && fi.ModTime().Before(cutoff)
	}
	purged := 0
	for _, de := range entries {
		id := de.Name()
		if checkUploadID(id) != nil || !stale(id) {
			continue
		}
		sess, err := s.acquire(id)
		if err != nil {
			continue // Busy, or removed meanwhile.
		}
		if !stale(id) { // An append finished between the first look and acquire.
			s.release(sess)
			continue
		}
		s.removeSession(sess)
		purged++
	}
	return purged, nil
}

// acquireSession marks the session busy, loading it from disk if this process has not seen it
// yet.
func (s *Store) acquireSession(id string) (*session, error) {
	if err := checkUploadID(id); err != nil {
		return nil, err
	}
	if s.isClosed() {
		return nil, ErrClosed
	}
	s.upMu.Lock()
	defer s.upMu.Unlock()
	sess, ok := s.uploads[id]
	if !ok {
		var err error
		if sess, err = s.loadSession(id); err != nil {
			return nil, err
		}
		s.uploads[id] = sess
	}
	if sess.busy {
		return nil, fmt.Errorf("%w: %s", ErrUploadBusy, id)
	}
	sess.busy = true
	return sess, nil
}

// acquire marks the session busy, loading it from disk if this process has not seen it yet;
// a session of an earlier process is adopted: its bytes, reserved by Open, become its own
// reservation.
func (s *Store) acquire(id string) (*session, error) {
	sess, err := s.acquireSession(id)
	if err != nil {
		return nil, err
	}
	s.adoptOrphan(sess)
	return sess, nil
}

func (s *Store) release(sess *session) {
	s.upMu.Lock()
	sess.busy = false
	s.upMu.Unlock()
}

// loadSession reads a session left by an earlier process: its size from the data file, its
// hash from the hash state when that is usable. s.upMu is held.
func (s *Store) loadSession(id string) (*session, error) {
	fi, err := os.Stat(s.uploadPath(id, uploadData))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrUploadUnknown, id)
	}
	if err != nil {
		return nil, fmt.Errorf("load upload %s: %w", id, err)
	}
	label, err := s.readLabel(id)
	if err != nil {
		return nil, fmt.Errorf("load upload %s: %w", id, err)
	}
	sess := &session{id: id, size: fi.Size(), h: sha256.New(), label: label}
	b, err := os.ReadFile(s.uploadPath(id, uploadHashState))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("castore: cannot read upload hash state", "upload_id", id, "err", err)
		}
		return sess, nil
	}
	hs, err := decodeHashState(b)
	switch {
	case err != nil:
		s.log.Warn("castore: ignoring upload hash state", "upload_id", id, "err", err)
	case hs.alg != digest.SHA256 || hs.offset > sess.size:
		s.log.Warn("castore: ignoring upload hash state", "upload_id", id, "algorithm", hs.alg,
			"offset", hs.offset, "size", sess.size)
	default:
		sess.h, sess.hashed = hs.h, hs.offset
	}
	return sess, nil
}

// removeSession deletes a busy session: out of the map and, atomically, out of uploads/ (moved
// to tmp/ first, so no one can load it while its files are deleted).
func (s *Store) removeSession(sess *session) {
	dir := s.uploadPath(sess.id)
	trash := s.path(dirTmp, "cancelled-"+sess.id+"-"+randomID())
	s.upMu.Lock()
	var err error
	if err = os.Rename(dir, trash); err != nil {
		err = os.RemoveAll(dir) // Slower, but still unseen by acquire.
		trash = ""
	}
	delete(s.uploads, sess.id)
	s.upMu.Unlock()
	if trash != "" {
		err = os.RemoveAll(trash)
	}
	if err != nil {
		s.log.Warn("castore: cannot remove upload", "upload_id", sess.id, "err", err)
	}
	// After the files are gone, so a reservation taken now finds the disk space free too.
	if sess.res != nil {
		sess.res.release()
	} else {
		s.dropOrphan(sess.id)
	}
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
