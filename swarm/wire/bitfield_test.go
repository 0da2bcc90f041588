package wire_test

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/wire"
)

func TestBitfield(t *testing.T) {
	t.Parallel()
	f := wire.NewBitfield(10)
	require.Equal(t, 10, f.Len())
	require.Zero(t, f.Count())
	f.Set(0)
	f.Set(9)
	require.True(t, f.Has(0) && f.Has(9) && !f.Has(1))
	require.False(t, f.Has(-1) || f.Has(10))
	data, err := f.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, []byte{0x80, 0x40}, data, "piece 0 is the high bit of byte 0")
	require.Panics(t, func() { f.Set(10) })
	require.Panics(t, func() { wire.NewBitfield(wire.MaxPieces + 1) })
	require.Panics(t, func() { wire.NewFullBitfield(wire.MaxPieces + 1) })

	c := f.Clone()
	c.Set(1)
	require.False(t, f.Has(1), "Clone shares bits")
	require.False(t, f.Equal(c))
	require.False(t, f.Full())
	for i := range 10 {
		c.Set(i)
	}
	require.True(t, c.Full())

	g, err := wire.ParseBitfield(10, []byte{0x80, 0x40})
	require.NoError(t, err)
	require.True(t, g.Equal(f))
	_, err = wire.ParseBitfield(10, []byte{0x80, 0x60})
	require.ErrorIs(t, err, wire.ErrMalformed)
	_, err = wire.ParseBitfield(10, []byte{0x80})
	require.ErrorIs(t, err, wire.ErrMalformed)
	_, err = wire.ParseBitfield(-1, nil)
	require.ErrorIs(t, err, wire.ErrMalformed)
	_, err = wire.ParseBitfield(wire.MaxPieces+1, make([]byte, wire.MaxPieces/8+1))
	require.ErrorIs(t, err, wire.ErrBadBitfield)
	require.True(t, new(wire.Bitfield).Equal(wire.NewBitfield(0)))

	// ParseBitfield copies its input.
	in := []byte{0x80, 0x40}
	g, err = wire.ParseBitfield(10, in)
	require.NoError(t, err)
	in[0] = 0
	require.True(t, g.Has(0), "ParseBitfield kept a reference to its input")
}

func TestBitfieldSetHasClearCount(t *testing.T) {
	t.Parallel()
	b := wire.NewBitfield(13)
	require.Equal(t, 13, b.Len())
	require.Equal(t, 0, b.Count())
	require.False(t, b.Full())
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

	full := wire.NewFullBitfield(13)
	require.True(t, full.Full())
	require.Equal(t, 13, full.Count())
	require.True(t, wire.NewBitfield(0).Full())
	require.True(t, wire.NewFullBitfield(0).Full())
	require.True(t, new(wire.Bitfield).Full())
	require.Empty(t, new(wire.Bitfield).String())
}

func TestBitfieldPanicsOutOfRange(t *testing.T) {
	t.Parallel()
	b := wire.NewBitfield(9)
	require.Panics(t, func() { b.Set(9) })
	require.Panics(t, func() { b.Set(-1) })
	require.Panics(t, func() { b.Clear(100) })
	require.Panics(t, func() { b.Clear(-1) })
	require.Panics(t, func() { wire.NewBitfield(-1) })
	require.Panics(t, func() { b.And(wire.NewBitfield(8)) })
	require.Panics(t, func() { b.AndNot(wire.NewBitfield(10)) })
	// Has is a query: an index outside the range is simply not set.
	require.False(t, b.Has(-1))
	require.False(t, b.Has(9))
	require.Zero(t, b.Count(), "a panicking call changed the bitfield")
}

func TestBitfieldMarshalMSBFirst(t *testing.T) {
	t.Parallel()
	b := wire.NewBitfield(10)
	b.Set(0)
	b.Set(9)
	data, err := b.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, []byte{0x80, 0x40}, data)

	full, err := wire.NewFullBitfield(10).MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, []byte{0xff, 0xc0}, full, "spare bits of a full bitfield are zero")

	got, err := wire.ParseBitfield(10, data)
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
			b := wire.NewBitfield(tc.n)
			if tc.n > 0 {
				b.Set(0)
			}
			before := b.Clone()
			err := b.UnmarshalBinary(tc.data)
			require.ErrorIs(t, err, wire.ErrBadBitfield)
			require.ErrorIs(t, err, wire.ErrMalformed)
			require.True(t, b.Equal(before), "a rejected decode leaves the bitfield unchanged")
			_, err = wire.ParseBitfield(tc.n, tc.data)
			require.ErrorIs(t, err, wire.ErrBadBitfield)
		})
	}
	// exact multiples of 8 have no spare bits
	b, err := wire.ParseBitfield(16, []byte{0xff, 0xff})
	require.NoError(t, err)
	require.True(t, b.Full())
	b, err = wire.ParseBitfield(0, nil)
	require.NoError(t, err)
	require.Equal(t, 0, b.Len())

	// UnmarshalBinary keeps the length and replaces the bits.
	b = wire.NewFullBitfield(10)
	require.NoError(t, b.UnmarshalBinary([]byte{0x00, 0x40}))
	require.Equal(t, "0000000001", b.String())
}

func TestBitfieldAndAndNot(t *testing.T) {
	t.Parallel()
	theirs, mine := wire.NewBitfield(20), wire.NewBitfield(20)
	for _, i := range []int{1, 2, 3, 10, 19} {
		theirs.Set(i)
	}
	for _, i := range []int{2, 10, 11} {
		mine.Set(i)
	}
	require.Equal(t, []int{1, 3, 19}, slices.Collect(theirs.AndNot(mine).All()))
	require.Equal(t, []int{2, 10}, slices.Collect(theirs.And(mine).All()))
	require.Equal(t, []int{1, 3, 19}, notIn(theirs, mine))
	require.Equal(t, []int{11}, notIn(mine, theirs))
	require.Equal(t, 3, theirs.NextNotIn(mine, 2))
	require.Equal(t, 19, theirs.NextNotIn(mine, 4))
	require.Equal(t, 19, theirs.NextNotIn(mine, 19))
	require.Equal(t, -1, theirs.NextNotIn(mine, 20))
	require.Equal(t, 1, theirs.NextNotIn(mine, -5))
	require.Equal(t, -1, mine.NextNotIn(mine, 0))
	require.Panics(t, func() { theirs.NextNotIn(wire.NewBitfield(21), 0) })
	// operands are not modified
	require.Equal(t, []int{1, 2, 3, 10, 19}, slices.Collect(theirs.All()))
	require.Equal(t, []int{2, 10, 11}, slices.Collect(mine.All()))
}

// notIn collects the indices set in f and not in o with NextNotIn.
func notIn(f, o *wire.Bitfield) []int {
	var s []int
	for i := f.NextNotIn(o, 0); i >= 0; i = f.NextNotIn(o, i+1) {
		s = append(s, i)
	}
	return s
}

// TestBitfieldNextNotInDoesNotAllocate: the picker walks NextNotIn on every request.
func TestBitfieldNextNotInDoesNotAllocate(t *testing.T) { // Not parallel: it counts allocations.
	theirs, mine := wire.NewFullBitfield(100), wire.NewBitfield(100)
	mine.Set(50)
	n := 0
	allocs := testing.AllocsPerRun(10, func() {
		n = 0
		for i := theirs.NextNotIn(mine, 0); i >= 0; i = theirs.NextNotIn(mine, i+1) {
			n++
		}
	})
	require.Equal(t, 99, n)
	require.Zero(t, allocs)
}

func TestBitfieldIteration(t *testing.T) {
	t.Parallel()
	b := wire.NewBitfield(70)
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
	require.Empty(t, slices.Collect(wire.NewBitfield(70).All()))
	require.Empty(t, slices.Collect(wire.NewBitfield(0).All()))
}
