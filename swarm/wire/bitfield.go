package wire

import (
	"encoding"
	"fmt"
	"iter"
	"math/bits"
	"strings"
)

// Bitfield is the set of pieces of a blob a peer has: bit i is piece i, for i in [0, Len()).
// It is the one bitfield of krakenctl: the handshake and the bitfield message carry it, and the
// piece picker (swarm/piece) keeps one per peer.
//
// Wire form (MarshalBinary, the handshake, the bitfield message): ceil(Len/8) bytes, piece 0 in
// the most significant bit of the first byte, the spare bits of the last byte zero. A Bitfield
// always holds its bits in that form, so encoding never fails.
//
// The zero value is an empty bitfield of length 0. Set and Clear panic for an index outside
// [0, Len()), like a slice index: callers check indices that come from the network first. Has
// and NextSet accept any index (Has reports false outside the range). A Bitfield is not safe
// for concurrent use while one goroutine modifies it; Clone it to hand it over.
type Bitfield struct {
	n    int
	bits []byte // MSB-first: piece i is bit 7-(i%8) of bits[i/8]; spare bits are always zero
}

// NewBitfield returns an empty bitfield of n pieces. It panics unless 0 <= n <= MaxPieces.
func NewBitfield(n int) *Bitfield {
	if n < 0 || n > MaxPieces {
		panic(fmt.Sprintf("wire: bitfield of %d pieces outside [0, %d]", n, MaxPieces))
	}
	return &Bitfield{n: n, bits: make([]byte, (n+7)/8)}
}

// NewFullBitfield returns a bitfield of n pieces, all set (what a seeder advertises). It panics
// unless 0 <= n <= MaxPieces.
func NewFullBitfield(n int) *Bitfield {
	f := NewBitfield(n)
	for i := range f.bits {
		f.bits[i] = 0xff
	}
	f.clearSpare()
	return f
}

// ParseBitfield returns a bitfield of n pieces decoded from data, its wire form: n must be in
// [0, MaxPieces], data exactly ceil(n/8) bytes with zero spare bits. The bitfield holds a copy
// of data. Errors wrap ErrBadBitfield (and so ErrMalformed).
func ParseBitfield(n int, data []byte) (*Bitfield, error) {
	if err := checkBitfield(n, data); err != nil {
		return nil, fmt.Errorf("parse bitfield: %w", err)
	}
	return &Bitfield{n: n, bits: append(make([]byte, 0, len(data)), data...)}, nil
}

// checkBitfield checks that b is the wire form of a bitfield of n pieces. Errors wrap
// ErrBadBitfield.
func checkBitfield(n int, b []byte) error {
	if n < 0 || n > MaxPieces {
		return fmt.Errorf("%w: %d pieces outside [0, %d]", ErrBadBitfield, n, MaxPieces)
	}
	if want := (n + 7) / 8; len(b) != want {
		return fmt.Errorf("%w: %d bytes for %d pieces, want %d", ErrBadBitfield, len(b), n, want)
	}
	if spare := n % 8; spare != 0 && b[len(b)-1]&(0xff>>spare) != 0 {
		return fmt.Errorf("%w: spare bits set after piece %d", ErrBadBitfield, n-1)
	}
	return nil
}

// Len returns the number of pieces the bitfield covers.
func (f *Bitfield) Len() int { return f.n }

func (f *Bitfield) check(i int) {
	if i < 0 || i >= f.n {
		panic(fmt.Sprintf("wire: piece %d out of bitfield range [0, %d)", i, f.n))
	}
}

// Set marks piece i. It panics unless 0 <= i < Len().
func (f *Bitfield) Set(i int) {
	f.check(i)
	f.bits[i>>3] |= 0x80 >> (i & 7)
}

// Clear unmarks piece i. It panics unless 0 <= i < Len().
func (f *Bitfield) Clear(i int) {
	f.check(i)
	f.bits[i>>3] &^= 0x80 >> (i & 7)
}

// Has reports whether piece i is set; false when i is outside [0, Len()).
func (f *Bitfield) Has(i int) bool {
	if i < 0 || i >= f.n {
		return false
	}
	return f.bits[i>>3]&(0x80>>(i&7)) != 0
}

// Count returns the number of pieces set.
func (f *Bitfield) Count() int {
	c := 0
	for _, x := range f.bits {
		c += bits.OnesCount8(x)
	}
	return c
}

// Full reports whether every piece is set (true for a bitfield of length 0).
func (f *Bitfield) Full() bool { return f.Count() == f.n }

// Clone returns a copy that shares nothing with f.
func (f *Bitfield) Clone() *Bitfield {
	return &Bitfield{n: f.n, bits: append(make([]byte, 0, len(f.bits)), f.bits...)}
}

// Equal reports whether f and o cover the same number of pieces and set the same ones.
func (f *Bitfield) Equal(o *Bitfield) bool {
	return f.n == o.n && string(f.bits) == string(o.bits)
}

func (f *Bitfield) sameLen(o *Bitfield, op string) {
	if f.n != o.n {
		panic(fmt.Sprintf("wire: %s of bitfields of lengths %d and %d", op, f.n, o.n))
	}
}

// And returns a new bitfield of the pieces set in both f and o. It panics if the lengths differ.
func (f *Bitfield) And(o *Bitfield) *Bitfield {
	f.sameLen(o, "And")
	r := f.Clone()
	for i := range r.bits {
		r.bits[i] &= o.bits[i]
	}
	return r
}

// AndNot returns a new bitfield of the pieces set in f and not in o: theirs.AndNot(mine) is the
// pieces they have that I lack. It panics if the lengths differ.
func (f *Bitfield) AndNot(o *Bitfield) *Bitfield {
	f.sameLen(o, "AndNot")
	r := f.Clone()
	for i := range r.bits {
		r.bits[i] &^= o.bits[i]
	}
	return r
}

// NextSet returns the smallest set index >= i, or -1 if there is none.
func (f *Bitfield) NextSet(i int) int {
	if i < 0 {
		i = 0
	}
	if i >= f.n {
		return -1
	}
	w := i >> 3
	x := f.bits[w] & (0xff >> (i & 7))
	for {
		if x != 0 {
			return w<<3 + bits.LeadingZeros8(x)
		}
		w++
		if w >= len(f.bits) {
			return -1
		}
		x = f.bits[w]
	}
}

// All iterates the set indices in increasing order. Changing f during the iteration is allowed;
// the iteration then continues from the next index with f's current contents.
func (f *Bitfield) All() iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := f.NextSet(0); i >= 0; i = f.NextSet(i + 1) {
			if !yield(i) {
				return
			}
		}
	}
}

// NextNotIn returns the smallest index >= i set in f and not in o, or -1 if there is none. It
// walks the pieces they have that I lack without building a bitfield or allocating:
//
//	for i := theirs.NextNotIn(mine, 0); i >= 0; i = theirs.NextNotIn(mine, i+1) {
//
// It panics if the lengths differ.
func (f *Bitfield) NextNotIn(o *Bitfield, i int) int {
	f.sameLen(o, "NextNotIn")
	if i < 0 {
		i = 0
	}
	if i >= f.n {
		return -1
	}
	w := i >> 3
	x := (f.bits[w] &^ o.bits[w]) & (0xff >> (i & 7))
	for {
		if x != 0 {
			return w<<3 + bits.LeadingZeros8(x)
		}
		w++
		if w >= len(f.bits) {
			return -1
		}
		x = f.bits[w] &^ o.bits[w]
	}
}

// MarshalBinary returns a copy of the wire form. It never fails.
func (f *Bitfield) MarshalBinary() ([]byte, error) {
	return append([]byte(nil), f.bits...), nil
}

// UnmarshalBinary replaces f's bits with data, keeping f's length: data must be exactly
// ceil(Len/8) bytes with zero spare bits, else it returns an error wrapping ErrBadBitfield (and
// so ErrMalformed) and leaves f unchanged.
func (f *Bitfield) UnmarshalBinary(data []byte) error {
	if err := checkBitfield(f.n, data); err != nil {
		return fmt.Errorf("decode bitfield: %w", err)
	}
	copy(f.bits, data)
	return nil
}

// size returns the length of the wire form of f, 0 for nil.
func (f *Bitfield) size() int {
	if f == nil {
		return 0
	}
	return len(f.bits)
}

func (f *Bitfield) clearSpare() {
	if spare := f.n & 7; spare != 0 {
		f.bits[len(f.bits)-1] &^= 0xff >> spare
	}
}

// String renders the pieces as '1' (set) and '0', piece 0 first (for tests and debugging).
func (f *Bitfield) String() string {
	var s strings.Builder
	s.Grow(f.n)
	for i := range f.n {
		if f.Has(i) {
			s.WriteByte('1')
		} else {
			s.WriteByte('0')
		}
	}
	return s.String()
}

// Interface guards
var (
	_ encoding.BinaryMarshaler   = (*Bitfield)(nil)
	_ encoding.BinaryUnmarshaler = (*Bitfield)(nil)
	_ fmt.Stringer               = (*Bitfield)(nil)
)
