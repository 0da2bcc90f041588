package metainfo_test

import (
	"testing"

	"github.com/krakenctl/krakenctl/swarm/metainfo"
)

// FuzzDecode checks that Decode never panics on untrusted input and that whatever it accepts
// survives a round trip: decode → encode → decode gives the same MetaInfo, and encoding is
// canonical (the second encoding has the same bytes as the first).
func FuzzDecode(f *testing.F) {
	for _, data := range [][]byte{nil, []byte("hello"), randomBytes(1, 3*4096+1)} {
		m := reference(data, metainfo.MinPieceLength)
		b, err := m.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","length":5,"piece_length":4096,"piece_sums":[]}`))
	f.Add([]byte(`{"digest":"","length":0,"piece_length":0,"piece_sums":null}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := metainfo.Decode(in)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("Decode accepted an invalid MetaInfo: %v", err)
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("encode a decoded MetaInfo: %v", err)
		}
		m2, err := metainfo.Decode(enc)
		if err != nil {
			t.Fatalf("decode own encoding %q: %v", enc, err)
		}
		if !m.Equal(m2) {
			t.Fatalf("round trip changed the MetaInfo:\n%+v\n%+v", m, m2)
		}
		enc2, err := m2.Encode()
		if err != nil {
			t.Fatalf("encode again: %v", err)
		}
		if string(enc) != string(enc2) {
			t.Fatalf("encoding is not canonical:\n%s\n%s", enc, enc2)
		}
	})
}
