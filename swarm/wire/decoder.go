package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Decoder reads messages from a stream that has passed the handshake. It holds one buffer,
// grown on demand up to MaxFrameLength bytes and reused for every message. It reads with
// io.ReadFull and no read-ahead of its own: wrap a net.Conn in a bufio.Reader for fewer system
// calls (a bufio.Reader hands large reads, like a piece payload into the caller's buffer,
// straight to the connection).
//
// A Decoder is not safe for concurrent use. After any error other than io.EOF the stream has
// lost its place: close the connection.
type Decoder struct {
	r   io.Reader
	hdr [frameHeaderSize + blockBody]byte
	buf []byte
	// pending is the number of payload bytes of a piece message, returned as a PieceHeader,
	// that the caller has not read yet.
	pending int
}

// NewDecoder returns a decoder reading from r.
func NewDecoder(r io.Reader) *Decoder { return &Decoder{r: r} }

// ReadMessage reads the next message. A Piece's Data aliases the decoder's buffer and is valid
// only until the next call on d.
//
// Errors: io.EOF, unwrapped, when the stream ends cleanly between messages; a wrapped
// io.ErrUnexpectedEOF when it ends inside one; ErrFrameTooLarge, ErrUnknownType or
// ErrMalformed (wrapped) for a frame this version cannot accept, reported before the decoder
// allocates room for the frame's body; or the reader's error, wrapped.
func (d *Decoder) ReadMessage() (Message, error) {
	m, err := d.ReadMessageHeader()
	if err != nil {
		return nil, err
	}
	ph, ok := m.(PieceHeader)
	if !ok {
		return m, nil
	}
	if cap(d.buf) < int(ph.Length) {
		d.buf = make([]byte, ph.Length)
	}
	data := d.buf[:ph.Length]
	if err := d.ReadPayload(data); err != nil {
		return nil, err
	}
	return Piece{Piece: ph.Piece, Offset: ph.Offset, Data: data}, nil
}

// ReadMessageHeader is ReadMessage except that a piece message comes back as a PieceHeader
// with its payload still unread: the caller reads it with ReadPayload into a buffer of its own
// (say, the piece's place in a memory-mapped or pooled buffer) without an extra copy. If the
// caller reads another message instead, the decoder first discards the unread payload.
//
// Errors are those of ReadMessage.
func (d *Decoder) ReadMessageHeader() (Message, error) {
	if d.pending > 0 {
		n, err := io.CopyN(io.Discard, d.r, int64(d.pending))
		d.pending -= int(n)
		if err != nil {
			return nil, fmt.Errorf("read message: discard piece payload: %w", noEOF(err))
		}
	}
	if _, err := io.ReadFull(d.r, d.hdr[:frameLengthSize]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("read message: frame length: %w", err)
	}
	n := binary.BigEndian.Uint32(d.hdr[:frameLengthSize])
	if n > MaxFrameLength {
		return nil, fmt.Errorf("read message: %w: %d bytes, at most %d", ErrFrameTooLarge, n, MaxFrameLength)
	}
	if n == 0 {
		return nil, fmt.Errorf("read message: %w: frame of length 0 has no type byte", ErrMalformed)
	}
	if _, err := io.ReadFull(d.r, d.hdr[frameLengthSize:frameHeaderSize]); err != nil {
		return nil, fmt.Errorf("read message: type: %w", noEOF(err))
	}
	t := Type(d.hdr[frameLengthSize])
	body := int(n) - 1
	lo, hi, ok := bodyBounds(t)
	if !ok {
		return nil, fmt.Errorf("read message: %w: %d", ErrUnknownType, t)
	}
	if body < lo || body > hi {
		return nil, fmt.Errorf("read message: %w: %s body of %d bytes outside [%d, %d]", ErrMalformed, t, body, lo, hi)
	}
	switch t {
	case TypeKeepAlive:
		return KeepAlive{}, nil
	case TypeComplete:
		return Complete{}, nil
	case TypeHave:
		b, err := d.readSmall(t, haveBody)
		if err != nil {
			return nil, err
		}
		m := Have{Piece: binary.BigEndian.Uint32(b)}
		if m.Piece >= MaxPieces {
			return nil, fmt.Errorf("read message: have: %w: piece %d beyond %d", ErrMalformed, m.Piece, MaxPieces-1)
		}
		return m, nil
	case TypeRequest, TypeCancel:
		b, err := d.readSmall(t, blockBody)
		if err != nil {
			return nil, err
		}
		piece, off, length := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint32(b[8:])
		if err := checkBlock(piece, off, length); err != nil {
			return nil, fmt.Errorf("read message: %s: %w", t, err)
		}
		if t == TypeRequest {
			return Request{Piece: piece, Offset: off, Length: length}, nil
		}
		return Cancel{Piece: piece, Offset: off, Length: length}, nil
	case TypePiece:
		b, err := d.readSmall(t, pieceHeaderBody)
		if err != nil {
			return nil, err
		}
		m := PieceHeader{Piece: binary.BigEndian.Uint32(b), Offset: binary.BigEndian.Uint32(b[4:]), Length: uint32(body - pieceHeaderBody)}
		if err := checkBlock(m.Piece, m.Offset, m.Length); err != nil {
			return nil, fmt.Errorf("read message: piece: %w", err)
		}
		d.pending = int(m.Length)
		return m, nil
	case TypeBitfield:
		b, err := d.readBody(t, body)
		if err != nil {
			return nil, err
		}
		count := binary.BigEndian.Uint32(b)
		if count > MaxPieces {
			return nil, fmt.Errorf("read message: bitfield: %w: %d pieces, more than %d", ErrMalformed, count, MaxPieces)
		}
		// ParseBitfield copies: the message outlives the decoder's buffer.
		bf, err := ParseBitfield(int(count), b[bitfieldMinBody:])
		if err != nil {
			return nil, fmt.Errorf("read message: %w", err)
		}
		return BitfieldMsg{Bitfield: bf}, nil
	default: // TypeError; bodyBounds rejected every other type.
		b, err := d.readBody(t, body)
		if err != nil {
			return nil, err
		}
		m := Error{Code: ErrorCode(binary.BigEndian.Uint16(b)), Message: string(b[errorMinBody:])}
		if !utf8.ValidString(m.Message) {
			return nil, fmt.Errorf("read message: error: %w: message is not UTF-8", ErrMalformed)
		}
		return m, nil
	}
}

// bodyBounds returns the smallest and largest body (frame minus type byte) of a message type,
// and false for an unknown type.
func bodyBounds(t Type) (lo, hi int, ok bool) {
	switch t {
	case TypeKeepAlive, TypeComplete:
		return 0, 0, true
	case TypeHave:
		return haveBody, haveBody, true
	case TypeRequest, TypeCancel:
		return blockBody, blockBody, true
	case TypePiece:
		return pieceHeaderBody + 1, pieceHeaderBody + MaxBlockLength, true
	case TypeBitfield:
		return bitfieldMinBody, bitfieldMinBody + maxBitfieldBytes, true
	case TypeError:
		return errorMinBody, errorMinBody + MaxErrorMessageLength, true
	}
	return 0, 0, false
}

// readSmall reads a fixed body of at most blockBody bytes into the header array.
func (d *Decoder) readSmall(t Type, n int) ([]byte, error) {
	b := d.hdr[frameHeaderSize : frameHeaderSize+n]
	if _, err := io.ReadFull(d.r, b); err != nil {
		return nil, fmt.Errorf("read message: %s: %w", t, noEOF(err))
	}
	return b, nil
}

// readBody reads a body of n bytes, already checked against its type's bounds, into d.buf.
func (d *Decoder) readBody(t Type, n int) ([]byte, error) {
	if cap(d.buf) < n {
		d.buf = make([]byte, n)
	}
	b := d.buf[:n]
	if _, err := io.ReadFull(d.r, b); err != nil {
		return nil, fmt.Errorf("read message: %s: %w", t, noEOF(err))
	}
	return b, nil
}

// ErrPayloadLength is returned by ReadPayload when the destination's length is not the number
// of payload bytes still unread.
var ErrPayloadLength = errors.New("wire: wrong payload length")

// ReadPayload reads the payload of the piece message whose PieceHeader ReadMessageHeader just
// returned, all PieceHeader.Length bytes of it, into dst, which must be exactly that long. It
// reads straight from the underlying reader into dst.
//
// Errors: ErrPayloadLength (wrapped) when len(dst) is not the unread payload length, including
// when no payload is pending; a wrapped io.ErrUnexpectedEOF when the stream ends inside the
// payload; or the reader's error, wrapped.
func (d *Decoder) ReadPayload(dst []byte) error {
	if len(dst) != d.pending || d.pending == 0 {
		return fmt.Errorf("read piece payload: %w: %d bytes into a buffer of %d", ErrPayloadLength, d.pending, len(dst))
	}
	n, err := io.ReadFull(d.r, dst)
	d.pending -= n
	if err != nil {
		return fmt.Errorf("read piece payload: %w", noEOF(err))
	}
	return nil
}

// ReadPayloadPart reads the next bytes of the pending piece payload into dst: min(len(dst),
// the unread payload) bytes, all of them, and returns how many. It lets a caller stream a large
// payload through a small buffer (hashing and writing it as it goes) instead of holding it
// whole.
//
// Errors: ErrPayloadLength (wrapped) when no payload is pending or dst is empty; a wrapped
// io.ErrUnexpectedEOF when the stream ends inside the payload; or the reader's error, wrapped.
func (d *Decoder) ReadPayloadPart(dst []byte) (int, error) {
	if d.pending == 0 || len(dst) == 0 {
		return 0, fmt.Errorf("read piece payload: %w: %d bytes pending, buffer of %d", ErrPayloadLength, d.pending, len(dst))
	}
	dst = dst[:min(len(dst), d.pending)]
	n, err := io.ReadFull(d.r, dst)
	d.pending -= n
	if err != nil {
		return n, fmt.Errorf("read piece payload: %w", noEOF(err))
	}
	return n, nil
}

// PayloadPending returns the unread bytes of the piece payload ReadMessageHeader returned last.
func (d *Decoder) PayloadPending() int { return d.pending }
