package tagstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Linearizable reads use the read-index protocol (Raft thesis §6.4), with concurrent readers
// coalesced into rounds so one leadership confirmation serves them all:
//
//  1. The leader must have applied an entry of its current term. Until then its commit index
//     may lag entries an earlier leader committed. Every new leader applies a member-metadata
//     command at once (recording its API address), which makes it ready within one round trip.
//  2. The round notes the commit index: every write acknowledged before any reader of the
//     round arrived has an index at or below it.
//  3. VerifyLeader confirms, with a heartbeat round to a quorum, that no newer leader existed
//     when the index was noted (so no newer write can have been acknowledged elsewhere).
//  4. Each reader waits until this node has applied up to the index, then reads local state.
//
// Rounds run one at a time on one goroutine; readers that arrive while a round runs join the
// next, so the number of rounds per second stays at about one per heartbeat round trip however
// many readers there are.

// readRound is one leadership confirmation shared by the readers that joined it.
type readRound struct {
	done    chan struct{}
	index   uint64
	err     error
	readers int
}

// readIndex returns an index such that state applied up to it reflects every write
// acknowledged before the call. Only the leader can answer; a follower returns a
// *NotLeaderError.
func (s *Store) readIndex(ctx context.Context) (uint64, error) {
	if s.raft.State() != raft.Leader {
		return 0, s.notLeader()
	}
	s.readMu.Lock()
	r := s.pendingRead
	if r == nil {
		r = &readRound{done: make(chan struct{})}
		s.pendingRead = r
		select {
		case s.readKick <- struct{}{}:
		default: // a kick is already pending; the loop will take this round
		}
	}
	r.readers++
	s.readMu.Unlock()
	select {
	case <-r.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.closing:
		return 0, ErrClosed
	}
}

// runReads runs read-index rounds until the Store closes.
func (s *Store) runReads() {
	defer s.wg.Done()
	for {
		select {
		case <-s.closing:
			return
		case <-s.readKick:
		}
		s.readMu.Lock()
		r := s.pendingRead
		s.pendingRead = nil
		s.readMu.Unlock()
		if r == nil {
			continue
		}
		r.index, r.err = s.confirmLeadership()
		s.m.readBatches.Inc()
		s.m.readBatch.Observe(float64(r.readers))
		close(r.done)
	}
}

// confirmLeadership runs steps 1 to 3 of a read-index round.
func (s *Store) confirmLeadership() (uint64, error) {
	if s.raft.State() != raft.Leader {
		return 0, s.notLeader()
	}
	term := s.raft.CurrentTerm()
	if err := s.waitReady(term); err != nil {
		return 0, err
	}
	index := s.raft.CommitIndex()
	// s.wait, not Error(): Raft can leave a queued VerifyLeader unanswered when it shuts down.
	if err := s.wait(context.Background(), s.raft.VerifyLeader()); err != nil {
		if errors.Is(err, ErrClosed) {
			return 0, ErrClosed
		}
		return 0, s.notLeader()
	}
	if s.raft.CurrentTerm() != term {
		return 0, s.notLeader()
	}
	return index, nil
}

// waitReady waits until this node has applied a command of term (step 1), for at most
// ApplyTimeout.
func (s *Store) waitReady(term uint64) error {
	timer := time.NewTimer(s.cfg.ApplyTimeout)
	defer timer.Stop()
	for {
		ch := s.appliedSignal()
		if s.appliedTerm.Load() >= term {
			return nil
		}
		if s.raft.State() != raft.Leader || s.raft.CurrentTerm() != term {
			return s.notLeader()
		}
		select {
		case <-ch:
		case <-timer.C:
			return fmt.Errorf("%w: the new leader has not committed an entry of its term within %s", ErrUnavailable, s.cfg.ApplyTimeout)
		case <-s.closing:
			return ErrClosed
		}
	}
}

// waitApplied waits until this node's state reflects every entry up to index (step 4).
func (s *Store) waitApplied(ctx context.Context, index uint64) error {
	for {
		if s.applied.Load() >= index {
			return nil
		}
		ch := s.appliedSignal()
		if s.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return ErrClosed
		}
	}
}

// appliedSignal returns a channel closed the next time the applied index moves.
func (s *Store) appliedSignal() <-chan struct{} {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	if s.waitCh == nil {
		s.waitCh = make(chan struct{})
	}
	return s.waitCh
}

// setApplied records that the entry at index (of term, for commands; 0 otherwise) is
// reflected in the state. The FSM goroutine calls it with s.mu held for writing.
func (s *Store) setApplied(index, term uint64) {
	s.applied.Store(index)
	if term != 0 {
		s.appliedTerm.Store(term)
	}
	s.m.appliedIndex.Set(float64(index))
}

// signalApplied wakes everyone waiting for the applied index to move.
func (s *Store) signalApplied() {
	s.waitMu.Lock()
	if s.waitCh != nil {
		close(s.waitCh)
		s.waitCh = nil
	}
	s.waitMu.Unlock()
}

// beginRead makes a read at consistency c safe to serve from local state.
func (s *Store) beginRead(ctx context.Context, c Consistency) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if c == Stale {
		return nil
	}
	if err := ctx.Err(); err != nil {
		// Checked first: a round that completes at once would otherwise race with ctx.
		return err
	}
	index, err := s.readIndex(ctx)
	if err != nil {
		return err
	}
	return s.waitApplied(ctx, index)
}
