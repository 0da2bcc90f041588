package wire_test

import (
	"bytes"
	"testing"

	"github.com/krakenctl/krakenctl/swarm/wire"
)

// FuzzReadMessage checks that the decoder never panics on untrusted input and that every
// message it accepts re-encodes to exactly the bytes it consumed (the encoding is canonical).
// Both read paths (ReadMessage, and ReadMessageHeader + ReadPayload) must agree.
func FuzzReadMessage(f *testing.F) {
	var all []byte
	for _, tc := range sampleMessages() {
		b, err := wire.AppendMessage(nil, tc.msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		all = append(all, b...)
	}
	f.Add(all)
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 1, 9})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		d := wire.NewDecoder(r)
		var accepted []wire.Message
		for {
			start := len(in) - r.Len()
			m, err := d.ReadMessage()
			if err != nil {
				break
			}
			consumed := in[start : len(in)-r.Len()]
			enc, err := wire.AppendMessage(nil, m)
			if err != nil {
				t.Fatalf("re-encode accepted %T: %v", m, err)
			}
			if !bytes.Equal(enc, consumed) {
				t.Fatalf("re-encoding of %T differs:\n read %x\nwrote %x", m, consumed, enc)
			}
			if p, ok := m.(wire.Piece); ok { // Data is only valid until the next read.
				m = wire.Piece{Piece: p.Piece, Offset: p.Offset, Data: bytes.Clone(p.Data)}
			}
			accepted = append(accepted, m)
		}

		d = wire.NewDecoder(bytes.NewReader(in))
		for i := 0; ; i++ {
			m, err := d.ReadMessageHeader()
			if err != nil {
				if i != len(accepted) {
					t.Fatalf("header path stopped after %d messages, ReadMessage after %d: %v", i, len(accepted), err)
				}
				return
			}
			if ph, ok := m.(wire.PieceHeader); ok {
				buf := make([]byte, ph.Length)
				if err := d.ReadPayload(buf); err != nil {
					if i != len(accepted) {
						t.Fatalf("payload %d failed on the header path only: %v", i, err)
					}
					return
				}
				m = wire.Piece{Piece: ph.Piece, Offset: ph.Offset, Data: buf}
			}
			if i >= len(accepted) {
				t.Fatalf("header path accepted message %d that ReadMessage rejected: %T", i, m)
			}
			a, b := mustEncode(t, accepted[i]), mustEncode(t, m)
			if !bytes.Equal(a, b) {
				t.Fatalf("message %d differs between read paths: %x vs %x", i, a, b)
			}
		}
	})
}

func mustEncode(t *testing.T, m wire.Message) []byte {
	t.Helper()
	b, err := wire.AppendMessage(nil, m)
	if err != nil {
		t.Fatalf("encode %T: %v", m, err)
	}
	return b
}

// FuzzHandshake checks that ReadHandshake never panics and that every handshake it accepts
// re-encodes to exactly the bytes it consumed.
func FuzzHandshake(f *testing.F) {
	for _, tc := range sampleHandshakes() {
		b, err := wire.AppendHandshake(nil, tc.h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(wire.Magic))
	f.Add([]byte("KCTL\x00\x01"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := wire.ReadHandshake(r)
		if err != nil {
			return
		}
		consumed := in[:len(in)-r.Len()]
		enc, err := wire.AppendHandshake(nil, h)
		if err != nil {
			t.Fatalf("re-encode accepted handshake: %v", err)
		}
		if !bytes.Equal(enc, consumed) {
			t.Fatalf("re-encoding differs:\n read %x\nwrote %x", consumed, enc)
		}
		if h.Bitfield.Len() != h.NumPieces() {
			t.Fatalf("bitfield of %d pieces for %d pieces", h.Bitfield.Len(), h.NumPieces())
		}
	})
}
