package metainfo

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
)

// Generator computes a MetaInfo from a blob written to it in order, in one pass: every byte is
// fed to the whole-blob SHA-256 and to the SHA-256 of its piece, and nothing is buffered, so
// memory stays flat in the blob size (32 bytes per piece). A Generator is not safe for
// concurrent use.
type Generator struct {
	pieceLength int64
	whole       hash.Hash
	piece       hash.Hash
	pieceFill   int64 // Bytes of the current piece written so far.
	length      int64
	sums        [][sha256.Size]byte
	finished    bool
}

// NewGenerator returns a Generator cutting pieces of pieceLength bytes, which must be a power
// of two in [MinPieceLength, MaxPieceLength]; use PieceLengthFor to choose it.
func NewGenerator(pieceLength int64) (*Generator, error) {
	if err := checkPieceLength(pieceLength); err != nil {
		return nil, fmt.Errorf("new metainfo generator: %w", err)
	}
	return &Generator{pieceLength: pieceLength, whole: sha256.New(), piece: sha256.New()}, nil
}

// Write hashes p as the next bytes of the blob. It always consumes all of p, unless the blob
// grows beyond MaxPieces pieces (ErrTooLarge) or Finish was called (ErrFinished); after an
// error the Generator stays unusable.
func (g *Generator) Write(p []byte) (int, error) {
	if g.finished {
		return 0, fmt.Errorf("write metainfo generator: %w", ErrFinished)
	}
	if ceilDiv(g.length+int64(len(p)), g.pieceLength) > MaxPieces {
		g.finished = true
		return 0, fmt.Errorf("write metainfo generator: %w: more than %d pieces of %d bytes",
			ErrTooLarge, MaxPieces, g.pieceLength)
	}
	g.whole.Write(p) // hash.Hash.Write never fails.
	n := len(p)
	for len(p) > 0 {
		k := min(int64(len(p)), g.pieceLength-g.pieceFill)
		g.piece.Write(p[:k])
		g.pieceFill += k
		p = p[k:]
		if g.pieceFill == g.pieceLength {
			g.endPiece()
		}
	}
	g.length += int64(n)
	return n, nil
}

// Len returns the number of bytes written so far.
func (g *Generator) Len() int64 { return g.length }

// Finish ends the blob and returns its MetaInfo. Further calls to Write or Finish fail with
// ErrFinished.
func (g *Generator) Finish() (MetaInfo, error) {
	if g.finished {
		return MetaInfo{}, fmt.Errorf("finish metainfo generator: %w", ErrFinished)
	}
	g.finished = true
	if g.pieceFill > 0 {
		g.endPiece()
	}
	sums := g.sums
	if sums == nil {
		sums = [][sha256.Size]byte{}
	}
	return MetaInfo{
		Digest:      digest.NewDigest(digest.SHA256, g.whole),
		Length:      g.length,
		PieceLength: g.pieceLength,
		PieceSums:   sums,
	}, nil
}

func (g *Generator) endPiece() {
	var sum [sha256.Size]byte
	g.piece.Sum(sum[:0])
	g.sums = append(g.sums, sum)
	g.piece.Reset()
	g.pieceFill = 0
}

// generateBufSize is the read size of Generate: large enough that per-call overhead vanishes,
// small enough that cancellation is noticed within a millisecond or so.
const generateBufSize = 1 << 20

// Generate reads exactly size bytes from r and returns their MetaInfo, with the piece length
// PieceLengthFor(size). It fails with ErrSizeMismatch if r ends early or has more bytes, and
// stops with ctx's error when ctx is cancelled. It does not close r.
func Generate(ctx context.Context, r io.Reader, size int64) (MetaInfo, error) {
	if size < 0 {
		return MetaInfo{}, fmt.Errorf("generate metainfo: %w: negative size %d", ErrInvalid, size)
	}
	pl := PieceLengthFor(size)
	if ceilDiv(size, pl) > MaxPieces {
		return MetaInfo{}, fmt.Errorf("generate metainfo: %w: %d bytes need more than %d pieces",
			ErrTooLarge, size, MaxPieces)
	}
	g, err := NewGenerator(pl)
	if err != nil {
		return MetaInfo{}, fmt.Errorf("generate metainfo: %w", err)
	}
	// Read one byte more than announced, so a longer reader is detected.
	lr := io.LimitReader(r, size+1)
	buf := make([]byte, min(generateBufSize, size+1))
	for {
		if err := ctx.Err(); err != nil {
			return MetaInfo{}, fmt.Errorf("generate metainfo: %w", err)
		}
		n, rerr := lr.Read(buf)
		if n > 0 {
			if _, err := g.Write(buf[:n]); err != nil {
				return MetaInfo{}, fmt.Errorf("generate metainfo: %w", err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return MetaInfo{}, fmt.Errorf("generate metainfo: read: %w", rerr)
		}
	}
	if g.Len() != size {
		return MetaInfo{}, fmt.Errorf("generate metainfo: %w: read %s bytes, want %d",
			ErrSizeMismatch, readCount(g.Len(), size), size)
	}
	return g.Finish()
}

func readCount(got, size int64) string {
	if got > size {
		return fmt.Sprintf("more than %d", size)
	}
	return fmt.Sprint(got)
}
