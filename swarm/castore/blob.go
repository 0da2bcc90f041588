package castore

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Blob is an open, committed blob. It keeps the blob from being evicted or deleted until Close.
// ReadAt is safe for concurrent use; Read, Seek and WriteTo share one file offset and are not.
type Blob struct {
	f      *os.File
	digest digest.Digest
	size   int64
	store  *Store
	entry  *entry
	once   sync.Once
}

// Digest returns the blob's digest.
func (b *Blob) Digest() digest.Digest { return b.digest }

// Size returns the blob's length in bytes.
func (b *Blob) Size() int64 { return b.size }

// Read implements io.Reader from the current offset.
func (b *Blob) Read(p []byte) (int, error) { return b.f.Read(p) }

// ReadAt implements io.ReaderAt.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) { return b.f.ReadAt(p, off) }

// Seek implements io.Seeker.
func (b *Blob) Seek(offset int64, whence int) (int64, error) { return b.f.Seek(offset, whence) }

// WriteTo implements io.WriterTo from the current offset with the file's own WriteTo, which
// sends the bytes without copying them through user space when w is a socket (Linux sendfile).
func (b *Blob) WriteTo(w io.Writer) (int64, error) { return b.f.WriteTo(w) }

// File returns the underlying read-only file, for callers that need it directly: for example to
// send a range without user-space copies, Seek to its start and io.Copy(conn,
// io.LimitReader(b.File(), n)), which the net package turns into sendfile. The file offset is
// the one Read and Seek use. The file stays owned by the Blob: do not close it, and do not use
// it after Close.
func (b *Blob) File() *os.File { return b.f }

// Close closes the file and lets the blob be evicted again. Only the first call has an effect.
func (b *Blob) Close() error {
	var err error
	b.once.Do(func() {
		err = b.f.Close()
		b.store.unpin(b.entry)
		if err != nil {
			err = fmt.Errorf("close blob %s: %w", b.digest, err)
		}
	})
	return err
}

// Interface guards
var (
	_ io.ReadSeekCloser = (*Blob)(nil)
	_ io.ReaderAt       = (*Blob)(nil)
	_ io.WriterTo       = (*Blob)(nil)
)
