package wire_test

import (
	"bytes"
	"errors"
	"math/bits"
	"slices"
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

// FuzzParseBitfield checks that decoding an untrusted bitfield (ParseBitfield, and
// UnmarshalBinary into a bitfield of known length) never panics, accepts exactly the encodings
// of the right length with zero spare bits, agrees between the two entry points, and
// round-trips what it accepts.
func FuzzParseBitfield(f *testing.F) {
	f.Add(uint16(10), []byte{0x80, 0x40})
	f.Add(uint16(10), []byte{0x80, 0x41})
	f.Add(uint16(16), []byte{0xff, 0xff})
	f.Add(uint16(0), []byte{})
	f.Add(uint16(3), []byte{0xe0, 0})
	f.Fuzz(func(t *testing.T, n uint16, data []byte) {
		nbits := int(n % 4096)
		b := wire.NewBitfield(nbits)
		if nbits > 0 {
			b.Set(nbits - 1)
		}
		before := b.Clone()
		err := b.UnmarshalBinary(data)
		parsed, perr := wire.ParseBitfield(nbits, data)
		if (err == nil) != (perr == nil) {
			t.Fatalf("UnmarshalBinary says %v, ParseBitfield says %v", err, perr)
		}
		validLen := len(data) == (nbits+7)/8
		validSpare := !validLen || nbits%8 == 0 || data[len(data)-1]&(0xff>>(nbits%8)) == 0
		if err != nil {
			for _, e := range []error{err, perr} {
				if !errors.Is(e, wire.ErrBadBitfield) || !errors.Is(e, wire.ErrMalformed) {
					t.Fatalf("error %v does not wrap ErrBadBitfield and ErrMalformed", e)
				}
			}
			if validLen && validSpare {
				t.Fatalf("rejected a valid encoding of %d bits: %x", nbits, data)
			}
			if !b.Equal(before) {
				t.Fatal("a rejected decode changed the bitfield")
			}
			return
		}
		if !validLen || !validSpare {
			t.Fatalf("accepted an invalid encoding of %d bits: %x", nbits, data)
		}
		if !parsed.Equal(b) {
			t.Fatalf("ParseBitfield %s, UnmarshalBinary %s", parsed, b)
		}
		if got, want := notIn(b, before), slices.Collect(b.AndNot(before).All()); !slices.Equal(got, want) {
			t.Fatalf("NextNotIn %v, AndNot %v", got, want)
		}
		out, _ := b.MarshalBinary()
		if string(out) != string(data) {
			t.Fatalf("round trip: got %x, want %x", out, data)
		}
		ones := 0
		for _, x := range data {
			ones += bits.OnesCount8(x)
		}
		if b.Count() != ones || len(slices.Collect(b.All())) != ones {
			t.Fatalf("count %d, want %d", b.Count(), ones)
		}
		for i := range b.All() {
			if data[i/8]&(0x80>>(i%8)) == 0 {
				t.Fatalf("bit %d iterated but not set in %x", i, data)
			}
		}
	})
}
