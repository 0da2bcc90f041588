// Package wire is the codec of the krakenctl peer-to-peer protocol: the handshake two peers
// exchange when a connection opens, and the length-prefixed messages they send after it
// (keepalive, have, bitfield, request, piece, cancel, complete, error). The byte layout, the
// limits and the versioning rule are written up in docs/protocol.md; this package is the
// reference for it.
//
// The codec checks every length and index it reads against the limits of the format before it
// allocates anything, so a peer cannot make the reader hold more than MaxFrameLength bytes per
// message (MaxHandshakeLength for the handshake). It does not know the blob's metainfo: callers
// check that a piece index is below the blob's piece count and that offset+length falls inside
// that piece.
//
// Writing: AppendMessage and WriteMessage encode any message; WritePieceHeader writes only the
// header of a piece message so that the payload can follow straight from a file (io.CopyN from
// an *os.File to a *net.TCPConn uses sendfile). Reading: a Decoder reads messages with a
// reusable buffer, and can stop after a piece header so that the payload lands directly in the
// caller's buffer.
//
// All functions are safe for concurrent use; a Decoder is not. Encoding functions validate their
// input and return an error wrapping ErrMalformed rather than write something a peer would
// reject.
package wire

import (
	"errors"
	"fmt"
)

// Limits of the format. A peer must accept anything within them and rejects anything beyond.
const (
	// Version is the protocol version this package speaks; see docs/protocol.md for the rule.
	Version uint16 = 1
	// PeerIDLength is the size of a peer id: 20 random bytes.
	PeerIDLength = 20
	// MaxPieces is the largest number of pieces of a blob. It equals metainfo.MaxPieces (this
	// package imports nothing internal) and bounds a bitfield to 128 KiB.
	MaxPieces = 1 << 20
	// MaxPieceLength is the largest piece length. It equals metainfo.MaxPieceLength.
	MaxPieceLength = 64 << 20
	// MaxBlockLength is the largest block a request may ask for and a piece message may carry.
	// Pieces longer than this are transferred in several blocks.
	MaxBlockLength = 4 << 20
	// MaxErrorMessageLength is the longest message, in bytes, an error message may carry.
	MaxErrorMessageLength = 1024
	// MaxFrameLength is the largest value of a frame's length field (type byte plus body): a
	// piece message carrying MaxBlockLength bytes.
	MaxFrameLength = 1 + pieceHeaderBody + MaxBlockLength
	// MaxHandshakeLength is the largest handshake: the fixed part plus a bitfield of MaxPieces.
	MaxHandshakeLength = handshakeFixedLength + MaxPieces/8
)

const (
	frameLengthSize  = 4  // uint32 length of type byte + body
	frameHeaderSize  = 5  // length + type byte
	pieceHeaderBody  = 8  // piece uint32 + offset uint32
	blockBody        = 12 // piece, offset, length, all uint32
	bitfieldMinBody  = 4  // piece count uint32
	errorMinBody     = 2  // code uint16
	haveBody         = 4  // piece uint32
	maxBitfieldBytes = MaxPieces / 8
)

// Sentinel errors, wrapped with %w; test them with errors.Is. A reader that returns any of them
// has lost its place in the stream: the connection must be closed.
var (
	// ErrBadMagic means the peer does not speak this protocol at all.
	ErrBadMagic = errors.New("wire: bad magic")
	// ErrVersion means the peer speaks another version of the protocol.
	ErrVersion = errors.New("wire: unsupported version")
	// ErrFrameTooLarge means a frame's length field exceeds MaxFrameLength.
	ErrFrameTooLarge = errors.New("wire: frame too large")
	// ErrUnknownType means a frame's type byte names no message of this version.
	ErrUnknownType = errors.New("wire: unknown message type")
	// ErrMalformed means a handshake or message breaks a rule of the format: a wrong body
	// length for its type, an index or length beyond the limits, non-zero spare bits in a
	// bitfield, an error message that is not UTF-8, a digest that is not SHA-256.
	ErrMalformed = errors.New("wire: malformed")
	// ErrBadBitfield means a bitfield's wire form has the wrong length for its piece count, or
	// spare bits set, or a piece count beyond MaxPieces. It wraps ErrMalformed.
	ErrBadBitfield = fmt.Errorf("%w: bad bitfield", ErrMalformed)
)

// Type is the type byte of a message.
type Type uint8

// Message types. The numbers are part of the format.
const (
	TypeKeepAlive Type = 0
	TypeHave      Type = 1
	TypeBitfield  Type = 2
	TypeRequest   Type = 3
	TypePiece     Type = 4
	TypeCancel    Type = 5
	TypeComplete  Type = 6
	TypeError     Type = 7
)

// String returns the message type's name, or "type(N)" for an unknown one.
func (t Type) String() string {
	switch t {
	case TypeKeepAlive:
		return "keepalive"
	case TypeHave:
		return "have"
	case TypeBitfield:
		return "bitfield"
	case TypeRequest:
		return "request"
	case TypePiece:
		return "piece"
	case TypeCancel:
		return "cancel"
	case TypeComplete:
		return "complete"
	case TypeError:
		return "error"
	}
	return "type(" + itoa(int(t)) + ")"
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// Message is one of KeepAlive, Have, BitfieldMsg, Request, Piece, PieceHeader, Cancel,
// Complete and Error. The set is closed.
type Message interface {
	// Type returns the message's type byte.
	Type() Type
	isMessage()
}

// KeepAlive says nothing; a peer sends it so that an idle connection is not mistaken for a dead
// one.
type KeepAlive struct{}

// Have announces that the sender now has Piece, verified.
type Have struct {
	Piece uint32
}

// BitfieldMsg replaces the receiver's view of every piece the sender has.
type BitfieldMsg struct {
	// Bitfield must not be nil; its Len is the blob's piece count.
	Bitfield *Bitfield
}

// Request asks for Length bytes of Piece starting at Offset within the piece.
type Request struct {
	Piece, Offset, Length uint32
}

// Piece carries the bytes of Piece starting at Offset within the piece.
//
// A Piece returned by Decoder.ReadMessage aliases the decoder's buffer: Data is valid only until
// the next call on that decoder.
type Piece struct {
	Piece, Offset uint32
	Data          []byte
}

// PieceHeader is the header of a piece message whose Length payload bytes follow on the wire.
// Decoder.ReadMessageHeader returns it instead of Piece; AppendMessage and WriteMessage encode
// only the header (the caller writes the payload), exactly like WritePieceHeader.
type PieceHeader struct {
	Piece, Offset, Length uint32
}

// Cancel withdraws an earlier Request with the same fields.
type Cancel struct {
	Piece, Offset, Length uint32
}

// Complete says the sender has every piece of the blob.
type Complete struct{}

// ErrorCode says why a peer sent an Error. Readers accept codes they do not know.
type ErrorCode uint16

// Error codes. The numbers are part of the format.
const (
	// CodeInternal: the sender failed for a reason of its own (a disk error, say).
	CodeInternal ErrorCode = 1
	// CodeBadRequest: a request names a piece, offset or length outside the blob.
	CodeBadRequest ErrorCode = 2
	// CodePieceUnavailable: the sender does not have the requested piece (any more).
	CodePieceUnavailable ErrorCode = 3
	// CodeWrongBlob: the handshake names a blob the sender does not serve, or a layout
	// (length, piece length) that disagrees with its metainfo.
	CodeWrongBlob ErrorCode = 4
	// CodeBusy: the sender has no room for another connection for this blob.
	CodeBusy ErrorCode = 5
	// CodeShuttingDown: the sender is stopping.
	CodeShuttingDown ErrorCode = 6
)

// Error reports a failure to the peer. Message is human-readable UTF-8 of at most
// MaxErrorMessageLength bytes.
type Error struct {
	Code    ErrorCode
	Message string
}

// Type implements Message.
func (KeepAlive) Type() Type { return TypeKeepAlive }

// Type implements Message.
func (Have) Type() Type { return TypeHave }

// Type implements Message.
func (BitfieldMsg) Type() Type { return TypeBitfield }

// Type implements Message.
func (Request) Type() Type { return TypeRequest }

// Type implements Message.
func (Piece) Type() Type { return TypePiece }

// Type implements Message.
func (PieceHeader) Type() Type { return TypePiece }

// Type implements Message.
func (Cancel) Type() Type { return TypeCancel }

// Type implements Message.
func (Complete) Type() Type { return TypeComplete }

// Type implements Message.
func (Error) Type() Type { return TypeError }

func (KeepAlive) isMessage()   {}
func (Have) isMessage()        {}
func (BitfieldMsg) isMessage() {}
func (Request) isMessage()     {}
func (Piece) isMessage()       {}
func (PieceHeader) isMessage() {}
func (Cancel) isMessage()      {}
func (Complete) isMessage()    {}
func (Error) isMessage()       {}

// Interface guards
var (
	_ Message = KeepAlive{}
	_ Message = Have{}
	_ Message = BitfieldMsg{}
	_ Message = Request{}
	_ Message = Piece{}
	_ Message = PieceHeader{}
	_ Message = Cancel{}
	_ Message = Complete{}
	_ Message = Error{}
)
