package wire_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/wire"
)

var testDigest = digest.FromString("krakenctl wire test blob")

func testPeerID() wire.PeerID {
	var id wire.PeerID
	for i := range id {
		id[i] = byte(0xa0 + i)
	}
	return id
}

// bitfieldOf returns a bitfield of n pieces with the given pieces set.
func bitfieldOf(n int, set ...int) *wire.Bitfield {
	f := wire.NewBitfield(n)
	for _, i := range set {
		f.Set(i)
	}
	return f
}

type namedMessage struct {
	name string
	msg  wire.Message
}

// sampleMessages covers every message type, at ordinary values and at the limits.
func sampleMessages() []namedMessage {
	block := make([]byte, 300)
	for i := range block {
		block[i] = byte(i * 7)
	}
	return []namedMessage{
		{"keepalive", wire.KeepAlive{}},
		{"have", wire.Have{Piece: 5}},
		{"have_max", wire.Have{Piece: wire.MaxPieces - 1}},
		{"bitfield_empty", wire.BitfieldMsg{Bitfield: wire.NewBitfield(0)}},
		{"bitfield_11", wire.BitfieldMsg{Bitfield: bitfieldOf(11, 0, 3, 8, 10)}},
		{"request", wire.Request{Piece: 3, Offset: 1 << 20, Length: 1 << 20}},
		{"request_max", wire.Request{Piece: wire.MaxPieces - 1, Offset: wire.MaxPieceLength - wire.MaxBlockLength, Length: wire.MaxBlockLength}},
		{"piece", wire.Piece{Piece: 2, Offset: 4096, Data: block}},
		{"piece_one_byte", wire.Piece{Piece: 0, Offset: wire.MaxPieceLength - 1, Data: []byte{0x42}}},
		{"cancel", wire.Cancel{Piece: 3, Offset: 1 << 20, Length: 1 << 20}},
		{"complete", wire.Complete{}},
		{"error", wire.Error{Code: wire.CodePieceUnavailable, Message: "piece 3: not here any more"}},
		{"error_empty", wire.Error{Code: 999}},
		{"error_utf8", wire.Error{Code: wire.CodeBadRequest, Message: "piece 7 ≥ 5 pièces"}},
	}
}

func sampleHandshakes() []struct {
	name string
	h    wire.Handshake
} {
	return []struct {
		name string
		h    wire.Handshake
	}{
		{"handshake_empty_blob", wire.Handshake{Digest: digest.FromBytes(nil), PeerID: testPeerID(), Length: 0, PieceLength: 4096, Bitfield: wire.NewBitfield(0)}},
		{"handshake_partial", wire.Handshake{Digest: testDigest, PeerID: testPeerID(), Length: 9*4096 + 1, PieceLength: 4096, Bitfield: bitfieldOf(10, 0, 1, 9)}},
		{"handshake_seeder", wire.Handshake{Digest: testDigest, PeerID: testPeerID(), Length: 8 << 20, PieceLength: 1 << 20, Bitfield: bitfieldOf(8, 0, 1, 2, 3, 4, 5, 6, 7)}},
	}
}

func encode(t *testing.T, m wire.Message) []byte {
	t.Helper()
	b, err := wire.AppendMessage(nil, m)
	require.NoError(t, err)
	return b
}

func TestMessageRoundTrip(t *testing.T) {
	t.Parallel()
	var stream bytes.Buffer
	for _, tc := range sampleMessages() {
		b := encode(t, tc.msg)
		require.Equal(t, tc.msg.Type(), wire.Type(b[4]), tc.name)
		require.LessOrEqual(t, len(b)-4, wire.MaxFrameLength, tc.name)

		var w bytes.Buffer
		require.NoError(t, wire.WriteMessage(&w, tc.msg), tc.name)
		require.Equal(t, b, w.Bytes(), "%s: WriteMessage and AppendMessage differ", tc.name)

		r := bytes.NewReader(b)
		got, err := wire.NewDecoder(r).ReadMessage()
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.msg, got, tc.name)
		require.Zero(t, r.Len(), "%s: decoder left bytes unread", tc.name)
		stream.Write(b)
	}

	// Back to back on one decoder, then a clean end.
	d := wire.NewDecoder(&stream)
	for _, tc := range sampleMessages() {
		got, err := d.ReadMessage()
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.msg, got, tc.name)
	}
	_, err := d.ReadMessage()
	require.Equal(t, io.EOF, err, "a clean end between messages is io.EOF itself")
}

func TestBitfieldMessageDoesNotAliasDecoderBuffer(t *testing.T) {
	t.Parallel()
	var stream bytes.Buffer
	stream.Write(encode(t, wire.BitfieldMsg{Bitfield: bitfieldOf(16, 0, 15)}))
	stream.Write(encode(t, wire.BitfieldMsg{Bitfield: bitfieldOf(16, 1, 2)}))
	d := wire.NewDecoder(&stream)
	first, err := d.ReadMessage()
	require.NoError(t, err)
	_, err = d.ReadMessage()
	require.NoError(t, err)
	bf := first.(wire.BitfieldMsg).Bitfield
	require.True(t, bf.Has(0) && bf.Has(15) && !bf.Has(1), "first bitfield changed by the second read")
	require.Equal(t, 2, bf.Count())
}

func TestPieceHeaderThenPayloadIntoCallerBuffer(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	var stream bytes.Buffer
	require.NoError(t, wire.WriteMessage(&stream, wire.Piece{Piece: 9, Offset: 64, Data: data}))
	require.NoError(t, wire.WriteMessage(&stream, wire.Have{Piece: 1}))
	require.NoError(t, wire.WriteMessage(&stream, wire.Piece{Piece: 10, Offset: 0, Data: data[:10]}))
	require.NoError(t, wire.WriteMessage(&stream, wire.Complete{}))

	d := wire.NewDecoder(&stream)
	m, err := d.ReadMessageHeader()
	require.NoError(t, err)
	require.Equal(t, wire.PieceHeader{Piece: 9, Offset: 64, Length: uint32(len(data))}, m)

	require.ErrorIs(t, d.ReadPayload(make([]byte, len(data)-1)), wire.ErrPayloadLength)
	dst := make([]byte, len(data))
	require.NoError(t, d.ReadPayload(dst))
	require.Equal(t, data, dst)
	require.ErrorIs(t, d.ReadPayload(nil), wire.ErrPayloadLength, "no payload is pending")

	m, err = d.ReadMessageHeader()
	require.NoError(t, err)
	require.Equal(t, wire.Have{Piece: 1}, m)

	// A payload the caller skips is discarded before the next message.
	m, err = d.ReadMessageHeader()
	require.NoError(t, err)
	require.Equal(t, wire.PieceHeader{Piece: 10, Offset: 0, Length: 10}, m)
	m, err = d.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, wire.Complete{}, m)
}

func TestPieceHeaderThenPayloadFromFile(t *testing.T) {
	t.Parallel()
	content := bytes.Repeat([]byte("krakenctl"), 5000)
	path := filepath.Join(t.TempDir(), "blob")
	require.NoError(t, os.WriteFile(path, content, 0o600))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer func() { _ = f.Close() }() // read-only

	const off, n = 1000, 20000
	var stream bytes.Buffer
	require.NoError(t, wire.WritePieceHeader(&stream, 1, off, n))
	_, err = io.CopyN(&stream, io.NewSectionReader(f, off, n), n)
	require.NoError(t, err)

	// The header alone equals the prefix AppendMessage gives for the same Piece.
	whole := encode(t, wire.Piece{Piece: 1, Offset: off, Data: content[off : off+n]})
	require.Equal(t, whole, stream.Bytes())

	m, err := wire.NewDecoder(&stream).ReadMessage()
	require.NoError(t, err)
	require.Equal(t, wire.Piece{Piece: 1, Offset: off, Data: content[off : off+n]}, m)

	require.ErrorIs(t, wire.WritePieceHeader(io.Discard, 1, 0, wire.MaxBlockLength+1), wire.ErrMalformed)
	require.ErrorIs(t, wire.WritePieceHeader(io.Discard, 1, 0, 0), wire.ErrMalformed)
	require.ErrorIs(t, wire.WritePieceHeader(io.Discard, wire.MaxPieces, 0, 1), wire.ErrMalformed)
}

func TestTruncatedMessage(t *testing.T) {
	t.Parallel()
	for _, tc := range sampleMessages() {
		b := encode(t, tc.msg)
		for cut := 0; cut < len(b); cut++ {
			_, err := wire.NewDecoder(bytes.NewReader(b[:cut])).ReadMessage()
			if cut == 0 {
				require.Equal(t, io.EOF, err, tc.name)
				continue
			}
			require.ErrorIs(t, err, io.ErrUnexpectedEOF, "%s cut at %d", tc.name, cut)
			require.NotEqual(t, io.ErrUnexpectedEOF, err, "%s cut at %d: error not wrapped", tc.name, cut)
		}
	}
}

// frame builds a frame by hand: length field, type, body.
func frame(t wire.Type, body ...byte) []byte {
	n := uint32(1 + len(body))
	return append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), byte(t)}, body...)
}

func u32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestReadMessageRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"length_zero", []byte{0, 0, 0, 0}, wire.ErrMalformed},
		{"unknown_type", frame(8), wire.ErrUnknownType},
		{"unknown_type_255", frame(255, 1, 2, 3), wire.ErrUnknownType},
		{"keepalive_with_body", frame(wire.TypeKeepAlive, 0), wire.ErrMalformed},
		{"complete_with_body", frame(wire.TypeComplete, 0), wire.ErrMalformed},
		{"have_short", frame(wire.TypeHave, 0, 0, 1), wire.ErrMalformed},
		{"have_long", frame(wire.TypeHave, 0, 0, 0, 1, 0), wire.ErrMalformed},
		{"have_piece_out_of_range", frame(wire.TypeHave, u32(wire.MaxPieces)...), wire.ErrMalformed},
		{"request_short", frame(wire.TypeRequest, cat(u32(1), u32(0))...), wire.ErrMalformed},
		{"request_zero_length", frame(wire.TypeRequest, cat(u32(1), u32(0), u32(0))...), wire.ErrMalformed},
		{"request_block_too_long", frame(wire.TypeRequest, cat(u32(1), u32(0), u32(wire.MaxBlockLength+1))...), wire.ErrMalformed},
		{"request_beyond_piece", frame(wire.TypeRequest, cat(u32(1), u32(wire.MaxPieceLength-1), u32(2))...), wire.ErrMalformed},
		{"request_offset_overflow", frame(wire.TypeRequest, cat(u32(1), u32(0xffffffff), u32(wire.MaxBlockLength))...), wire.ErrMalformed},
		{"request_piece_out_of_range", frame(wire.TypeRequest, cat(u32(wire.MaxPieces), u32(0), u32(1))...), wire.ErrMalformed},
		{"cancel_zero_length", frame(wire.TypeCancel, cat(u32(1), u32(0), u32(0))...), wire.ErrMalformed},
		{"piece_no_data", frame(wire.TypePiece, cat(u32(1), u32(0))...), wire.ErrMalformed},
		{"piece_beyond_piece", frame(wire.TypePiece, cat(u32(1), u32(wire.MaxPieceLength), []byte{1})...), wire.ErrMalformed},
		{"piece_out_of_range", frame(wire.TypePiece, cat(u32(wire.MaxPieces), u32(0), []byte{1})...), wire.ErrMalformed},
		{"bitfield_no_count", frame(wire.TypeBitfield, 0, 0), wire.ErrMalformed},
		{"bitfield_count_too_large", frame(wire.TypeBitfield, u32(wire.MaxPieces+1)...), wire.ErrMalformed},
		{"bitfield_wrong_byte_count", frame(wire.TypeBitfield, cat(u32(9), []byte{0xff})...), wire.ErrMalformed},
		{"bitfield_spare_bits", frame(wire.TypeBitfield, cat(u32(9), []byte{0xff, 0x40})...), wire.ErrMalformed},
		{"error_short", frame(wire.TypeError, 1), wire.ErrMalformed},
		{"error_not_utf8", frame(wire.TypeError, 0, 1, 0xff, 0xfe), wire.ErrMalformed},
		{"error_too_long", frame(wire.TypeError, cat([]byte{0, 1}, bytes.Repeat([]byte{'a'}, wire.MaxErrorMessageLength+1))...), wire.ErrMalformed},
		{"frame_too_large", u32(wire.MaxFrameLength + 1), wire.ErrFrameTooLarge},
		{"frame_huge", u32(0xffffffff), wire.ErrFrameTooLarge},
	}
	for _, tc := range tests {
		_, err := wire.NewDecoder(bytes.NewReader(tc.in)).ReadMessage()
		require.ErrorIs(t, err, tc.want, tc.name)
		_, err = wire.NewDecoder(bytes.NewReader(tc.in)).ReadMessageHeader()
		require.ErrorIs(t, err, tc.want, "%s via ReadMessageHeader", tc.name)
	}
}

func TestAppendMessageRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  wire.Message
		want error
	}{
		{"nil", nil, wire.ErrUnknownType},
		{"bitfield_nil", wire.BitfieldMsg{}, wire.ErrMalformed},
		{"have_out_of_range", wire.Have{Piece: wire.MaxPieces}, wire.ErrMalformed},
		{"request_zero", wire.Request{Piece: 1}, wire.ErrMalformed},
		{"request_too_long", wire.Request{Length: wire.MaxBlockLength + 1}, wire.ErrMalformed},
		{"request_beyond_piece", wire.Request{Offset: wire.MaxPieceLength, Length: 1}, wire.ErrMalformed},
		{"cancel_out_of_range", wire.Cancel{Piece: wire.MaxPieces, Length: 1}, wire.ErrMalformed},
		{"piece_empty", wire.Piece{Piece: 1}, wire.ErrMalformed},
		{"piece_too_long", wire.Piece{Data: make([]byte, wire.MaxBlockLength+1)}, wire.ErrMalformed},
		{"piece_header_zero", wire.PieceHeader{Piece: 1}, wire.ErrMalformed},
		{"error_not_utf8", wire.Error{Message: "\xff"}, wire.ErrMalformed},
		{"error_too_long", wire.Error{Message: strings.Repeat("a", wire.MaxErrorMessageLength+1)}, wire.ErrMalformed},
	}
	for _, tc := range tests {
		b, err := wire.AppendMessage([]byte("x"), tc.msg)
		require.ErrorIs(t, err, tc.want, tc.name)
		require.Equal(t, []byte("x"), b, "%s: the buffer changed on error", tc.name)
		var w bytes.Buffer
		require.ErrorIs(t, wire.WriteMessage(&w, tc.msg), tc.want, tc.name)
		require.Zero(t, w.Len(), "%s: WriteMessage wrote a rejected message", tc.name)
	}
}

type failWriter struct{}

var errWrite = errors.New("disk on fire")

func (failWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestWriteErrorsAreWrapped(t *testing.T) {
	t.Parallel()
	for _, tc := range sampleMessages() {
		require.ErrorIs(t, wire.WriteMessage(failWriter{}, tc.msg), errWrite, tc.name)
	}
	require.ErrorIs(t, wire.WritePieceHeader(failWriter{}, 0, 0, 1), errWrite)
	require.ErrorIs(t, wire.WriteHandshake(failWriter{}, sampleHandshakes()[0].h), errWrite)
}

// allocSlack is what the runtime and the race detector may allocate around a measured call; far
// below the sizes the allocation tests guard against (a 4 GiB frame, a second 4 MiB buffer).
const allocSlack = 64 << 10

// TestOversizeFrameNotAllocated checks that a frame claiming more than MaxFrameLength is refused
// after reading only its length field and before allocating anything for it.
func TestOversizeFrameNotAllocated(t *testing.T) { // Not parallel: it measures allocations.
	in := append(u32(0xfffffff0), make([]byte, 64)...)
	r := bytes.NewReader(in)
	d := wire.NewDecoder(r)
	allocated := bytesAllocated(func() {
		_, err := d.ReadMessage()
		require.ErrorIs(t, err, wire.ErrFrameTooLarge)
	})
	require.Equal(t, len(in)-4, r.Len(), "the decoder read past the length field")
	// The frame claims 4 GiB; the slack covers the race detector's and the runtime's own
	// allocations during the call, not any buffer for the frame.
	require.Less(t, allocated, uint64(allocSlack), "the decoder allocated for a frame it rejects")
}

// TestReadMessageAllocationBounded checks that the buffer never exceeds MaxFrameLength, even for
// a frame claiming the maximum whose body never arrives, and that it is reused.
func TestReadMessageAllocationBounded(t *testing.T) { // Not parallel: it measures allocations.
	max := encode(t, wire.Piece{Piece: 1, Data: make([]byte, wire.MaxBlockLength)})
	allocated := bytesAllocated(func() {
		_, err := wire.NewDecoder(bytes.NewReader(max[:20])).ReadMessage()
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	})
	require.LessOrEqual(t, allocated, uint64(wire.MaxFrameLength+allocSlack))

	stream := bytes.Repeat(max, 10)
	d := wire.NewDecoder(bytes.NewReader(stream))
	allocated = bytesAllocated(func() {
		for range 10 {
			m, err := d.ReadMessage()
			require.NoError(t, err)
			require.Len(t, m.(wire.Piece).Data, wire.MaxBlockLength)
		}
	})
	require.LessOrEqual(t, allocated, uint64(wire.MaxFrameLength+allocSlack), "the decoder did not reuse its buffer")
}

func bytesAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A payload can be streamed through a buffer smaller than itself, and the next message follows.
func TestReadPayloadPart(t *testing.T) {
	var b bytes.Buffer
	data := bytes.Repeat([]byte("0123456789"), 100)
	require.NoError(t, wire.WriteMessage(&b, wire.Piece{Piece: 1, Offset: 0, Data: data}))
	require.NoError(t, wire.WriteMessage(&b, wire.Have{Piece: 7}))
	d := wire.NewDecoder(&b)
	m, err := d.ReadMessageHeader()
	require.NoError(t, err)
	require.Equal(t, wire.PieceHeader{Piece: 1, Offset: 0, Length: uint32(len(data))}, m)
	var got []byte
	buf := make([]byte, 64)
	for d.PayloadPending() > 0 {
		n, err := d.ReadPayloadPart(buf)
		require.NoError(t, err)
		require.LessOrEqual(t, n, len(buf))
		got = append(got, buf[:n]...)
	}
	require.Equal(t, data, got)
	_, err = d.ReadPayloadPart(buf)
	require.ErrorIs(t, err, wire.ErrPayloadLength, "nothing is pending any more")
	m, err = d.ReadMessageHeader()
	require.NoError(t, err)
	require.Equal(t, wire.Have{Piece: 7}, m)

	// A stream cut inside the payload is an unexpected EOF.
	b.Reset()
	require.NoError(t, wire.WriteMessage(&b, wire.Piece{Piece: 1, Data: data}))
	d = wire.NewDecoder(bytes.NewReader(b.Bytes()[:b.Len()-10]))
	_, err = d.ReadMessageHeader()
	require.NoError(t, err)
	for {
		if _, err = d.ReadPayloadPart(buf); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}
