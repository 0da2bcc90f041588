package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/swarm/castore"
)

// replicateTimeout bounds the synchronous copy to the other owners during an upload commit.
const replicateTimeout = 10 * time.Minute

// afterCommit runs after a blob entered the store through an upload. primary is true when a
// client uploaded it here (fan out to the other owners, write back now) and false for a
// replica sent by another origin (write back later, as insurance).
func (s *Server) afterCommit(ctx context.Context, ns string, d digest.Digest, primary bool) error {
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
		if err := s.enqueue(task{Kind: kindWriteback, Namespace: ns, Digest: d, NotBefore: time.Now().Add(delay)}); err != nil {
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
				if qerr := s.enqueue(task{Kind: kindReplicate, Namespace: ns, Digest: d, Target: owner, NotBefore: time.Now().Add(s.cfg.Writeback.RetryInitial)}); qerr != nil {
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
	defer b.Close()
	if err := p.Replicate(ctx, ns, d, blobReader(b), b.Size()); err != nil {
		s.metrics.replications.WithLabelValues("error").Inc()
		return err
	}
	s.metrics.replications.WithLabelValues("ok").Inc()
	return nil
}

// enqueue stores a task durably and holds its blob against eviction until it finishes.
func (s *Server) enqueue(t task) error {
	s.hold(t)
	if _, err := s.queue.add(t); err != nil {
		s.unhold(t)
		return err
	}
	return nil
}

// runQueue executes due tasks with the configured number of workers until ctx ends.
func (s *Server) runQueue(ctx context.Context) error {
	sem := make(chan struct{}, s.cfg.Writeback.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-s.queue.wake:
		}
		free := s.cfg.Writeback.Workers - len(sem)
		if free <= 0 {
			continue // a finishing worker wakes us
		}
		tasks, next, counts, err := s.queue.due(time.Now(), free)
		if err != nil {
			s.log.Error("read queue", "err", err)
			next = time.Now().Add(time.Second)
		}
		for k, n := range counts {
			s.metrics.queueDepth.WithLabelValues(k).Set(float64(n))
		}
		for _, t := range tasks {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				s.runTask(ctx, t)
			}()
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		wait := time.Minute
		if !next.IsZero() {
			wait = max(time.Until(next), 10*time.Millisecond)
		}
		timer.Reset(wait)
	}
}

// runTask runs one attempt of t and records the outcome durably.
func (s *Server) runTask(ctx context.Context, t task) {
	tctx, cancel := context.WithTimeout(ctx, s.cfg.Writeback.Timeout)
	err := s.execute(tctx, t)
	cancel()
	log := s.log.With("task", t.Kind, "digest", t.Digest, "namespace", t.Namespace, "target", t.Target, "attempt", t.Attempts+1)
	switch {
	case err == nil:
		s.metrics.tasks.WithLabelValues(t.Kind, "ok").Inc()
		if derr := s.queue.done(t); derr != nil {
			log.Error("finish task", "err", derr)
			return
		}
		s.unhold(t)
		log.Debug("task done")
	case ctx.Err() != nil:
		// Shutting down: leave the task as it was; it runs again after the restart.
		s.queue.release(t)
	case errors.Is(err, errPermanent):
		s.metrics.tasks.WithLabelValues(t.Kind, "dropped").Inc()
		log.Error("task failed permanently; dropped", "err", err)
		if derr := s.queue.done(t); derr != nil {
			log.Error("finish task", "err", derr)
			return
		}
		s.unhold(t)
	default:
		s.metrics.tasks.WithLabelValues(t.Kind, "retry").Inc()
		at := time.Now().Add(s.backoff(t.Attempts + 1))
		log.Warn("task failed; will retry", "err", err, "retry_at", at)
		if rerr := s.queue.retry(t, err, at); rerr != nil {
			log.Error("reschedule task", "err", rerr)
		}
	}
}

// backoff is exponential from RetryInitial, capped at RetryMax, with ±20% jitter so that many
// tasks failing together do not retry together.
func (s *Server) backoff(attempt int) time.Duration {
	d := s.cfg.Writeback.RetryInitial
	for i := 1; i < attempt && d < s.cfg.Writeback.RetryMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.Writeback.RetryMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func (s *Server) execute(ctx context.Context, t task) error {
	switch t.Kind {
	case kindWriteback:
		return s.writeback(ctx, t.Namespace, t.Digest)
	case kindReplicate:
		if !s.ring.IsMember(t.Target) {
			return fmt.Errorf("%w: %s is no longer a ring member", errPermanent, t.Target)
		}
		err := s.replicate(ctx, t.Target, t.Namespace, t.Digest)
		if errors.Is(err, castore.ErrNotFound) {
			return fmt.Errorf("%w: %w", errPermanent, err)
		}
		return err
	default:
		return fmt.Errorf("%w: unknown task kind %q", errPermanent, t.Kind)
	}
}

// writeback copies d to the namespace's backend unless an object of the same size is there.
func (s *Server) writeback(ctx context.Context, ns string, d digest.Digest) error {
	if s.backend == nil {
		return fmt.Errorf("%w: no backend configured", errPermanent)
	}
	b, err := s.store.Open(ctx, d)
	if errors.Is(err, castore.ErrNotFound) {
		return fmt.Errorf("%w: write back %s: %w", errPermanent, d, err)
	} else if err != nil {
		return fmt.Errorf("write back %s: %w", d, err)
	}
	defer b.Close()
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
		return fmt.Errorf("%w: %w", errPermanent, err)
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
			s.log.Info("ring member changed health", "member", ev.Member, "healthy", ev.Healthy)
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
				return s.enqueue(task{Kind: kindReplicate, Namespace: ns, Digest: d, Target: o})
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
