// Package piece holds the data structures a swarm scheduler uses to decide which pieces of a blob
// to request from which peer: Bitfield, a fixed-size set of piece indices with the wire encoding
// of the bitfield message, and Picker, which tracks what this node has, what it has asked for
// and from whom, and how many connected peers hold each piece, and chooses the next requests.
//
// The picker exists to avoid the failure modes measured on Uber's Kraken (issue 3, DESIGN §5):
// rarest-first with a deterministic tie-break makes every node ask the origin for the same few
// pieces (herding), and random choice without regard to the origin makes the origin send the
// same piece several times where peers could have served it. Picker chooses rarest first among
// the pieces a peer offers, breaks ties with a caller-supplied *rand.Rand (so tests are
// reproducible), asks origins preferably or only for pieces no other connected peer has,
// withdraws origin requests once a peer can serve the piece, and duplicates requests only in
// endgame, within a bound.
//
// Nothing here starts goroutines, does I/O or reads the clock on its own (the Picker's clock is
// a Config field); nothing is safe for concurrent use.
package piece

import (
	"errors"
	"fmt"
	"iter"
	"math/bits"
	"strings"
)

// Sentinel errors. Errors returned by this package wrap one of them.
var (
	// ErrBadBitfield reports an encoded bitfield of the wrong length or with spare bits set.
	ErrBadBitfield = errors.New("bad bitfield")
	// ErrOutOfRange reports a piece index outside [0, pieces).
	ErrOutOfRange = errors.New("piece index out of range")
	// ErrUnknownPeer reports a peer that was never added or has gone.
	ErrUnknownPeer = errors.New("unknown peer")
	// ErrPeerExists reports AddPeer for a peer that is already connected.
	ErrPeerExists = errors.New("peer already added")
	// ErrAlreadyHave reports Received for a piece this node already has.
	ErrAlreadyHave = errors.New("piece already held")
	// ErrInvalidConfig reports a Config that New cannot use.
	ErrInvalidConfig = errors.New("invalid picker config")
)

// Bitfield is a set of piece indices in [0, Len()). The zero value is an empty bitfield of
// length 0. Index arguments outside [0, Len()) make Set, Clear and Has panic, like a slice
// index: callers validate indices from the network first (see Picker, which returns
// ErrOutOfRange). A Bitfield is not safe for concurrent use.
type Bitfield struct {
	n    int
	bits []byte // MSB-first: index i is bit 7-(i%8) of bits[i/8]; spare bits are always zero
}

// NewBitfield returns an empty bitfield of n bits. It panics if n is negative.
func NewBitfield(n int) *Bitfield {
	if n < 0 {
		panic(fmt.Sprintf("piece: negative bitfield length %d", n))
	}
	return &Bitfield{n: n, bits: make([]byte, (n+7)/8)}
}

// NewFullBitfield returns a bitfield of n bits, all set (what a seeder advertises).
func NewFullBitfield(n int) *Bitfield {
	b := NewBitfield(n)
	for i := range b.bits {
		b.bits[i] = 0xff
	}
	b.clearSpare()
	return b
}

// ParseBitfield decodes data, the encoding of an n-bit bitfield, as UnmarshalBinary does.
func ParseBitfield(n int, data []byte) (*Bitfield, error) {
	b := NewBitfield(n)
	if err := b.UnmarshalBinary(data); err != nil {
		return nil, err
	}
	return b, nil
}

// Len returns the number of bits.
func (b *Bitfield) Len() int { return b.n }

func (b *Bitfield) check(i int) {
	if i < 0 || i >= b.n {
		panic(fmt.Sprintf("piece: bit index %d out of range [0, %d)", i, b.n))
	}
}

// Set sets bit i.
func (b *Bitfield) Set(i int) {
	b.check(i)
	b.bits[i>>3] |= 0x80 >> (i & 7)
}

// Clear clears bit i.
func (b *Bitfield) Clear(i int) {
	b.check(i)
	b.bits[i>>3] &^= 0x80 >> (i & 7)
}

// Has reports whether bit i is set.
func (b *Bitfield) Has(i int) bool {
	b.check(i)
	return b.bits[i>>3]&(0x80>>(i&7)) != 0
}

// Count returns the number of set bits.
func (b *Bitfield) Count() int {
	c := 0
	for _, x := range b.bits {
		c += bits.OnesCount8(x)
	}
	return c
}

// Complete reports whether every bit is set (true for a zero-length bitfield).
func (b *Bitfield) Complete() bool { return b.Count() == b.n }

// Clone returns an independent copy.
func (b *Bitfield) Clone() *Bitfield {
	return &Bitfield{n: b.n, bits: append([]byte(nil), b.bits...)}
}

// Equal reports whether b and o have the same length and the same bits set.
func (b *Bitfield) Equal(o *Bitfield) bool {
	return b.n == o.n && string(b.bits) == string(o.bits)
}

func (b *Bitfield) sameLen(o *Bitfield, op string) {
	if b.n != o.n {
		panic(fmt.Sprintf("piece: %s of bitfields of lengths %d and %d", op, b.n, o.n))
	}
}

// And returns a new bitfield of the bits set in both b and o. It panics if the lengths differ.
func (b *Bitfield) And(o *Bitfield) *Bitfield {
	b.sameLen(o, "And")
	r := b.Clone()
	for i := range r.bits {
		r.bits[i] &= o.bits[i]
	}
	return r
}

// AndNot returns a new bitfield of the bits set in b and not in o: theirs.AndNot(mine) is the
// pieces they have that I lack. It panics if the lengths differ.
func (b *Bitfield) AndNot(o *Bitfield) *Bitfield {
	b.sameLen(o, "AndNot")
	r := b.Clone()
	for i := range r.bits {
		r.bits[i] &^= o.bits[i]
	}
	return r
}

// NextSet returns the smallest set index >= i, or -1 if there is none.
func (b *Bitfield) NextSet(i int) int {
	if i < 0 {
		i = 0
	}
	if i >= b.n {
		return -1
	}
	w := i >> 3
	x := b.bits[w] & (0xff >> (i & 7))
	for {
		if x != 0 {
			return w<<3 + bits.LeadingZeros8(x)
		}
		w++
		if w >= len(b.bits) {
			return -1
		}
		x = b.bits[w]
	}
}

// All iterates the set indices in increasing order. Changing b during the iteration is allowed;
// the iteration then continues from the next index with b's current contents.
func (b *Bitfield) All() iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := b.NextSet(0); i >= 0; i = b.NextSet(i + 1) {
			if !yield(i) {
				return
			}
		}
	}
}

// MarshalBinary returns the wire encoding: ceil(Len/8) bytes, index 0 in the most significant
// bit of the first byte, spare bits of the last byte zero. It never fails.
func (b *Bitfield) MarshalBinary() ([]byte, error) {
	return append([]byte(nil), b.bits...), nil
}

// UnmarshalBinary replaces b's bits with data, keeping b's length: data must be exactly
// ceil(Len/8) bytes with the spare bits of the last byte zero, else it returns an error wrapping
// ErrBadBitfield and leaves b unchanged.
func (b *Bitfield) UnmarshalBinary(data []byte) error {
	if want := (b.n + 7) / 8; len(data) != want {
		return fmt.Errorf("decode bitfield: %d bytes for %d bits, want %d: %w", len(data), b.n, want, ErrBadBitfield)
	}
	if spare := b.n & 7; spare != 0 && data[len(data)-1]&(0xff>>spare) != 0 {
		return fmt.Errorf("decode bitfield: spare bits set after bit %d: %w", b.n, ErrBadBitfield)
	}
	copy(b.bits, data)
	return nil
}

func (b *Bitfield) clearSpare() {
	if spare := b.n & 7; spare != 0 {
		b.bits[len(b.bits)-1] &^= 0xff >> spare
	}
}

// String renders the bits as '1' and '0', index 0 first (for tests and debugging).
func (b *Bitfield) String() string {
	var s strings.Builder
	s.Grow(b.n)
	for i := range b.n {
		if b.Has(i) {
			s.WriteByte('1')
		} else {
			s.WriteByte('0')
		}
	}
	return s.String()
}
