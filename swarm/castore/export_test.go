package castore

// RereadBytes reports how many upload bytes were hashed a second time, for tests that check
// the persisted hash state spares the re-read.
func (s *Store) RereadBytes() int64 { return s.reread.Load() }
