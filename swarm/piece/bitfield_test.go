package piece_test

import (
	"errors"
	"math/bits"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/piece"
)

func TestBitfieldSetHasClearCount(t *testing.T) {
	t.Parallel()
	b := piece.NewBitfield(13)
	require.Equal(t, 13, b.Len())
	require.Equal(t, 0, b.Count())
	require.False(t, b.Complete())
	for _, i := range []int{0, 7, 8, 12} {
		b.Set(i)
		b.Set(i) // idempotent
	}
	require.Equal(t, 4, b.Count())
	for i := range 13 {
		require.Equal(t, slices.Contains([]int{0, 7, 8, 12}, i), b.Has(i), "bit %d", i)
	}
	b.Clear(7)
	b.Clear(7)
	require.False(t, b.Has(7))
	require.Equal(t, 3, b.Count())
	require.Equal(t, "1000000010001", b.String())

	full := piece.NewFullBitfield(13)
	require.True(t, full.Complete())
	require.Equal(t, 13, full.Count())
	require.True(t, piece.NewBitfield(0).Complete())
	require.True(t, piece.NewFullBitfield(0).Complete())
}

func TestBitfieldPanicsOutOfRange(t *testing.T) {
	t.Parallel()
	b := piece.NewBitfield(9)
	require.Panics(t, func() { b.Set(9) })
	require.Panics(t, func() { b.Has(-1) })
	require.Panics(t, func() { b.Clear(100) })
	require.Panics(t, func() { piece.NewBitfield(-1) })
	require.Panics(t, func() { b.And(piece.NewBitfield(8)) })
	require.Panics(t, func() { b.AndNot(piece.NewBitfield(10)) })
}

func TestBitfieldMarshalMSBFirst(t *testing.T) {
	t.Parallel()
	b := piece.NewBitfield(10)
	b.Set(0)
	b.Set(9)
	data, err := b.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, []byte{0x80, 0x40}, data)

	full, err := piece.NewFullBitfield(10).MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, []byte{0xff, 0xc0}, full, "spare bits of a full bitfield are zero")

	got, err := piece.ParseBitfield(10, data)
	require.NoError(t, err)
	require.True(t, got.Equal(b))

	// the marshalled bytes are a copy
	data[0] = 0
	require.True(t, b.Has(0))
}

func TestBitfieldUnmarshalRejects(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		n    int
		data []byte
	}{
		"short":          {10, []byte{0xff}},
		"long":           {10, []byte{0xff, 0xc0, 0}},
		"spare bit":      {10, []byte{0x00, 0x20}},
		"last spare bit": {9, []byte{0x00, 0x01}},
		"empty nonzero":  {0, []byte{0}},
		"nil for bits":   {1, nil},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := piece.NewBitfield(tc.n)
			if tc.n > 0 {
				b.Set(0)
			}
			before := b.Clone()
			err := b.UnmarshalBinary(tc.data)
			require.ErrorIs(t, err, piece.ErrBadBitfield)
			require.True(t, b.Equal(before), "a rejected decode leaves the bitfield unchanged")
			_, err = piece.ParseBitfield(tc.n, tc.data)
			require.ErrorIs(t, err, piece.ErrBadBitfield)
		})
	}
	// exact multiples of 8 have no spare bits
	b, err := piece.ParseBitfield(16, []byte{0xff, 0xff})
	require.NoError(t, err)
	require.True(t, b.Complete())
	b, err = piece.ParseBitfield(0, nil)
	require.NoError(t, err)
	require.Equal(t, 0, b.Len())
}

func TestBitfieldAndAndNot(t *testing.T) {
	t.Parallel()
	theirs, mine := piece.NewBitfield(20), piece.NewBitfield(20)
	for _, i := range []int{1, 2, 3, 10, 19} {
		theirs.Set(i)
	}
	for _, i := range []int{2, 10, 11} {
		mine.Set(i)
	}
	require.Equal(t, []int{1, 3, 19}, slices.Collect(theirs.AndNot(mine).All()))
	require.Equal(t, []int{2, 10}, slices.Collect(theirs.And(mine).All()))
	// operands are not modified
	require.Equal(t, []int{1, 2, 3, 10, 19}, slices.Collect(theirs.All()))
	require.Equal(t, []int{2, 10, 11}, slices.Collect(mine.All()))
}

func TestBitfieldIteration(t *testing.T) {
	t.Parallel()
	b := piece.NewBitfield(70)
	want := []int{0, 5, 8, 15, 16, 63, 64, 69}
	for _, i := range want {
		b.Set(i)
	}
	require.Equal(t, want, slices.Collect(b.All()))
	require.Equal(t, 5, b.NextSet(1))
	require.Equal(t, 63, b.NextSet(17))
	require.Equal(t, 69, b.NextSet(69))
	require.Equal(t, -1, b.NextSet(70))
	require.Equal(t, 0, b.NextSet(-3))
	var first []int
	for i := range b.All() {
		first = append(first, i)
		if len(first) == 3 {
			break
		}
	}
	require.Equal(t, want[:3], first)
	require.Empty(t, slices.Collect(piece.NewBitfield(70).All()))
	require.Empty(t, slices.Collect(piece.NewBitfield(0).All()))
}

// FuzzBitfieldUnmarshal checks that decoding untrusted bytes never panics, accepts exactly the
// encodings of the right length with zero spare bits, and round-trips what it accepts.
func FuzzBitfieldUnmarshal(f *testing.F) {
	f.Add(uint16(10), []byte{0x80, 0x40})
	f.Add(uint16(10), []byte{0x80, 0x41})
	f.Add(uint16(16), []byte{0xff, 0xff})
	f.Add(uint16(0), []byte{})
	f.Add(uint16(3), []byte{0xe0, 0})
	f.Fuzz(func(t *testing.T, n uint16, data []byte) {
		nbits := int(n % 4096)
		b := piece.NewBitfield(nbits)
		if nbits > 0 {
			b.Set(nbits - 1)
		}
		before := b.Clone()
		err := b.UnmarshalBinary(data)
		validLen := len(data) == (nbits+7)/8
		validSpare := !validLen || nbits%8 == 0 || data[len(data)-1]&(0xff>>(nbits%8)) == 0
		if err != nil {
			if !errors.Is(err, piece.ErrBadBitfield) {
				t.Fatalf("error %v does not wrap ErrBadBitfield", err)
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
