package origin

import (
	"bytes"
	"context"
	"time"

	"github.com/opencontainers/go-digest"
)

// SeedStripe exposes seedStripe to the package's external tests.
func (s *Server) SeedStripe(d digest.Digest) (index, count int) { return s.seedStripe(d) }

// RepairMoved runs the repair a ring change starts: only the blobs whose owners changed since
// the last complete repair.
func (s *Server) RepairMoved(ctx context.Context) error { return s.repair(ctx, repairMoved) }

// RepairUnconfirmed runs the periodic repair: the blobs not confirmed under the current epoch.
func (s *Server) RepairUnconfirmed(ctx context.Context) error {
	return s.repair(ctx, repairUnconfirmed)
}

// RepairFullPaced runs the periodic full repair, paced by repair_full_rate.
func (s *Server) RepairFullPaced(ctx context.Context) error { return s.repair(ctx, repairFullPaced) }

// RingEpoch is how many ring events the repair loop has seen.
func (s *Server) RingEpoch() uint64 { return s.ringEpoch.Load() }

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

// QueueWriteback queues a write-back of d under ns as a commit's prepare does, whether or not
// the blob is stored.
func (s *Server) QueueWriteback(ns string, d digest.Digest) error {
	return s.enqueue(newTask(kindWriteback, ns, d, "", time.Now()), d)
}

// Attempts returns how many times the write-back of d under ns has been tried, -1 when it is
// not queued.
func (s *Server) Attempts(ns string, d digest.Digest) (int, error) {
	tasks, err := s.queue.All()
	if err != nil {
		return 0, err
	}
	want := newTask(kindWriteback, ns, d, "", time.Time{}).ID()
	for _, t := range tasks {
		if t.ID() == want {
			return t.Attempts, nil
		}
	}
	return -1, nil
}

// StoreOnly commits data into the origin's store and nothing else: no metadata, no task.
func (s *Server) StoreOnly(ctx context.Context, d digest.Digest, data []byte) error {
	_, err := s.store.Ingest(ctx, d, bytes.NewReader(data))
	return err
}

// StoreReserved is the space the store has reserved for writes under way.
func (s *Server) StoreReserved() int64 { return s.store.Reserved() }

// StoreMeta reads a stored blob's sidecar metadata kind ("metainfo", "namespace") as it is on
// disk, without generating anything.
func (s *Server) StoreMeta(d digest.Digest, kind string) ([]byte, error) {
	return s.store.GetMeta(d, kind)
}

// SetConfirmClock makes the repair's confirmations read the time from now.
func (s *Server) SetConfirmClock(now func() time.Time) {
	s.confirmed.mu.Lock()
	defer s.confirmed.mu.Unlock()
	s.confirmed.now = now
}

// StoreDelete removes a blob from the store as cleanup or an operator would: nothing else is
// told.
func (s *Server) StoreDelete(d digest.Digest) error { return s.store.Delete(d) }
