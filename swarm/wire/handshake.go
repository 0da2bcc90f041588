package wire

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
)

// Magic opens every handshake.
const Magic = "KCTL"

// handshakeFixedLength is the handshake without its bitfield: magic, version, digest, peer id,
// blob length, piece length.
const handshakeFixedLength = 4 + 2 + 32 + PeerIDLength + 8 + 4

// PeerID names a peer: PeerIDLength random bytes, chosen once per process.
type PeerID [PeerIDLength]byte

// RandomPeerID returns a fresh random peer id from crypto/rand.
func RandomPeerID() PeerID {
	var id PeerID
	_, _ = rand.Read(id[:]) // crypto/rand.Read never returns an error.
	return id
}

// String returns the peer id in lower-case hex.
func (id PeerID) String() string { return hex.EncodeToString(id[:]) }

// Handshake opens a connection: the blob the sender wants to trade, who the sender is, the
// blob's layout as the sender's metainfo has it, and the pieces the sender has.
type Handshake struct {
	// Digest is the blob's SHA-256 digest.
	Digest digest.Digest
	// PeerID is the sender's id.
	PeerID PeerID
	// Length is the blob's size in bytes.
	Length int64
	// PieceLength is the size of every piece but the last, in [1, MaxPieceLength].
	PieceLength int64
	// Bitfield holds the pieces the sender has; it must not be nil and its Len must equal
	// NumPieces().
	Bitfield *Bitfield
}

// NumPieces returns ceil(Length / PieceLength), or 0 when PieceLength is not positive.
func (h Handshake) NumPieces() int {
	if h.PieceLength <= 0 || h.Length <= 0 {
		return 0
	}
	return int((h.Length + h.PieceLength - 1) / h.PieceLength)
}

// validateLayout checks the blob length and piece length against the limits of the format.
func validateLayout(length, pieceLength int64) error {
	if pieceLength < 1 || pieceLength > MaxPieceLength {
		return fmt.Errorf("%w: piece length %d outside [1, %d]", ErrMalformed, pieceLength, MaxPieceLength)
	}
	if length < 0 || length > MaxPieces*pieceLength {
		return fmt.Errorf("%w: blob length %d outside [0, %d] for piece length %d", ErrMalformed, length, MaxPieces*pieceLength, pieceLength)
	}
	return nil
}

// AppendHandshake appends the wire form of h to b. It returns an error wrapping ErrMalformed
// when h breaks a rule of the format: a digest that is not a valid SHA-256 digest, a layout
// beyond the limits, or a bitfield that is nil or whose length is not NumPieces().
func AppendHandshake(b []byte, h Handshake) ([]byte, error) {
	if err := h.Digest.Validate(); err != nil || h.Digest.Algorithm() != digest.SHA256 {
		return b, fmt.Errorf("encode handshake: %w: digest %q is not a valid sha256 digest", ErrMalformed, h.Digest)
	}
	if err := validateLayout(h.Length, h.PieceLength); err != nil {
		return b, fmt.Errorf("encode handshake: %w", err)
	}
	if h.Bitfield == nil {
		return b, fmt.Errorf("encode handshake: %w: nil bitfield", ErrMalformed)
	}
	if h.Bitfield.Len() != h.NumPieces() {
		return b, fmt.Errorf("encode handshake: %w: bitfield of %d pieces for a blob of %d pieces", ErrMalformed, h.Bitfield.Len(), h.NumPieces())
	}
	raw, err := hex.DecodeString(h.Digest.Encoded())
	if err != nil { // Unreachable after Validate; kept so a bad digest can never encode.
		return b, fmt.Errorf("encode handshake: %w: digest %q: %w", ErrMalformed, h.Digest, err)
	}
	b = append(b, Magic...)
	b = binary.BigEndian.AppendUint16(b, Version)
	b = append(b, raw...)
	b = append(b, h.PeerID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Length))
	b = binary.BigEndian.AppendUint32(b, uint32(h.PieceLength))
	b = append(b, h.Bitfield.bits...)
	return b, nil
}

// WriteHandshake writes h to w in one Write call. Errors are those of AppendHandshake or w.
func WriteHandshake(w io.Writer, h Handshake) error {
	b, err := AppendHandshake(make([]byte, 0, handshakeFixedLength+h.Bitfield.size()), h)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write handshake: %w", err)
	}
	return nil
}

// ReadHandshake reads one handshake from r. It reads no byte beyond the handshake and allocates
// at most MaxHandshakeLength bytes, only after it has checked the fixed part.
//
// Errors: io.EOF when r ends before the first byte; a wrapped io.ErrUnexpectedEOF when it ends
// inside the handshake; ErrBadMagic, ErrVersion or ErrMalformed (wrapped) for a handshake this
// version cannot accept; or r's error, wrapped.
func ReadHandshake(r io.Reader) (Handshake, error) {
	var fixed [handshakeFixedLength]byte
	if _, err := io.ReadFull(r, fixed[:4]); err != nil {
		if errors.Is(err, io.EOF) {
			return Handshake{}, io.EOF
		}
		return Handshake{}, fmt.Errorf("read handshake: %w", err)
	}
	if string(fixed[:4]) != Magic {
		return Handshake{}, fmt.Errorf("read handshake: %w: %q", ErrBadMagic, fixed[:4])
	}
	if _, err := io.ReadFull(r, fixed[4:6]); err != nil {
		return Handshake{}, fmt.Errorf("read handshake: %w", noEOF(err))
	}
	if v := binary.BigEndian.Uint16(fixed[4:6]); v != Version {
		return Handshake{}, fmt.Errorf("read handshake: %w: peer speaks %d, we speak %d", ErrVersion, v, Version)
	}
	if _, err := io.ReadFull(r, fixed[6:]); err != nil {
		return Handshake{}, fmt.Errorf("read handshake: %w", noEOF(err))
	}
	h := Handshake{Digest: digest.NewDigestFromBytes(digest.SHA256, fixed[6:38])}
	copy(h.PeerID[:], fixed[38:38+PeerIDLength])
	p := 38 + PeerIDLength
	length := binary.BigEndian.Uint64(fixed[p:])
	h.PieceLength = int64(binary.BigEndian.Uint32(fixed[p+8:]))
	if length > MaxPieces*MaxPieceLength {
		return Handshake{}, fmt.Errorf("read handshake: %w: blob length %d beyond %d", ErrMalformed, length, int64(MaxPieces*MaxPieceLength))
	}
	h.Length = int64(length)
	if err := validateLayout(h.Length, h.PieceLength); err != nil {
		return Handshake{}, fmt.Errorf("read handshake: %w", err)
	}
	n := h.NumPieces()
	bits := make([]byte, (n+7)/8)
	if _, err := io.ReadFull(r, bits); err != nil {
		return Handshake{}, fmt.Errorf("read handshake: bitfield: %w", noEOF(err))
	}
	if err := checkBitfield(n, bits); err != nil {
		return Handshake{}, fmt.Errorf("read handshake: %w", err)
	}
	h.Bitfield = &Bitfield{n: n, bits: bits}
	return h, nil
}

// noEOF turns io.EOF met inside a structure into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
