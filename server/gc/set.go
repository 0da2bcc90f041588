package gc

import (
	"encoding/hex"
	"sync"

	"github.com/opencontainers/go-digest"
)

// digestSet is the marked set: 32 bytes a sha256 digest (plus the map's overhead), the only
// state of a run that grows with the content. Digests of other algorithms are kept as
// strings; the origins store only sha256, so those are rare (links resolve them). Safe for
// concurrent use.
type digestSet struct {
	mu    sync.RWMutex
	sha   map[[32]byte]struct{}
	other map[digest.Digest]struct{}
}

func newDigestSet() *digestSet {
	return &digestSet{sha: map[[32]byte]struct{}{}, other: map[digest.Digest]struct{}{}}
}

func key(d digest.Digest) ([32]byte, bool) {
	var k [32]byte
	if d.Algorithm() != digest.SHA256 {
		return k, false
	}
	n, err := hex.Decode(k[:], []byte(d.Encoded()))
	return k, err == nil && n == len(k)
}

func (s *digestSet) add(d digest.Digest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := key(d); ok {
		s.sha[k] = struct{}{}
		return
	}
	s.other[d] = struct{}{}
}

func (s *digestSet) has(d digest.Digest) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if k, ok := key(d); ok {
		_, in := s.sha[k]
		return in
	}
	_, in := s.other[d]
	return in
}

func (s *digestSet) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.sha) + len(s.other)
}
