package azure

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/backend"
)

var errTooLong = errors.New("reader has more bytes than declared")

// Upload implements backend.Backend. The first block_size bytes are read before anything is
// sent: an object that fits is one Put Blob; a larger one is staged block by block and
// committed only after r has ended with exactly size bytes (when size is not -1).
func (b *Backend) Upload(ctx context.Context, namespace, name string, r io.Reader, size int64) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("azure: upload %s/%s: %w", namespace, name, err)
	}
	object := namespace + "/" + name
	src := &countedReader{ctx: ctx, r: r, size: size}
	bb := b.client.NewBlockBlobClient(b.blobName(namespace, name))

	first, more, err := src.first(b.blockSize)
	if err != nil {
		return fmt.Errorf("azure: upload %s: %w", object, err)
	}
	if !more {
		data := first
		sum := md5.Sum(data)
		// The MD5 lets the service refuse a body damaged on the way.
		_, err := bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{
			TransactionalValidation: blob.TransferValidationTypeMD5(sum[:]),
		})
		if err != nil {
			return b.fail(ctx, "upload", object, err)
		}
		return nil
	}
	return b.stage(ctx, object, bb, src, first)
}

// stage uploads src as staged blocks, the first of which is already in first, and commits
// them once src has ended. Up to b.concurrency blocks are in flight while the next is read.
func (b *Backend) stage(ctx context.Context, object string, bb *blockblob.Client, src *countedReader, first []byte) error {
	// Block IDs are unique to this upload, so two uploads of the same blob never commit each
	// other's blocks, and all of the same length, as Azure requires within one blob.
	var nonce [8]byte
	_, _ = rand.Read(nonce[:]) // crypto/rand.Read never fails
	blockID := func(i int) string {
		return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "krakenctl-%s-%05d", hex.EncodeToString(nonce[:]), i))
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.concurrency)
	// Buffers come back through free when their block is sent, so at most concurrency+1 of them
	// exist: concurrency in flight and one being filled.
	free := make(chan []byte, b.concurrency+1)
	free <- first
	getBuf := func() []byte {
		select {
		case buf := <-free:
			return buf
		default:
			return make([]byte, b.blockSize)
		}
	}
	stageCtx := policy.WithRetryOptions(gctx, blockRetryOptions)

	var (
		ids     []string
		readErr error
		buf     = getBuf()
		n       = len(first)
		more    = true
	)
	for {
		if len(ids) == maxBlocks {
			readErr = fmt.Errorf("more than %d blocks of %d bytes (Azure's limit for one blob): raise block_size", maxBlocks, b.blockSize)
			break
		}
		id := blockID(len(ids))
		ids = append(ids, id)
		data := buf[:n]
		g.Go(func() error {
			defer func() { free <- data[:cap(data)] }()
			sum := md5.Sum(data)
			_, err := bb.StageBlock(stageCtx, id, streaming.NopCloser(bytes.NewReader(data)), &blockblob.StageBlockOptions{
				TransactionalValidation: blob.TransferValidationTypeMD5(sum[:]),
			})
			return err
		})
		if !more {
			break
		}
		if gctx.Err() != nil {
			break // a block failed (or ctx is done): stop reading
		}
		buf = getBuf()
		n, more, readErr = src.fill(buf)
		if readErr != nil {
			break
		}
		if n == 0 {
			break // the previous block was the last: r ended exactly at a block boundary
		}
	}
	stageErr := g.Wait()
	switch {
	case readErr != nil:
		return fmt.Errorf("azure: upload %s: %w", object, readErr)
	case stageErr != nil:
		return b.fail(ctx, "upload (stage block)", object, stageErr)
	case ctx.Err() != nil:
		return fmt.Errorf("azure: upload %s: %w", object, ctx.Err())
	}
	if _, err := bb.CommitBlockList(ctx, ids, nil); err != nil {
		err = b.fail(ctx, "upload (commit block list)", object, err)
		if bloberror.HasCode(err, bloberror.InvalidBlockList) {
			// Azure keeps one set of uncommitted blocks per blob: another upload's commit (or
			// Put Blob) of the same blob discarded ours.
			return fmt.Errorf("%w (another upload of the same blob finished first and discarded this upload's blocks; retry it)", err)
		}
		return err
	}
	return nil
}

// countedReader reads r for an upload of size bytes (-1: unknown): it fails when r yields
// more or fewer bytes than size, stops at the first read after ctx is done, and keeps r's own
// error, wrapped.
type countedReader struct {
	ctx  context.Context
	r    io.Reader
	size int64
	n    int64
	err  error // sticky
	eof  bool
}

// firstBuf is the first buffer of an upload of unknown size; it doubles up to the block size,
// so a small object never costs a whole block of memory.
const firstBuf = 64 << 10

// first reads the object's first block: at most limit bytes, into a buffer no larger than the
// object needs. more reports whether r may have more bytes; when it does, the block is full
// (limit bytes).
func (c *countedReader) first(limit int64) ([]byte, bool, error) {
	size := limit
	switch {
	case c.size < 0:
		size = min(limit, firstBuf)
	case c.size < limit:
		size = c.size
	}
	buf := make([]byte, size)
	n, more, err := c.fill(buf)
	for more && int64(len(buf)) < limit {
		grown := make([]byte, min(2*int64(len(buf)), limit))
		copy(grown, buf[:n])
		buf = grown
		var k int
		k, more, err = c.fill(buf[n:])
		n += k
		if err != nil {
			break
		}
	}
	return buf[:n], more, err
}

// fill reads into buf until it is full or r ends. more reports whether r may have more bytes
// (buf is full and r has not ended yet); when it is false, buf[:n] is the rest of the object.
func (c *countedReader) fill(buf []byte) (n int, more bool, err error) {
	for n < len(buf) && !c.eof {
		k, err := c.read(buf[n:])
		n += k
		if err != nil {
			return n, false, err
		}
	}
	if c.eof {
		return n, false, nil
	}
	if c.size >= 0 && c.n == c.size {
		// buf is full and holds the last declared byte: r must end now (read fails if it
		// yields one more byte), so an object of exactly one block is one Put Blob.
		var one [1]byte
		for range 100 {
			if _, err := c.read(one[:]); err != nil {
				return n, false, err
			}
			if c.eof {
				return n, false, nil
			}
		}
		return n, false, fmt.Errorf("read: %w", io.ErrNoProgress)
	}
	return n, true, nil
}

// read is one Read of r, checked against size; it reports io.EOF by setting c.eof.
func (c *countedReader) read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if err := c.ctx.Err(); err != nil {
		c.err = err
		return 0, err
	}
	if c.size >= 0 && int64(len(p)) > c.size-c.n+1 {
		p = p[:c.size-c.n+1] // one byte past size reveals a reader that is too long
	}
	k, err := c.r.Read(p)
	c.n += int64(k)
	switch {
	case c.size >= 0 && c.n > c.size:
		c.err = fmt.Errorf("%w (%d)", errTooLong, c.size)
		return k, c.err
	case err == io.EOF:
		if c.size >= 0 && c.n < c.size {
			c.err = fmt.Errorf("read %d bytes, declared %d: %w", c.n, c.size, io.ErrUnexpectedEOF)
			return k, c.err
		}
		c.eof = true
		return k, nil
	case err != nil:
		c.err = fmt.Errorf("read: %w", err)
		return k, c.err
	}
	return k, nil
}
