package wire

import (
	"fmt"
	"math/bits"
)

// Bitfield records which pieces of a blob a peer has. Bit i is piece i; on the wire piece 0 is
// the most significant bit of the first byte, and the spare bits of the last byte are zero.
//
// The zero Bitfield has no pieces. A Bitfield is a small value around a slice: copies share
// their bits, so use Clone before handing one to another goroutine. It is not safe for
// concurrent use when one goroutine calls Set.
type Bitfield struct {
	n int
	b []byte
}

// NewBitfield returns an empty bitfield for n pieces. It panics unless 0 <= n <= MaxPieces.
func NewBitfield(n int) Bitfield {
	if n < 0 || n > MaxPieces {
		panic(fmt.Sprintf("wire: bitfield of %d pieces outside [0, %d]", n, MaxPieces))
	}
	return Bitfield{n: n, b: make([]byte, (n+7)/8)}
}

// BitfieldFromBytes returns a bitfield for n pieces holding a copy of b, which must be exactly
// ceil(n/8) bytes with zero spare bits. Errors wrap ErrMalformed.
func BitfieldFromBytes(n int, b []byte) (Bitfield, error) {
	if err := checkBitfield(n, b); err != nil {
		return Bitfield{}, err
	}
	f := Bitfield{n: n, b: make([]byte, len(b))}
	copy(f.b, b)
	return f, nil
}

// checkBitfield checks that b is the canonical wire form of a bitfield of n pieces.
func checkBitfield(n int, b []byte) error {
	if n < 0 || n > MaxPieces {
		return fmt.Errorf("%w: bitfield of %d pieces outside [0, %d]", ErrMalformed, n, MaxPieces)
	}
	if len(b) != (n+7)/8 {
		return fmt.Errorf("%w: bitfield of %d pieces needs %d bytes, got %d", ErrMalformed, n, (n+7)/8, len(b))
	}
	if spare := n % 8; spare != 0 && b[len(b)-1]&(0xff>>spare) != 0 {
		return fmt.Errorf("%w: bitfield of %d pieces has spare bits set", ErrMalformed, n)
	}
	return nil
}

// Len returns the number of pieces the bitfield covers.
func (f Bitfield) Len() int { return f.n }

// Has reports whether piece i is set; false when i is out of range.
func (f Bitfield) Has(i int) bool {
	if i < 0 || i >= f.n {
		return false
	}
	return f.b[i/8]&(0x80>>(i%8)) != 0
}

// Set marks piece i. It panics unless 0 <= i < Len(), like an out-of-range slice index.
func (f Bitfield) Set(i int) {
	if i < 0 || i >= f.n {
		panic(fmt.Sprintf("wire: piece %d out of bitfield range [0, %d)", i, f.n))
	}
	f.b[i/8] |= 0x80 >> (i % 8)
}

// Count returns the number of pieces set.
func (f Bitfield) Count() int {
	c := 0
	for _, x := range f.b {
		c += bits.OnesCount8(x)
	}
	return c
}

// Full reports whether every piece is set.
func (f Bitfield) Full() bool { return f.Count() == f.n }

// Bytes returns the wire form of the bitfield. The slice is shared; do not modify it.
func (f Bitfield) Bytes() []byte {
	if f.b == nil {
		return []byte{}
	}
	return f.b
}

// Clone returns a copy that shares nothing with f.
func (f Bitfield) Clone() Bitfield {
	c := Bitfield{n: f.n, b: make([]byte, len(f.b))}
	copy(c.b, f.b)
	return c
}

// Equal reports whether f and o cover the same number of pieces and set the same ones.
func (f Bitfield) Equal(o Bitfield) bool {
	if f.n != o.n {
		return false
	}
	for i := range f.b {
		if f.b[i] != o.b[i] {
			return false
		}
	}
	return true
}
