package metainfo_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/metainfo"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
	tib = int64(1) << 40
)

func TestPieceLengthFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		size int64
		want int64
	}{
		{-1, 64 * kib},
		{0, 64 * kib},
		{1, 64 * kib},
		{10 * mib, 64 * kib},
		{64 * mib, 64 * kib},
		{64*mib + 1, 128 * kib},
		{1 * gib, 1 * mib},
		{16 * gib, 16 * mib},
		{16*gib + 1, 16 * mib},
		{1 * tib, 16 * mib},
		{16 * tib, 16 * mib},
		{16*tib + 1, 32 * mib},
		{64 * tib, 64 * mib},
	} {
		require.Equal(t, tc.want, metainfo.PieceLengthFor(tc.size), "size %d", tc.size)
	}
}

func TestPieceLengthForProperties(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		size := rng.Int64N(64 * tib)
		pl := metainfo.PieceLengthFor(size)
		require.Zero(t, pl&(pl-1), "size %d: %d not a power of two", size, pl)
		require.GreaterOrEqual(t, pl, 64*kib)
		require.LessOrEqual(t, pl, metainfo.MaxPieceLength)
		n := (size + pl - 1) / pl
		require.LessOrEqual(t, n, int64(metainfo.MaxPieces), "size %d", size)
		if size > 64*mib && size <= 16*gib {
			require.Greater(t, n, int64(512), "size %d", size)
			require.LessOrEqual(t, n, int64(1024), "size %d", size)
		}
	}
}

// reference computes the MetaInfo of data the obvious way.
func reference(data []byte, pl int64) metainfo.MetaInfo {
	m := metainfo.MetaInfo{
		Digest:      digest.FromBytes(data),
		Length:      int64(len(data)),
		PieceLength: pl,
		PieceSums:   [][32]byte{},
	}
	for off := int64(0); off < int64(len(data)); off += pl {
		m.PieceSums = append(m.PieceSums, sha256.Sum256(data[off:min(off+pl, int64(len(data)))]))
	}
	return m
}

func randomBytes(seed uint64, n int64) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestGenerator(t *testing.T) {
	t.Parallel()
	pl := metainfo.MinPieceLength
	for _, size := range []int64{0, 1, pl - 1, pl, pl + 1, 3 * pl, 3*pl + 7} {
		data := randomBytes(uint64(size), size)
		want := reference(data, pl)
		for _, chunk := range []int{1, 1000, int(pl), int(pl) + 1, len(data) + 1} {
			t.Run(fmt.Sprintf("size=%d/chunk=%d", size, chunk), func(t *testing.T) {
				g, err := metainfo.NewGenerator(pl)
				require.NoError(t, err)
				for p := data; len(p) > 0; {
					k := min(chunk, len(p))
					n, err := g.Write(p[:k])
					require.NoError(t, err)
					require.Equal(t, k, n)
					p = p[k:]
				}
				require.Equal(t, size, g.Len())
				got, err := g.Finish()
				require.NoError(t, err)
				require.True(t, want.Equal(got), "got %+v\nwant %+v", got, want)
				require.NoError(t, got.Validate())
				require.Len(t, got.PieceSums, got.NumPieces())

				_, err = g.Write([]byte("x"))
				require.ErrorIs(t, err, metainfo.ErrFinished)
				_, err = g.Finish()
				require.ErrorIs(t, err, metainfo.ErrFinished)
			})
		}
	}
}

func TestNewGeneratorRejectsBadPieceLength(t *testing.T) {
	t.Parallel()
	for _, pl := range []int64{0, -1, 1, metainfo.MinPieceLength / 2, metainfo.MinPieceLength + 1,
		metainfo.MaxPieceLength * 2, 3 * metainfo.MinPieceLength} {
		_, err := metainfo.NewGenerator(pl)
		require.ErrorIs(t, err, metainfo.ErrInvalid, "piece length %d", pl)
	}
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	data := randomBytes(7, 300*kib+5)
	m, err := metainfo.Generate(t.Context(), iotest.HalfReader(bytes.NewReader(data)), int64(len(data)))
	require.NoError(t, err)
	want := reference(data, metainfo.PieceLengthFor(int64(len(data))))
	require.True(t, want.Equal(m))
	require.Equal(t, 64*kib, m.PieceLength)
	require.Equal(t, 5, m.NumPieces())

	empty, err := metainfo.Generate(t.Context(), strings.NewReader(""), 0)
	require.NoError(t, err)
	require.Equal(t, digest.FromBytes(nil), empty.Digest)
	require.Zero(t, empty.NumPieces())
	require.NotNil(t, empty.PieceSums)
}

func TestGenerateErrors(t *testing.T) {
	t.Parallel()
	data := randomBytes(8, 1000)

	_, err := metainfo.Generate(t.Context(), bytes.NewReader(data), 1001)
	require.ErrorIs(t, err, metainfo.ErrSizeMismatch)
	require.ErrorContains(t, err, "read 1000 bytes")

	_, err = metainfo.Generate(t.Context(), bytes.NewReader(data), 999)
	require.ErrorIs(t, err, metainfo.ErrSizeMismatch)
	require.ErrorContains(t, err, "more than 999")

	_, err = metainfo.Generate(t.Context(), bytes.NewReader(data), -1)
	require.ErrorIs(t, err, metainfo.ErrInvalid)

	_, err = metainfo.Generate(t.Context(), bytes.NewReader(data), 1<<62)
	require.ErrorIs(t, err, metainfo.ErrTooLarge)

	boom := errors.New("boom")
	_, err = metainfo.Generate(t.Context(), iotest.ErrReader(boom), 10)
	require.ErrorIs(t, err, boom)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = metainfo.Generate(ctx, bytes.NewReader(data), 1000)
	require.ErrorIs(t, err, context.Canceled)
}

func TestPieceRangeAndVerify(t *testing.T) {
	t.Parallel()
	pl := metainfo.MinPieceLength
	data := randomBytes(9, 2*pl+100)
	m := reference(data, pl)
	require.Equal(t, 3, m.NumPieces())
	var total int64
	for i := range m.NumPieces() {
		off, n := m.PieceRange(i)
		require.Equal(t, total, off)
		total += n
		piece := data[off : off+n]
		require.True(t, m.VerifyPiece(i, piece), "piece %d", i)

		corrupt := bytes.Clone(piece)
		corrupt[len(corrupt)/2] ^= 1
		require.False(t, m.VerifyPiece(i, corrupt), "corrupt piece %d", i)
		require.False(t, m.VerifyPiece(i, piece[:n-1]), "short piece %d", i)
	}
	require.Equal(t, m.Length, total)
	_, last := m.PieceRange(2)
	require.Equal(t, int64(100), last)

	require.False(t, m.VerifyPiece(-1, data[:pl]))
	require.False(t, m.VerifyPiece(3, data[:100]))
	require.False(t, m.VerifyPiece(1, data[:pl]), "piece 0's bytes are not piece 1")
	require.Panics(t, func() { m.PieceRange(3) })
	require.Panics(t, func() { m.PieceRange(-1) })
}

func TestEncodeGolden(t *testing.T) {
	t.Parallel()
	m := reference([]byte("hello"), metainfo.MinPieceLength)
	b, err := m.Encode()
	require.NoError(t, err)
	want := `{"digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",` +
		`"length":5,"piece_length":4096,` +
		`"piece_sums":["2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"]}`
	require.Equal(t, want, string(b))

	got, err := metainfo.Decode(b)
	require.NoError(t, err)
	require.True(t, m.Equal(got))

	empty := reference(nil, metainfo.MinPieceLength)
	b, err = empty.Encode()
	require.NoError(t, err)
	require.Contains(t, string(b), `"length":0,"piece_length":4096,"piece_sums":[]}`)
}

func TestJSONMarshalers(t *testing.T) {
	t.Parallel()
	type wrapper struct {
		MetaInfo metainfo.MetaInfo `json:"metainfo"`
	}
	w := wrapper{MetaInfo: reference(randomBytes(3, 10000), metainfo.MinPieceLength)}
	b, err := json.Marshal(w)
	require.NoError(t, err)
	var got wrapper
	require.NoError(t, json.Unmarshal(b, &got))
	require.True(t, w.MetaInfo.Equal(got.MetaInfo))

	err = json.Unmarshal([]byte(`{"metainfo":{"digest":"sha256:x"}}`), &got)
	require.ErrorIs(t, err, metainfo.ErrInvalid)
	require.True(t, w.MetaInfo.Equal(got.MetaInfo), "a failed decode leaves the value alone")

	_, err = json.Marshal(wrapper{})
	require.ErrorIs(t, err, metainfo.ErrInvalid, "an invalid MetaInfo is not encoded")
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	const (
		dgst = `"digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"`
		sum  = `"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"`
	)
	valid := `{` + dgst + `,"length":5,"piece_length":4096,"piece_sums":[` + sum + `]}`
	_, err := metainfo.Decode([]byte(valid))
	require.NoError(t, err, "the base case must be valid for the cases below to mean anything")

	for name, in := range map[string]string{
		"empty":              ``,
		"not an object":      `[]`,
		"truncated":          valid[:len(valid)-1],
		"trailing data":      valid + `{}`,
		"trailing garbage":   valid + `x`,
		"missing digest":     `{"length":5,"piece_length":4096,"piece_sums":[` + sum + `]}`,
		"missing length":     `{` + dgst + `,"piece_length":4096,"piece_sums":[` + sum + `]}`,
		"missing piece len":  `{` + dgst + `,"length":5,"piece_sums":[` + sum + `]}`,
		"missing sums":       `{` + dgst + `,"length":5,"piece_length":4096}`,
		"null sums":          `{` + dgst + `,"length":5,"piece_length":4096,"piece_sums":null}`,
		"null length":        `{` + dgst + `,"length":null,"piece_length":4096,"piece_sums":[` + sum + `]}`,
		"unknown key":        `{` + dgst + `,"length":5,"piece_length":4096,"piece_sums":[` + sum + `],"x":1}`,
		"duplicate key":      `{` + dgst + `,` + dgst + `,"length":5,"piece_length":4096,"piece_sums":[` + sum + `]}`,
		"case-folded key":    `{"Digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","length":5,"piece_length":4096,"piece_sums":[` + sum + `]}`,
		"sha512 digest":      `{"digest":"sha512:` + strings.Repeat("a", 128) + `","length":5,"piece_length":4096,"piece_sums":[` + sum + `]}`,
		"bad digest":         `{"digest":"sha256:xyz","length":5,"piece_length":4096,"piece_sums":[` + sum + `]}`,
		"upper-case digest":  `{"digest":"sha256:2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824","length":5,"piece_length":4096,"piece_sums":[` + sum + `]}`,
		"negative length":    `{` + dgst + `,"length":-5,"piece_length":4096,"piece_sums":[]}`,
		"float length":       `{` + dgst + `,"length":5.0,"piece_length":4096,"piece_sums":[` + sum + `]}`,
		"exponent length":    `{` + dgst + `,"length":5e0,"piece_length":4096,"piece_sums":[` + sum + `]}`,
		"string length":      `{` + dgst + `,"length":"5","piece_length":4096,"piece_sums":[` + sum + `]}`,
		"piece len not pow2": `{` + dgst + `,"length":5,"piece_length":5000,"piece_sums":[` + sum + `]}`,
		"piece len too low":  `{` + dgst + `,"length":5,"piece_length":2048,"piece_sums":[` + sum + `]}`,
		"piece len too high": `{` + dgst + `,"length":5,"piece_length":134217728,"piece_sums":[` + sum + `]}`,
		"piece len zero":     `{` + dgst + `,"length":5,"piece_length":0,"piece_sums":[` + sum + `]}`,
		"too few sums":       `{` + dgst + `,"length":5,"piece_length":4096,"piece_sums":[]}`,
		"too many sums":      `{` + dgst + `,"length":5,"piece_length":4096,"piece_sums":[` + sum + `,` + sum + `]}`,
		"sum for empty blob": `{` + dgst + `,"length":0,"piece_length":4096,"piece_sums":[` + sum + `]}`,
		"upper-case sum":     `{` + dgst + `,"length":5,"piece_length":4096,"piece_sums":["` + strings.ToUpper(sum[1:65]) + `"]}`,
		"short sum":          `{` + dgst + `,"length":5,"piece_length":4096,"piece_sums":["abcd"]}`,
		"non-hex sum":        `{` + dgst + `,"length":5,"piece_length":4096,"piece_sums":["` + strings.Repeat("g", 64) + `"]}`,
		"numeric sum":        `{` + dgst + `,"length":5,"piece_length":4096,"piece_sums":[1]}`,
		"too many pieces":    `{` + dgst + `,"length":9223372036854775807,"piece_length":4096,"piece_sums":[]}`,
	} {
		_, err := metainfo.Decode([]byte(in))
		require.ErrorIs(t, err, metainfo.ErrInvalid, "%s: %s", name, in)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	good := reference([]byte("hello"), metainfo.MinPieceLength)
	require.NoError(t, good.Validate())
	for name, mutate := range map[string]func(*metainfo.MetaInfo){
		"empty digest":   func(m *metainfo.MetaInfo) { m.Digest = "" },
		"sha512":         func(m *metainfo.MetaInfo) { m.Digest = digest.SHA512.FromString("hello") },
		"negative":       func(m *metainfo.MetaInfo) { m.Length = -1 },
		"bad piece len":  func(m *metainfo.MetaInfo) { m.PieceLength = 3 },
		"missing sums":   func(m *metainfo.MetaInfo) { m.PieceSums = nil },
		"one sum extra":  func(m *metainfo.MetaInfo) { m.PieceSums = append(m.PieceSums, [32]byte{}) },
		"length changed": func(m *metainfo.MetaInfo) { m.Length = metainfo.MinPieceLength + 1 },
	} {
		m := good
		m.PieceSums = append([][32]byte(nil), good.PieceSums...)
		mutate(&m)
		require.ErrorIs(t, m.Validate(), metainfo.ErrInvalid, name)
		_, err := m.Encode()
		require.ErrorIs(t, err, metainfo.ErrInvalid, name)
	}
}

func TestMaxEncodedSize(t *testing.T) {
	t.Parallel()
	// The encoding grows by 67 bytes per piece plus a header; check the header of the widest
	// layout (a 19-digit length, the largest piece length) fits the bound's 512 bytes.
	const n = 1000
	m := metainfo.MetaInfo{
		Digest:      digest.FromString("x"),
		Length:      metainfo.MaxPieceLength * n,
		PieceLength: metainfo.MaxPieceLength,
		PieceSums:   make([][32]byte, n),
	}
	b, err := m.Encode()
	require.NoError(t, err)
	header := len(b) - n*(2*32+3) + (19 - len(strconv.FormatInt(m.Length, 10)))
	require.LessOrEqual(t, header, metainfo.MaxEncodedSize-metainfo.MaxPieces*(2*32+3))
	got, err := metainfo.Decode(b)
	require.NoError(t, err)
	require.True(t, m.Equal(got))
}
