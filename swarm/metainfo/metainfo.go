// Package metainfo describes how a blob is cut into pieces for the swarm: the blob's digest and
// length, the piece length, and the SHA-256 of every piece. Origins generate a MetaInfo once per
// blob (Generator, Generate); trackers serve it; agents decode it (Decode) and check every piece
// they receive against it (VerifyPiece) before they commit the whole blob, whose digest they check
// again, to their content-addressed store.
//
// Pieces are contiguous: piece i covers bytes [i*PieceLength, min((i+1)*PieceLength, Length)),
// so every piece but the last has exactly PieceLength bytes. A zero-length blob has no pieces.
//
// A MetaInfo is a plain value; the package keeps no state and all functions are safe for
// concurrent use. A Generator is not safe for concurrent use.
package metainfo

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/bits"
	"slices"

	"github.com/opencontainers/go-digest"
)

// Bounds every valid MetaInfo respects. They are part of the format: a peer must accept any
// MetaInfo within them, so they also bound what a decoder of untrusted input has to hold.
const (
	// MinPieceLength is the smallest piece length a MetaInfo may use. PieceLengthFor never picks
	// less than 64 KiB; smaller pieces exist for tests and for operators who configure them.
	MinPieceLength int64 = 4 << 10
	// MaxPieceLength is the largest piece length. A peer verifies a piece only once it has all
	// of it, so this bounds the bytes a peer has at stake in one unverified piece.
	MaxPieceLength int64 = 64 << 20
	// MaxPieces is the largest number of pieces. It bounds the bitfield a peer sends (128 KiB)
	// and the piece sums it holds (32 MiB), whatever the blob size.
	MaxPieces = 1 << 20
)

// Limits PieceLengthFor works within; see its documentation for the reasons.
const (
	autoMinPieceLength int64 = 64 << 10
	autoMaxPieceLength int64 = 16 << 20
	autoTargetPieces   int64 = 1024
)

// Sentinel errors, wrapped with %w; test them with errors.Is.
var (
	// ErrInvalid means a MetaInfo, or its encoding, breaks a rule of the format.
	ErrInvalid = errors.New("metainfo: invalid")
	// ErrTooLarge means a blob needs more than MaxPieces pieces at the chosen piece length.
	ErrTooLarge = errors.New("metainfo: blob too large")
	// ErrSizeMismatch means a reader produced a different number of bytes than announced.
	ErrSizeMismatch = errors.New("metainfo: size mismatch")
	// ErrFinished means a Generator was used after Finish.
	ErrFinished = errors.New("metainfo: generator finished")
)

// MetaInfo is the piece layout of one blob and the SHA-256 of every piece.
type MetaInfo struct {
	// Digest is the SHA-256 digest of the whole blob ("sha256:<64 lower-case hex>").
	Digest digest.Digest
	// Length is the blob's size in bytes.
	Length int64
	// PieceLength is the size of every piece but the last: a power of two in
	// [MinPieceLength, MaxPieceLength].
	PieceLength int64
	// PieceSums holds the SHA-256 of each piece, in order; its length is NumPieces().
	PieceSums [][sha256.Size]byte
}

// PieceLengthFor returns the piece length to use for a blob of size bytes: the smallest power
// of two that cuts it into at most 1024 pieces, clamped to [64 KiB, 16 MiB] (and raised above
// 16 MiB only when a blob larger than 16 TiB would otherwise exceed MaxPieces). Blobs between
// 64 MiB and 16 GiB therefore get 513 to 1024 pieces, smaller blobs fewer, larger ones more.
//
// Why these numbers: a few hundred pieces or more let rarest-first selection spread different
// pieces across a host's neighbours from the first second, and keep the tail (the last pieces,
// held by few hosts) short. Each piece costs a request, a hash check and a "have" message to
// every neighbour, and 32 bytes of metainfo, so going far beyond a few thousand pieces buys
// nothing. Below 64 KiB the per-piece overhead dominates and disk I/O gets small; above 16 MiB
// a peer waits too long for its first verified piece to serve onwards (1.3 s at 100 Mbit/s).
func PieceLengthFor(size int64) int64 {
	pl := autoMinPieceLength
	if size > 0 {
		want := ceilDiv(size, autoTargetPieces)
		pl = int64(1) << bits.Len64(uint64(want-1)) // Smallest power of two >= want.
		pl = min(max(pl, autoMinPieceLength), autoMaxPieceLength)
	}
	for pl < MaxPieceLength && ceilDiv(max(size, 0), pl) > MaxPieces {
		pl *= 2
	}
	return pl
}

// NumPieces returns the number of pieces: ceil(Length / PieceLength), 0 for an empty blob.
// It is meaningful only for a MetaInfo whose PieceLength is positive.
func (m MetaInfo) NumPieces() int {
	if m.PieceLength <= 0 || m.Length <= 0 {
		return 0
	}
	return int(ceilDiv(m.Length, m.PieceLength))
}

// PieceRange returns the offset and length of piece i. It panics unless 0 <= i < NumPieces(),
// like an out-of-range slice index: callers check indexes that come from the network first.
func (m MetaInfo) PieceRange(i int) (off, n int64) {
	if i < 0 || i >= m.NumPieces() {
		panic(fmt.Sprintf("metainfo: piece %d out of range [0, %d)", i, m.NumPieces()))
	}
	off = int64(i) * m.PieceLength
	return off, min(m.PieceLength, m.Length-off)
}

// VerifyPiece reports whether data is exactly piece i: the right length and the right SHA-256.
// It returns false for an index out of range.
func (m MetaInfo) VerifyPiece(i int, data []byte) bool {
	if i < 0 || i >= m.NumPieces() || i >= len(m.PieceSums) {
		return false
	}
	if _, n := m.PieceRange(i); int64(len(data)) != n {
		return false
	}
	sum := sha256.Sum256(data)
	return sum == m.PieceSums[i]
}

// Validate checks every rule of the format and returns an error wrapping ErrInvalid naming the
// first one broken.
func (m MetaInfo) Validate() error {
	if err := m.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: digest %q: %w", ErrInvalid, m.Digest, err)
	}
	if m.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%w: digest %q: algorithm must be sha256", ErrInvalid, m.Digest)
	}
	if m.Length < 0 {
		return fmt.Errorf("%w: negative length %d", ErrInvalid, m.Length)
	}
	if err := checkPieceLength(m.PieceLength); err != nil {
		return err
	}
	if n := ceilDiv(m.Length, m.PieceLength); n > MaxPieces {
		return fmt.Errorf("%w: %d pieces, more than %d", ErrInvalid, n, MaxPieces)
	}
	if got, want := len(m.PieceSums), m.NumPieces(); got != want {
		return fmt.Errorf("%w: %d piece sums for %d pieces", ErrInvalid, got, want)
	}
	return nil
}

// Equal reports whether m and o describe the same layout with the same sums.
func (m MetaInfo) Equal(o MetaInfo) bool {
	return m.Digest == o.Digest && m.Length == o.Length && m.PieceLength == o.PieceLength &&
		slices.Equal(m.PieceSums, o.PieceSums)
}

func checkPieceLength(pl int64) error {
	if pl < MinPieceLength || pl > MaxPieceLength || pl&(pl-1) != 0 {
		return fmt.Errorf("%w: piece length %d: must be a power of two in [%d, %d]",
			ErrInvalid, pl, MinPieceLength, MaxPieceLength)
	}
	return nil
}

// ceilDiv returns ceil(a/b) for a >= 0, b > 0 without overflowing.
func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 {
		q++
	}
	return q
}
