package metainfo

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/opencontainers/go-digest"
)

// MaxEncodedSize bounds the size of any valid encoding produced by Encode (a MetaInfo with
// MaxPieces pieces). Readers of untrusted input limit what they read to it before Decode.
const MaxEncodedSize = 512 + MaxPieces*(2*32+3)

// The JSON encoding, produced by Encode and MarshalJSON, is one compact object with exactly
// these keys in this order:
//
//	{"digest":"sha256:<hex>","length":<int>,"piece_length":<int>,"piece_sums":["<hex>",...]}
//
// Each piece sum is the 64-character lower-case hex SHA-256 of one piece, in piece order; an
// empty blob has "piece_sums":[]. Decode is strict: every key is required and appears once,
// keys match exactly (no case folding), unknown keys, trailing data, non-integer numbers and
// upper-case hex are rejected, and the result must pass Validate. Formats that add keys will
// therefore need a new key name or version, which old decoders reject rather than misread.
const (
	keyDigest      = "digest"
	keyLength      = "length"
	keyPieceLength = "piece_length"
	keyPieceSums   = "piece_sums"
)

// Encode validates m and returns its JSON encoding (see MaxEncodedSize and Decode).
func (m MetaInfo) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("encode metainfo: %w", err)
	}
	var b bytes.Buffer
	b.Grow(128 + len(m.PieceSums)*(2*32+3))
	b.WriteString(`{"` + keyDigest + `":`)
	b.WriteString(strconv.Quote(m.Digest.String())) // A valid digest has no characters to escape.
	b.WriteString(`,"` + keyLength + `":`)
	b.WriteString(strconv.FormatInt(m.Length, 10))
	b.WriteString(`,"` + keyPieceLength + `":`)
	b.WriteString(strconv.FormatInt(m.PieceLength, 10))
	b.WriteString(`,"` + keyPieceSums + `":[`)
	var h [2 * 32]byte
	for i, sum := range m.PieceSums {
		if i > 0 {
			b.WriteByte(',')
		}
		hex.Encode(h[:], sum[:])
		b.WriteByte('"')
		b.Write(h[:])
		b.WriteByte('"')
	}
	b.WriteString(`]}`)
	return b.Bytes(), nil
}

// MarshalJSON implements json.Marshaler with Encode.
func (m MetaInfo) MarshalJSON() ([]byte, error) { return m.Encode() }

// UnmarshalJSON implements json.Unmarshaler with Decode. On error m is unchanged.
func (m *MetaInfo) UnmarshalJSON(data []byte) error {
	v, err := Decode(data)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Decode parses and validates an encoding produced by Encode. It is safe on untrusted input:
// errors wrap ErrInvalid, and the memory it uses is proportional to len(data).
func Decode(data []byte) (MetaInfo, error) {
	m, err := decode(data)
	if err != nil {
		return MetaInfo{}, fmt.Errorf("decode metainfo: %w", err)
	}
	return m, nil
}

func decode(data []byte) (MetaInfo, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := expectDelim(dec, '{'); err != nil {
		return MetaInfo{}, err
	}
	var (
		m    MetaInfo
		seen = map[string]bool{}
		sums []string
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return MetaInfo{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		key, ok := tok.(string)
		if !ok {
			return MetaInfo{}, fmt.Errorf("%w: unexpected %v", ErrInvalid, tok)
		}
		if seen[key] {
			return MetaInfo{}, fmt.Errorf("%w: duplicate key %q", ErrInvalid, key)
		}
		seen[key] = true
		switch key {
		case keyDigest:
			var s string
			err = decodeValue(dec, &s)
			m.Digest = digest.Digest(s)
		case keyLength:
			err = decodeValue(dec, &m.Length)
		case keyPieceLength:
			err = decodeValue(dec, &m.PieceLength)
		case keyPieceSums:
			err = decodeValue(dec, &sums)
		default:
			return MetaInfo{}, fmt.Errorf("%w: unknown key %q", ErrInvalid, key)
		}
		if err != nil {
			return MetaInfo{}, fmt.Errorf("key %q: %w", key, err)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return MetaInfo{}, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return MetaInfo{}, fmt.Errorf("%w: data after the object", ErrInvalid)
	}
	for _, k := range []string{keyDigest, keyLength, keyPieceLength, keyPieceSums} {
		if !seen[k] {
			return MetaInfo{}, fmt.Errorf("%w: missing key %q", ErrInvalid, k)
		}
	}
	// Check the counts before converting the sums, so a huge list is rejected cheaply.
	if err := checkPieceLength(m.PieceLength); err != nil {
		return MetaInfo{}, err
	}
	if m.Length >= 0 {
		if want := ceilDiv(m.Length, m.PieceLength); int64(len(sums)) != want {
			return MetaInfo{}, fmt.Errorf("%w: %d piece sums for %d pieces", ErrInvalid, len(sums), want)
		}
	}
	m.PieceSums = make([][32]byte, len(sums))
	for i, s := range sums {
		if len(s) != 2*32 || !isLowerHex(s) {
			return MetaInfo{}, fmt.Errorf("%w: piece sum %d: want 64 lower-case hex characters", ErrInvalid, i)
		}
		if _, err := hex.Decode(m.PieceSums[i][:], []byte(s)); err != nil {
			return MetaInfo{}, fmt.Errorf("%w: piece sum %d: %w", ErrInvalid, i, err)
		}
	}
	if err := m.Validate(); err != nil {
		return MetaInfo{}, err
	}
	return m, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("%w: want %q, got %v", ErrInvalid, want, tok)
	}
	return nil
}

// decodeValue decodes one JSON value into v, rejecting null (which json leaves as a no-op).
func decodeValue(dec *json.Decoder, v any) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if bytes.Equal(raw, []byte("null")) {
		return fmt.Errorf("%w: null", ErrInvalid)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
