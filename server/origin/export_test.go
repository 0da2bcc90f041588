package origin

import "github.com/opencontainers/go-digest"

// SeedStripe exposes seedStripe to the package's external tests.
func (s *Server) SeedStripe(d digest.Digest) (index, count int) { return s.seedStripe(d) }
