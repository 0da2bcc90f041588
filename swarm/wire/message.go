package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"unicode/utf8"
)

// checkBlock checks a (piece, offset, length) triple against the limits of the format.
func checkBlock(piece, offset, length uint32) error {
	if piece >= MaxPieces {
		return fmt.Errorf("%w: piece %d beyond %d", ErrMalformed, piece, MaxPieces-1)
	}
	if length < 1 || length > MaxBlockLength {
		return fmt.Errorf("%w: block length %d outside [1, %d]", ErrMalformed, length, MaxBlockLength)
	}
	if uint64(offset)+uint64(length) > MaxPieceLength {
		return fmt.Errorf("%w: block [%d, %d) beyond the largest piece (%d bytes)", ErrMalformed, offset, uint64(offset)+uint64(length), MaxPieceLength)
	}
	return nil
}

func checkError(m Error) error {
	if len(m.Message) > MaxErrorMessageLength {
		return fmt.Errorf("%w: error message of %d bytes, more than %d", ErrMalformed, len(m.Message), MaxErrorMessageLength)
	}
	if !utf8.ValidString(m.Message) {
		return fmt.Errorf("%w: error message is not UTF-8", ErrMalformed)
	}
	return nil
}

// appendHeader appends a frame header for a body of n bytes.
func appendHeader(b []byte, t Type, n int) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(1+n))
	return append(b, byte(t))
}

func appendBlock(b []byte, t Type, piece, offset, length uint32) []byte {
	b = appendHeader(b, t, blockBody)
	b = binary.BigEndian.AppendUint32(b, piece)
	b = binary.BigEndian.AppendUint32(b, offset)
	return binary.BigEndian.AppendUint32(b, length)
}

func appendPieceHeader(b []byte, piece, offset, length uint32) []byte {
	b = appendHeader(b, TypePiece, pieceHeaderBody+int(length))
	b = binary.BigEndian.AppendUint32(b, piece)
	return binary.BigEndian.AppendUint32(b, offset)
}

// AppendMessage appends the frame of m to b. For a PieceHeader it appends only the header; the
// caller sends the Length payload bytes after it. It returns b unchanged and an error wrapping
// ErrMalformed when m breaks a rule of the format (see docs/protocol.md), and ErrUnknownType
// for a nil message.
func AppendMessage(b []byte, m Message) ([]byte, error) {
	switch m := m.(type) {
	case KeepAlive:
		return appendHeader(b, TypeKeepAlive, 0), nil
	case Complete:
		return appendHeader(b, TypeComplete, 0), nil
	case Have:
		if m.Piece >= MaxPieces {
			return b, fmt.Errorf("encode have: %w: piece %d beyond %d", ErrMalformed, m.Piece, MaxPieces-1)
		}
		b = appendHeader(b, TypeHave, haveBody)
		return binary.BigEndian.AppendUint32(b, m.Piece), nil
	case BitfieldMsg:
		if m.Bitfield == nil {
			return b, fmt.Errorf("encode bitfield: %w: nil bitfield", ErrMalformed)
		}
		bits := m.Bitfield.bits
		if err := checkBitfield(m.Bitfield.Len(), bits); err != nil {
			return b, fmt.Errorf("encode bitfield: %w", err)
		}
		b = appendHeader(b, TypeBitfield, bitfieldMinBody+len(bits))
		b = binary.BigEndian.AppendUint32(b, uint32(m.Bitfield.Len()))
		return append(b, bits...), nil
	case Request:
		if err := checkBlock(m.Piece, m.Offset, m.Length); err != nil {
			return b, fmt.Errorf("encode request: %w", err)
		}
		return appendBlock(b, TypeRequest, m.Piece, m.Offset, m.Length), nil
	case Cancel:
		if err := checkBlock(m.Piece, m.Offset, m.Length); err != nil {
			return b, fmt.Errorf("encode cancel: %w", err)
		}
		return appendBlock(b, TypeCancel, m.Piece, m.Offset, m.Length), nil
	case Piece:
		if len(m.Data) > MaxBlockLength {
			return b, fmt.Errorf("encode piece: %w: block of %d bytes, more than %d", ErrMalformed, len(m.Data), MaxBlockLength)
		}
		if err := checkBlock(m.Piece, m.Offset, uint32(len(m.Data))); err != nil {
			return b, fmt.Errorf("encode piece: %w", err)
		}
		b = appendPieceHeader(b, m.Piece, m.Offset, uint32(len(m.Data)))
		return append(b, m.Data...), nil
	case PieceHeader:
		if err := checkBlock(m.Piece, m.Offset, m.Length); err != nil {
			return b, fmt.Errorf("encode piece header: %w", err)
		}
		return appendPieceHeader(b, m.Piece, m.Offset, m.Length), nil
	case Error:
		if err := checkError(m); err != nil {
			return b, fmt.Errorf("encode error: %w", err)
		}
		b = appendHeader(b, TypeError, errorMinBody+len(m.Message))
		b = binary.BigEndian.AppendUint16(b, uint16(m.Code))
		return append(b, m.Message...), nil
	}
	return b, fmt.Errorf("encode message: %w: %T", ErrUnknownType, m)
}

// WriteMessage writes the frame of m to w. A Piece is written as its header and its Data
// without copying Data (one writev on a *net.TCPConn); any other message in one Write call.
// Errors are those of AppendMessage or w; after a write error the stream is unusable.
func WriteMessage(w io.Writer, m Message) error {
	if p, ok := m.(Piece); ok {
		if len(p.Data) > MaxBlockLength {
			return fmt.Errorf("write piece: %w: block of %d bytes, more than %d", ErrMalformed, len(p.Data), MaxBlockLength)
		}
		var arr [frameHeaderSize + pieceHeaderBody]byte
		hdr, err := AppendMessage(arr[:0], PieceHeader{Piece: p.Piece, Offset: p.Offset, Length: uint32(len(p.Data))})
		if err != nil {
			return fmt.Errorf("write piece: %w", err)
		}
		bufs := net.Buffers{hdr, p.Data}
		if _, err := bufs.WriteTo(w); err != nil {
			return fmt.Errorf("write piece: %w", err)
		}
		return nil
	}
	var arr [64]byte
	b, err := AppendMessage(arr[:0], m)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", m.Type(), err)
	}
	return nil
}

// WritePieceHeader writes the header of a piece message carrying length bytes of piece at
// offset. The caller must then write exactly length payload bytes to w, for example with
// io.CopyN(w, file, int64(length)) from a section of the blob's file, which a *net.TCPConn
// turns into sendfile. If w buffers (bufio.Writer), flush it before copying from the file so
// that the kernel path is taken. Errors wrap ErrMalformed for a block beyond the limits, or w's
// error.
func WritePieceHeader(w io.Writer, piece, offset, length uint32) error {
	var arr [frameHeaderSize + pieceHeaderBody]byte
	hdr, err := AppendMessage(arr[:0], PieceHeader{Piece: piece, Offset: offset, Length: length})
	if err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("write piece header: %w", err)
	}
	return nil
}
