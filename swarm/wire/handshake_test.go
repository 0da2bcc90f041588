package wire_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/wire"
)

func TestHandshakeRoundTrip(t *testing.T) {
	t.Parallel()
	largest := wire.Handshake{Digest: testDigest, PeerID: wire.RandomPeerID(), Length: wire.MaxPieces * wire.MaxPieceLength, PieceLength: wire.MaxPieceLength, Bitfield: bitfieldOf(wire.MaxPieces, 0, wire.MaxPieces-1)}
	cases := append(sampleHandshakes(), struct {
		name string
		h    wire.Handshake
	}{"largest", largest})
	for _, tc := range cases {
		var w bytes.Buffer
		require.NoError(t, wire.WriteHandshake(&w, tc.h), tc.name)
		b, err := wire.AppendHandshake(nil, tc.h)
		require.NoError(t, err, tc.name)
		require.Equal(t, b, w.Bytes(), tc.name)
		require.LessOrEqual(t, len(b), wire.MaxHandshakeLength, tc.name)

		w.WriteString("next") // ReadHandshake must not read past the handshake.
		got, err := wire.ReadHandshake(&w)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.h.Digest, got.Digest, tc.name)
		require.Equal(t, tc.h.PeerID, got.PeerID, tc.name)
		require.Equal(t, tc.h.Length, got.Length, tc.name)
		require.Equal(t, tc.h.PieceLength, got.PieceLength, tc.name)
		require.True(t, tc.h.Bitfield.Equal(got.Bitfield), tc.name)
		require.Equal(t, tc.h.NumPieces(), got.NumPieces(), tc.name)
		require.Equal(t, "next", w.String(), tc.name)
	}
}

func TestRandomPeerID(t *testing.T) {
	t.Parallel()
	a, b := wire.RandomPeerID(), wire.RandomPeerID()
	require.NotEqual(t, a, b)
	require.Len(t, a.String(), 2*wire.PeerIDLength)
}

func TestHandshakeTruncated(t *testing.T) {
	t.Parallel()
	for _, tc := range sampleHandshakes() {
		b, err := wire.AppendHandshake(nil, tc.h)
		require.NoError(t, err)
		for cut := 0; cut < len(b); cut++ {
			_, err := wire.ReadHandshake(bytes.NewReader(b[:cut]))
			if cut == 0 {
				require.Equal(t, io.EOF, err, tc.name)
				continue
			}
			require.ErrorIs(t, err, io.ErrUnexpectedEOF, "%s cut at %d", tc.name, cut)
			require.NotEqual(t, io.ErrUnexpectedEOF, err, "%s cut at %d: error not wrapped", tc.name, cut)
		}
	}
}

func TestReadHandshakeRejects(t *testing.T) {
	t.Parallel()
	good, err := wire.AppendHandshake(nil, sampleHandshakes()[1].h) // 10 pieces, 2 bitfield bytes.
	require.NoError(t, err)
	const (
		offVersion     = 4
		offLength      = 4 + 2 + 32 + wire.PeerIDLength
		offPieceLength = offLength + 8
		offBits        = offPieceLength + 4
	)
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"bad_magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), wire.ErrBadMagic},
		{"bittorrent", []byte("\x13BitTorrent protocol"), wire.ErrBadMagic},
		{"version_0", mutate(func(b []byte) []byte { b[offVersion+1] = 0; return b }), wire.ErrVersion},
		{"version_2", mutate(func(b []byte) []byte { b[offVersion+1] = 2; return b }), wire.ErrVersion},
		{"piece_length_zero", mutate(func(b []byte) []byte { copy(b[offPieceLength:], u32(0)); return b }), wire.ErrMalformed},
		{"piece_length_too_large", mutate(func(b []byte) []byte { copy(b[offPieceLength:], u32(wire.MaxPieceLength+1)); return b }), wire.ErrMalformed},
		{"too_many_pieces", mutate(func(b []byte) []byte {
			copy(b[offLength:], []byte{0, 0, 0, 0, 0x40, 0, 0, 1}) // 2^30+1 bytes
			copy(b[offPieceLength:], u32(1024))                    // = 2^20+1 pieces
			return b
		}), wire.ErrMalformed},
		{"length_negative", mutate(func(b []byte) []byte { b[offLength] = 0x80; return b }), wire.ErrMalformed},
		{"spare_bits", mutate(func(b []byte) []byte { b[offBits+1] |= 0x01; return b }), wire.ErrMalformed},
	}
	for _, tc := range tests {
		_, err := wire.ReadHandshake(bytes.NewReader(tc.in))
		require.ErrorIs(t, err, tc.want, tc.name)
	}
}

func TestAppendHandshakeRejects(t *testing.T) {
	t.Parallel()
	ok := sampleHandshakes()[1].h
	with := func(f func(h *wire.Handshake)) wire.Handshake { h := ok; f(&h); return h }
	tests := []struct {
		name string
		h    wire.Handshake
	}{
		{"no_digest", with(func(h *wire.Handshake) { h.Digest = "" })},
		{"sha512", with(func(h *wire.Handshake) { h.Digest = digest.SHA512.FromString("x") })},
		{"bad_hex", with(func(h *wire.Handshake) { h.Digest = "sha256:zz" })},
		{"piece_length_zero", with(func(h *wire.Handshake) { h.PieceLength = 0 })},
		{"piece_length_too_large", with(func(h *wire.Handshake) { h.PieceLength = wire.MaxPieceLength + 1 })},
		{"negative_length", with(func(h *wire.Handshake) { h.Length = -1 })},
		{"too_many_pieces", with(func(h *wire.Handshake) { h.PieceLength = 1; h.Length = wire.MaxPieces + 1 })},
		{"bitfield_mismatch", with(func(h *wire.Handshake) { h.Bitfield = wire.NewBitfield(9) })},
		{"bitfield_nil", with(func(h *wire.Handshake) { h.Bitfield = nil })},
	}
	for _, tc := range tests {
		b, err := wire.AppendHandshake([]byte("x"), tc.h)
		require.ErrorIs(t, err, wire.ErrMalformed, tc.name)
		require.Equal(t, []byte("x"), b, tc.name)
	}
}

func TestTypeString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "piece", wire.TypePiece.String())
	require.Equal(t, "type(200)", wire.Type(200).String())
}
