package scheduler

import (
	"slices"

	"github.com/opencontainers/go-digest"
	dto "github.com/prometheus/client_model/go"
)

// SetOriginDepth lets benchmarks try other origin pipeline depths.
func SetOriginDepth(n int) { originDepth = n }

// CountedAvailability returns how many peers a super-seeding origin counts as holding each
// piece of d, or nil when it does not super-seed d.
func (s *Scheduler) CountedAvailability(d digest.Digest) []int32 {
	s.mu.Lock()
	t := s.torrents[d]
	s.mu.Unlock()
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ss == nil {
		return nil
	}
	return slices.Clone(t.ss.avail)
}

// Challenges returns how many super-seeding challenges had result (proved, failed).
func (s *Scheduler) Challenges(result string) int {
	var m dto.Metric
	if err := s.met.challenges.WithLabelValues(result).Write(&m); err != nil {
		panic(err)
	}
	return int(m.GetCounter().GetValue())
}
