package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/queue"
	"github.com/krakenctl/krakenctl/swarm/castore"
)

// replicateTimeout bounds the synchronous copy to the other owners during an upload commit.
const replicateTimeout = 10 * time.Minute

// afterCommit runs after a blob entered the store through an upload. primary is true when a
// client uploaded it here (fan out to the other owners, write back now) and false for a
// replica sent by another origin (write back later, as insurance).
func (s *Server) afterCommit(ctx context.Context, ns string, d digest.Digest, primary bool) error {
	s.neg.forget(d) // the backend's "not found" is out of date from now on (negCache)
	if err := s.addNamespace(d, ns); err != nil {
		return err
	}
	if _, err := s.metainfo(ctx, d); err != nil {
		return err
	}
	if s.backend != nil {
		delay := time.Duration(0)
		if !primary {
			delay = s.cfg.Writeback.ReplicaDelay
		}
		if err := s.enqueue(newTask(kindWriteback, ns, d, "", time.Now().Add(delay)), d); err != nil {
			return err
		}
	}
	if primary {
		s.replicateToOwners(ctx, ns, d)
	}
	return nil
}

// replicateToOwners copies d to every other current owner that lacks it, in parallel. An owner
// that cannot be reached gets a durable replicate task instead, so the upload still succeeds
// while one origin is down.
func (s *Server) replicateToOwners(ctx context.Context, ns string, d digest.Digest) {
	ctx, cancel := context.WithTimeout(ctx, replicateTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, owner := range s.ring.Owners(d.String()) {
		if owner == s.self {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.replicate(ctx, owner, ns, d); err != nil {
				s.log.Warn("replicate to owner failed; queued for retry", "peer", owner, "digest", d, "err", err)
				if qerr := s.enqueue(newTask(kindReplicate, ns, d, owner, time.Now().Add(s.cfg.Writeback.RetryInitial)), d); qerr != nil {
					s.log.Error("queue replicate task", "peer", owner, "digest", d, "err", qerr)
				}
			}
		}()
	}
	wg.Wait()
}

// replicate copies d to the origin at target unless it already has it.
func (s *Server) replicate(ctx context.Context, target, ns string, d digest.Digest) error {
	p := s.peer(target)
	if _, err := p.StatLocal(ctx, ns, d); err == nil {
		return nil
	} else if !client.IsNotFound(err) {
		return err
	}
	b, err := s.store.Open(ctx, d)
	if err != nil {
		return fmt.Errorf("replicate %s: %w", d, err)
	}
	defer func() { _ = b.Close() }() // read-only handle
	if err := p.Replicate(ctx, ns, d, blobReader(b), b.Size()); err != nil {
		s.metrics.replications.WithLabelValues("error").Inc()
		return err
	}
	s.metrics.replications.WithLabelValues("ok").Inc()
	return nil
}

// enqueue stores a task durably and holds its blob against eviction until it finishes.
func (s *Server) enqueue(t queue.Task, d digest.Digest) error {
	s.hold(t, d)
	if _, err := s.queue.Add(t); err != nil {
		s.unhold(t)
		return err
	}
	return nil
}

// execute runs one attempt of a queue task.
func (s *Server) execute(ctx context.Context, t queue.Task) error {
	bt, err := decodeTask(t)
	if err != nil {
		return err
	}
	switch t.Kind {
	case kindWriteback:
		return s.writeback(ctx, bt.Namespace, bt.Digest)
	case kindReplicate:
		if !s.ring.IsMember(bt.Target) {
			return fmt.Errorf("%w: %s is no longer a ring member", queue.ErrPermanent, bt.Target)
		}
		err := s.replicate(ctx, bt.Target, bt.Namespace, bt.Digest)
		if errors.Is(err, castore.ErrNotFound) {
			return fmt.Errorf("%w: %w", queue.ErrPermanent, err)
		}
		return err
	default:
		return fmt.Errorf("%w: unknown task kind %q", queue.ErrPermanent, t.Kind)
	}
}

// writeback copies d to the namespace's backend unless an object of the same size is there.
func (s *Server) writeback(ctx context.Context, ns string, d digest.Digest) error {
	if s.backend == nil {
		return fmt.Errorf("%w: no backend configured", queue.ErrPermanent)
	}
	b, err := s.store.Open(ctx, d)
	if errors.Is(err, castore.ErrNotFound) {
		return fmt.Errorf("%w: write back %s: %w", queue.ErrPermanent, d, err)
	} else if err != nil {
		return fmt.Errorf("write back %s: %w", d, err)
	}
	defer func() { _ = b.Close() }() // read-only handle
	if info, err := s.backend.Stat(ctx, ns, d.Encoded()); err == nil && info.Size == b.Size() {
		return nil
	} else if err != nil && !errors.Is(err, backend.ErrNotFound) {
		return classifyBackendErr(fmt.Errorf("write back %s: stat: %w", d, err))
	}
	if err := s.backend.Upload(ctx, ns, d.Encoded(), blobReader(b), b.Size()); err != nil {
		return classifyBackendErr(fmt.Errorf("write back %s: %w", d, err))
	}
	s.metrics.writebackBytes.Add(float64(b.Size()))
	return nil
}

// classifyBackendErr marks the failures that no retry can fix as permanent.
func classifyBackendErr(err error) error {
	if errors.Is(err, backend.ErrNoRoute) || errors.Is(err, backend.ErrReadOnly) || errors.Is(err, backend.ErrInvalidKey) {
		return fmt.Errorf("%w: %w", queue.ErrPermanent, err)
	}
	return err
}

// runRepair reconciles when the ring changes and every RepairInterval.
func (s *Server) runRepair(ctx context.Context) error {
	events, cancel := s.ring.Subscribe()
	defer cancel()
	var tick <-chan time.Time
	if s.cfg.RepairInterval > 0 {
		t := time.NewTicker(s.cfg.RepairInterval)
		defer t.Stop()
		tick = t.C
	}
	s.kickRepair() // once at start: this origin may have been down while blobs changed owners
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			s.log.Info("ring member changed", "member", ev.Member, "healthy", ev.Healthy,
				"joined", ev.Joined, "left", ev.Left)
			s.kickRepair()
		case <-tick:
			s.kickRepair()
		case <-s.repairKick:
			if err := s.Repair(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("repair", "err", err)
			}
		}
	}
}

func (s *Server) kickRepair() {
	select {
	case s.repairKick <- struct{}{}:
	default:
	}
}

// Repair checks that every blob in the store is on all of its current owners and copies it to
// those that lack it (through durable replicate tasks). It returns how it went, not whether
// every copy succeeded: failed copies are retried by the queue.
func (s *Server) Repair(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	queued := 0
	var mu sync.Mutex
	for _, info := range s.store.List() {
		d := info.Digest
		owners := s.ring.Owners(d.String())
		ns, err := s.namespaceOf(d)
		if err != nil {
			continue // not a blob this origin can attribute; nothing to repair with
		}
		ns = firstLine(ns)
		for _, o := range owners {
			if o == s.self {
				continue
			}
			g.Go(func() error {
				_, err := s.peer(o).StatLocal(ctx, ns, d)
				if err == nil || !client.IsNotFound(err) {
					return nil // present, or unreachable (the member's own return triggers repair)
				}
				mu.Lock()
				queued++
				mu.Unlock()
				return s.enqueue(newTask(kindReplicate, ns, d, o, time.Time{}), d)
			})
		}
	}
	err := g.Wait()
	if queued > 0 {
		s.log.Info("repair queued copies", "count", queued)
	}
	return err
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

// blobReader gives a fresh reader over a whole stored blob, so a retry can reread it.
func blobReader(b *castore.Blob) *io.SectionReader { return io.NewSectionReader(b, 0, b.Size()) }
