package origin

import (
	"bytes"
	"context"
	"time"

	"github.com/opencontainers/go-digest"
)

// SeedStripe exposes seedStripe to the package's external tests.
func (s *Server) SeedStripe(d digest.Digest) (index, count int) { return s.seedStripe(d) }

// QueueWriteback queues a write-back of d under ns as a commit's prepare does, whether or not
// the blob is stored.
func (s *Server) QueueWriteback(ns string, d digest.Digest) error {
	return s.enqueue(newTask(kindWriteback, ns, d, "", time.Now()), d)
}

// QueueLen returns how many tasks the queue holds.
func (s *Server) QueueLen() (int, error) { return s.queue.Len() }

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
