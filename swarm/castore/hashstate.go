package castore

import (
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"math"
	"slices"

	"github.com/opencontainers/go-digest"
)

// An upload session persists the state of its running hash in DIR/uploads/<id>/hashstate, so
// that committing after a restart need not read the data again. The file is untrusted input
// (a crash can leave it stale, torn or empty), so the format is checked strictly and guarded by
// a checksum; anything that fails the checks is ignored and the data re-read. All integers are
// big-endian:
//
//	magic   4 bytes  "KCHS"
//	version 1 byte   1
//	alglen  1 byte   length of the algorithm name
//	alg     alglen   "sha256", "sha384" or "sha512"
//	offset  8 bytes  number of data bytes the state has hashed, at most 2^63-1
//	statlen 4 bytes  length of the state
//	state   statlen  the hash's encoding.BinaryMarshaler encoding, at most maxHashState bytes
//	crc     4 bytes  CRC-32C of everything before it
//
// The state is written only after the data it covers is fsynced, so a state that decodes is
// never ahead of the data on disk; it may be behind, and then only the tail is hashed again.
const (
	hashStateMagic   = "KCHS"
	hashStateVersion = 1
	maxHashState     = 1024
)

var errBadHashState = errors.New("castore: bad hash state")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// hashState is a running hash and the number of bytes it has consumed.
type hashState struct {
	alg    digest.Algorithm
	offset int64
	h      hash.Hash
}

func encodeHashState(hs hashState) ([]byte, error) {
	m, ok := hs.h.(encoding.BinaryMarshaler)
	if !ok {
		return nil, fmt.Errorf("encode hash state: %s hash cannot be marshaled", hs.alg)
	}
	state, err := m.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode hash state: %w", err)
	}
	if len(state) > maxHashState || len(hs.alg) > math.MaxUint8 || hs.offset < 0 {
		return nil, fmt.Errorf("encode hash state: %w: out of bounds", errBadHashState)
	}
	b := make([]byte, 0, 4+1+1+len(hs.alg)+8+4+len(state)+4)
	b = append(b, hashStateMagic...)
	b = append(b, hashStateVersion, byte(len(hs.alg)))
	b = append(b, hs.alg...)
	b = binary.BigEndian.AppendUint64(b, uint64(hs.offset))
	b = binary.BigEndian.AppendUint32(b, uint32(len(state)))
	b = append(b, state...)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return b, nil
}

func decodeHashState(b []byte) (hashState, error) {
	hs, err := decodeHashStateFields(b)
	if err != nil {
		return hashState{}, fmt.Errorf("decode hash state: %w", err)
	}
	return hs, nil
}

func decodeHashStateFields(b []byte) (hashState, error) {
	if len(b) < 4+1+1+8+4+4 {
		return hashState{}, fmt.Errorf("%w: %d bytes is too short", errBadHashState, len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return hashState{}, fmt.Errorf("%w: checksum mismatch", errBadHashState)
	}
	if string(body[:4]) != hashStateMagic {
		return hashState{}, fmt.Errorf("%w: bad magic", errBadHashState)
	}
	if body[4] != hashStateVersion {
		return hashState{}, fmt.Errorf("%w: unknown version %d", errBadHashState, body[4])
	}
	algLen := int(body[5])
	rest := body[6:]
	if len(rest) < algLen+8+4 {
		return hashState{}, fmt.Errorf("%w: truncated", errBadHashState)
	}
	alg := digest.Algorithm(rest[:algLen])
	if !slices.Contains(algorithms, alg) {
		return hashState{}, fmt.Errorf("%w: unsupported algorithm %q", errBadHashState, alg)
	}
	rest = rest[algLen:]
	offset := binary.BigEndian.Uint64(rest)
	if offset > math.MaxInt64 {
		return hashState{}, fmt.Errorf("%w: offset %d out of range", errBadHashState, offset)
	}
	stateLen := binary.BigEndian.Uint32(rest[8:])
	rest = rest[12:]
	if stateLen > maxHashState || int(stateLen) != len(rest) {
		return hashState{}, fmt.Errorf("%w: state of %d bytes, %d present", errBadHashState, stateLen, len(rest))
	}
	// The standard library's SHA-2 states end with the number of bytes hashed; a state that
	// disagrees with offset is not the one written with it.
	if len(rest) < 8 || binary.BigEndian.Uint64(rest[len(rest)-8:]) != offset {
		return hashState{}, fmt.Errorf("%w: state does not cover %d bytes", errBadHashState, offset)
	}
	h := alg.Hash()
	u, ok := h.(encoding.BinaryUnmarshaler)
	if !ok {
		return hashState{}, fmt.Errorf("%w: %s hash cannot be unmarshaled", errBadHashState, alg)
	}
	if err := u.UnmarshalBinary(rest); err != nil {
		return hashState{}, fmt.Errorf("%w: %w", errBadHashState, err)
	}
	return hashState{alg: alg, offset: int64(offset), h: h}, nil
}
