package castore

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

func marshalState(t testing.TB, hs hashState) []byte {
	b, err := hs.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHashStateRoundTrip(t *testing.T) {
	t.Parallel()
	for _, alg := range algorithms {
		h := alg.Hash()
		data := bytes.Repeat([]byte("krakenctl"), 1000)
		h.Write(data)
		b, err := encodeHashState(hashState{alg: alg, offset: int64(len(data)), h: h})
		require.NoError(t, err)
		hs, err := decodeHashState(b)
		require.NoError(t, err)
		require.Equal(t, alg, hs.alg)
		require.Equal(t, int64(len(data)), hs.offset)
		// The restored hash continues where the saved one stopped.
		hs.h.Write([]byte("tail"))
		h.Write([]byte("tail"))
		require.Equal(t, h.Sum(nil), hs.h.Sum(nil))
	}
}

func TestHashStateRejects(t *testing.T) {
	t.Parallel()
	h := sha256.New()
	h.Write([]byte("hello"))
	good, err := encodeHashState(hashState{alg: digest.SHA256, offset: 5, h: h})
	require.NoError(t, err)
	_, err = decodeHashState(good)
	require.NoError(t, err)

	wrongOffset, err := encodeHashState(hashState{alg: digest.SHA256, offset: 6, h: h})
	require.NoError(t, err)
	for name, b := range map[string][]byte{
		"empty":        nil,
		"truncated":    good[:len(good)-1],
		"extended":     append(bytes.Clone(good), 0),
		"flipped bit":  func() []byte { b := bytes.Clone(good); b[20] ^= 1; return b }(),
		"wrong offset": wrongOffset,
	} {
		_, err := decodeHashState(b)
		require.ErrorIs(t, err, errBadHashState, name)
	}
}

// FuzzDecodeHashState checks the decoder of the persisted hash state, which a crash can leave
// in any shape: it never panics, and what it accepts round-trips to the same state. Each input
// is tried as is and with a valid checksum appended, so mutations reach the fields behind it.
func FuzzDecodeHashState(f *testing.F) {
	for _, alg := range algorithms {
		for _, n := range []int{0, 5, 64, 1000} {
			h := alg.Hash()
			h.Write(bytes.Repeat([]byte{7}, n))
			b, err := encodeHashState(hashState{alg: alg, offset: int64(n), h: h})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			f.Add(b[:len(b)-4])
		}
	}
	f.Add([]byte("KCHS"))
	f.Fuzz(func(t *testing.T, in []byte) {
		withSum := binary.BigEndian.AppendUint32(bytes.Clone(in), crc32.Checksum(in, castagnoli))
		for _, b := range [][]byte{in, withSum} {
			checkHashStateRoundTrip(t, b)
		}
	})
}

func checkHashStateRoundTrip(t *testing.T, in []byte) {
	hs, err := decodeHashState(in)
	if err != nil {
		return
	}
	enc, err := encodeHashState(hs)
	if err != nil {
		t.Fatalf("encode a decoded state: %v", err)
	}
	hs2, err := decodeHashState(enc)
	if err != nil {
		t.Fatalf("decode own encoding: %v", err)
	}
	if hs.alg != hs2.alg || hs.offset != hs2.offset ||
		!bytes.Equal(marshalState(t, hs), marshalState(t, hs2)) {
		t.Fatalf("round trip changed the state")
	}
	if !bytes.Equal(hs.h.Sum(nil), hs2.h.Sum(nil)) {
		t.Fatalf("round trip changed the sum")
	}
}
