package origin

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/ring"
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
	s.confirmed.forget(d) // an owner lacks it: the next periodic pass asks them all again
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
		err := s.writeback(ctx, bt.Namespace, bt.Digest)
		if errors.Is(err, castore.ErrNotFound) && t.Attempts >= writebackMissingAttempts &&
			time.Since(t.Created) >= s.cfg.Writeback.MissingGrace {
			return fmt.Errorf("%w: %w", queue.ErrPermanent, err)
		}
		return err
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

// writebackMissingAttempts is how many times, at least, a write-back retries before it gives up
// on a blob that is not in the store, and only once writeback.missing_grace has passed since
// it was queued. A commit queues the write-back before the blob becomes visible (see prepare),
// so an attempt may run before the rename; a blob still missing after both never arrived (its
// commit failed, or the process died before the rename).
const writebackMissingAttempts = 3

// writeback copies d to the namespace's backend unless an object of the same size is there.
func (s *Server) writeback(ctx context.Context, ns string, d digest.Digest) error {
	if s.backend == nil {
		return fmt.Errorf("%w: no backend configured", queue.ErrPermanent)
	}
	b, err := s.store.Open(ctx, d)
	if err != nil {
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

// repairKind is how much a repair pass checks. A kick asks for the largest kind requested
// since the last pass started.
type repairKind int32

const (
	// repairMoved asks only the owners a ring change gave each blob since the last complete
	// pass.
	repairMoved repairKind = iota + 1
	// repairUnconfirmed asks every owner of the blobs whose placement was not confirmed under
	// the current ring epoch: new blobs, and every blob after any ring change.
	repairUnconfirmed
	// repairFullPaced asks every owner of every blob, at most RepairFullRate requests a second.
	repairFullPaced
	// repairFull asks every owner of every blob at once (at start).
	repairFull
)

func (k repairKind) String() string {
	return [...]string{"none", "moved", "unconfirmed", "full (paced)", "full"}[k]
}

// runRepair reconciles placement: after a ring change, for the blobs whose owners it changed;
// every RepairInterval, for the blobs not confirmed since the ring last changed; at start and
// every RepairFullInterval (paced), for every blob.
func (s *Server) runRepair(ctx context.Context) error {
	events, cancel := s.ring.Subscribe()
	defer cancel()
	var tick, fullTick <-chan time.Time
	if s.cfg.RepairInterval > 0 {
		t := time.NewTicker(s.cfg.RepairInterval)
		defer t.Stop()
		tick = t.C
	}
	if s.cfg.RepairFullInterval > 0 {
		t := time.NewTicker(s.cfg.RepairFullInterval)
		defer t.Stop()
		fullTick = t.C
	}
	s.kickRepair(repairFull) // once at start: this origin may have been down while blobs changed owners
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			// Any change of members or health voids every confirmation: a member back from a
			// flap may have come back without its blobs.
			s.ringEpoch.Add(1)
			s.log.Info("ring member changed", "member", ev.Member, "healthy", ev.Healthy,
				"joined", ev.Joined, "left", ev.Left)
			s.kickRepair(repairMoved)
		case <-tick:
			s.kickRepair(repairUnconfirmed)
		case <-fullTick:
			s.kickRepair(repairFullPaced)
		case <-s.repairKick:
			if k := repairKind(s.repairWant.Swap(0)); k > 0 {
				if err := s.repair(ctx, k); err != nil && ctx.Err() == nil {
					s.log.Warn("repair", "kind", k, "err", err)
				}
			}
		}
	}
}

// kickRepair asks runRepair for a repair of at least kind k. A larger request stays until it
// runs.
func (s *Server) kickRepair(k repairKind) {
	for {
		old := s.repairWant.Load()
		if old >= int32(k) || s.repairWant.CompareAndSwap(old, int32(k)) {
			break
		}
	}
	select {
	case s.repairKick <- struct{}{}:
	default:
	}
}

// Repair checks that every blob in the store is on all of its current owners and copies it to
// those that lack it (through durable replicate tasks). It returns how it went, not whether
// every copy succeeded: failed copies are retried by the queue.
func (s *Server) Repair(ctx context.Context) error { return s.repair(ctx, repairFull) }

// placement is everything a blob's owners depend on: the ring's members, which of them are
// healthy, and R. Owners are computed from it locally (rendezvous hashing), so the owners a
// blob had under an earlier placement are known without asking anyone.
type placement struct {
	members  []string // every member, sorted
	healthy  []string // the healthy ones, sorted
	replicas int
}

// currentPlacement reads the ring's placement. Members and R are read separately, so the read
// is repeated until the members did not change in between.
func (s *Server) currentPlacement() placement {
	for {
		before := s.ring.Members()
		replicas := s.ring.Replicas()
		after := s.ring.Members()
		p := placement{replicas: replicas}
		same := len(before) == len(after)
		for i, m := range after {
			same = same && before[i].Addr == m.Addr
			p.members = append(p.members, m.Addr)
			if m.Healthy {
				p.healthy = append(p.healthy, m.Addr)
			}
		}
		if same {
			return p
		}
	}
}

// owners is ring.Ring.Owners under p: the first R healthy members in rank order, the healthy
// ones when fewer, the first R members when none is healthy.
func (p *placement) owners(key string) []string {
	want := min(p.replicas, len(p.members))
	if len(p.healthy) == 0 {
		return ring.Rank(key, p.members)[:want]
	}
	rank := ring.Rank(key, p.healthy)
	return rank[:min(want, len(rank))]
}

func (p *placement) equal(q *placement) bool {
	return p.replicas == q.replicas && slices.Equal(p.members, q.members) && slices.Equal(p.healthy, q.healthy)
}

// confirmations are the blobs every owner was seen to hold, under one ring epoch (the count of
// ring events runRepair received) and placement, with when they were: a periodic pass skips
// those confirmed within the TTL (repair_confirm_ttl). Any ring event or placement change voids
// them all; so does, for one blob, this origin removing its copy (a GC delete here; a pass
// drops those the store no longer holds) or an owner answering that it lacks it. A copy an
// owner lost silently (its own cleanup or GC, a manual rm) is asked about again once the TTL
// ran out. They are not kept across restarts (the pass at start checks everything anyway).
// Keys are SHA-256 digests' 32 bytes; a blob of another algorithm is never confirmed. Safe for
// concurrent use: the GC's deletes forget blobs while a pass runs.
type confirmations struct {
	now func() time.Time // time.Now unless a test sets it

	mu    sync.Mutex
	epoch uint64
	place *placement
	set   map[[32]byte]time.Time // when each was confirmed
}

func (c *confirmations) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// under empties c unless it is of epoch and placement p.
func (c *confirmations) under(epoch uint64, p *placement) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.set != nil && c.epoch == epoch && c.place != nil && c.place.equal(p) {
		return
	}
	c.epoch, c.place, c.set = epoch, p, map[[32]byte]time.Time{}
}

// fresh says whether k was confirmed less than ttl ago.
func (c *confirmations) fresh(k [32]byte, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.set[k]
	return ok && c.clock().Sub(at) < ttl
}

// add confirms keys now.
func (c *confirmations) add(keys [][32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock()
	for _, k := range keys {
		c.set[k] = now
	}
}

// forget drops d's confirmation.
func (c *confirmations) forget(d digest.Digest) {
	if k, ok := confirmKey(d); ok {
		c.mu.Lock()
		delete(c.set, k)
		c.mu.Unlock()
	}
}

// retain drops every confirmation not in held (what the store holds).
func (c *confirmations) retain(held map[[32]byte]struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.set {
		if _, ok := held[k]; !ok {
			delete(c.set, k)
		}
	}
}

func confirmKey(d digest.Digest) ([32]byte, bool) {
	var k [32]byte
	if d.Algorithm() != digest.SHA256 {
		return k, false
	}
	n, err := hex.Decode(k[:], []byte(d.Encoded()))
	return k, err == nil && n == len(k)
}

// repair makes sure the blobs in the store are on their owners, copying them (through durable
// replicate tasks) to owners that lack them. repairMoved asks only the owners a blob gained
// since the placement of the last complete repair, so a ring change costs requests for what it
// moved, not for everything held (the owners a blob kept were checked before, or got it when it
// was uploaded); repairUnconfirmed asks every owner of the blobs not confirmed under the
// current epoch, so a periodic pass on a stable ring costs requests for the new blobs only;
// the full kinds ask every owner of every blob. A blob all of whose other owners answered that
// they hold it is confirmed (moved passes confirm nothing). Owners that cannot be reached are
// skipped: their return is a ring change of its own.
func (s *Server) repair(ctx context.Context, kind repairKind) error {
	s.repairMu.Lock()
	defer s.repairMu.Unlock()
	cur := s.currentPlacement()
	epoch := s.ringEpoch.Load()
	prev := s.repaired
	if kind == repairMoved && prev != nil && prev.equal(&cur) {
		return nil
	}
	if prev == nil {
		kind = max(kind, repairUnconfirmed) // nothing to compute what moved from
	}
	s.confirmed.under(epoch, &cur)
	var pace *rate.Limiter
	if kind == repairFullPaced && s.cfg.RepairFullRate > 0 {
		pace = rate.NewLimiter(rate.Limit(s.cfg.RepairFullRate), 1)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	var queued, moved, asked, skipped atomic.Int64
	var mu sync.Mutex
	var confirmed [][32]byte
	list := s.store.List()
	held := make(map[[32]byte]struct{}, len(list))
	for _, info := range list {
		if k, ok := confirmKey(info.Digest); ok {
			held[k] = struct{}{}
		}
	}
	s.confirmed.retain(held) // a copy removed here since (cleanup, eviction): asked about anew
	for _, info := range list {
		d := info.Digest
		key, confirmable := confirmKey(d)
		if kind == repairUnconfirmed && confirmable && s.confirmed.fresh(key, s.cfg.RepairConfirmTTL) {
			skipped.Add(1)
			continue
		}
		targets := cur.owners(d.String())
		if kind == repairMoved {
			before := prev.owners(d.String())
			targets = slices.DeleteFunc(targets, func(o string) bool { return slices.Contains(before, o) })
		}
		targets = slices.DeleteFunc(targets, func(o string) bool { return o == s.self })
		if len(targets) == 0 {
			if kind != repairMoved && confirmable {
				mu.Lock()
				confirmed = append(confirmed, key) // no other owner: nothing to ask
				mu.Unlock()
			}
			continue
		}
		moved.Add(1)
		ns, err := s.namespaceOf(d)
		if err != nil {
			continue // not a blob this origin can attribute; nothing to repair with
		}
		ns = firstLine(ns)
		g.Go(func() error {
			all := true
			for _, o := range targets {
				if pace != nil {
					if err := pace.Wait(gctx); err != nil {
						return err
					}
				}
				asked.Add(1)
				_, err := s.peer(o).StatLocal(gctx, ns, d)
				if err == nil {
					continue
				}
				all = false
				if !client.IsNotFound(err) {
					continue // unreachable: the member's own return triggers repair
				}
				s.confirmed.forget(d)
				queued.Add(1)
				if err := s.enqueue(newTask(kindReplicate, ns, d, o, time.Time{}), d); err != nil {
					return err
				}
			}
			if all && kind != repairMoved && confirmable {
				mu.Lock()
				confirmed = append(confirmed, key)
				mu.Unlock()
			}
			return nil
		})
	}
	err := g.Wait()
	if s.ringEpoch.Load() == epoch {
		// Not confirmed under a ring that changed during the pass: the next pass asks again.
		s.confirmed.add(confirmed)
	}
	switch n := queued.Load(); {
	case kind == repairMoved:
		s.log.Info("repair after a ring change", "blobs_moved", moved.Load(), "copies_queued", n)
	case n > 0:
		s.log.Info("repair queued copies", "kind", kind, "count", n)
	}
	s.log.Debug("repair pass", "kind", kind, "owner_requests", asked.Load(), "skipped_confirmed", skipped.Load(), "copies_queued", queued.Load())
	if err == nil && ctx.Err() == nil {
		s.repaired = &cur
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
