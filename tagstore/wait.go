package tagstore

import (
	"context"
	"fmt"
)

// WaitApplied returns once this node's state reflects log index index, or with ctx's error, or
// ErrClosed. A follower that got a read index from the leader (ReadIndex there) calls it and
// then reads with Stale consistency: the read is linearizable without sending it to the leader.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	if err := s.waitApplied(ctx, index); err != nil {
		return fmt.Errorf("wait for index %d: %w", index, err)
	}
	return nil
}
