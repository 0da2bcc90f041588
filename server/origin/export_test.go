package origin

import (
	"context"

	"github.com/opencontainers/go-digest"
)

// SeedStripe exposes seedStripe to the package's external tests.
func (s *Server) SeedStripe(d digest.Digest) (index, count int) { return s.seedStripe(d) }

// RepairMoved runs the repair a ring change starts: only the blobs whose owners changed since
// the last complete repair.
func (s *Server) RepairMoved(ctx context.Context) error { return s.repair(ctx, false) }

// OwnersUnder is placement.owners for the ring's current placement (tests compare it with the
// ring's own Owners).
func (s *Server) OwnersUnder(key string) []string {
	p := s.currentPlacement()
	return p.owners(key)
}

// Repaired reports whether a repair has completed since the start.
func (s *Server) Repaired() bool {
	s.repairMu.Lock()
	defer s.repairMu.Unlock()
	return s.repaired != nil
}

// QueueLen is how many tasks the origin's durable queue holds.
func (s *Server) QueueLen() (int, error) { return s.queue.Len() }
