package tagstore

import (
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// fsm adapts the Store to raft.FSM. It holds no state of its own: each method forwards to the
// Store. Raft calls Apply, Snapshot, Restore and StoreConfiguration from one goroutine, never
// concurrently with each other; Persist of a snapshot runs concurrently with later Applies.
type fsm struct{ s *Store }

// Apply applies one committed command. The state and the applied index change together under
// the write lock, so a reader (or Export) never sees one without the other; the change feed
// and waiting readers are told after the lock is released.
func (f fsm) Apply(l *raft.Log) any {
	s := f.s
	res, changes := f.applyLocked(l)
	s.feed.publish(changes...)
	s.signalApplied()
	return res
}

func (f fsm) applyLocked(l *raft.Log) (*applyResult, []Change) {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock() // also when dispatch panics on an unknown command
	res, changes := s.dispatch(l)
	s.setApplied(l.Index, l.Term)
	s.m.setCounts(s.st)
	return res, changes
}

// StoreConfiguration is called for each committed configuration entry. The Store only notes
// the index, so that "applied" covers every entry a linearizable read may wait for.
func (f fsm) StoreConfiguration(index uint64, _ raft.Configuration) {
	s := f.s
	s.mu.Lock()
	s.setApplied(index, 0)
	s.mu.Unlock()
	s.signalApplied()
}

// Snapshot captures the state in O(1) (copy-on-write B-trees); Persist does the I/O.
func (f fsm) Snapshot() (raft.FSMSnapshot, error) {
	s := f.s
	s.mu.Lock()
	snap := &fsmSnapshot{st: s.st.clone(), index: s.applied.Load()}
	s.mu.Unlock()
	return snap, nil
}

// Restore replaces the whole state with a snapshot's. The new state is built aside and
// swapped in under the lock, so a reader sees the old state or the new one, never a mix.
func (f fsm) Restore(rc io.ReadCloser) error {
	defer func() { _ = rc.Close() }() // read side: the snapshot is read already, or its error returned
	st, index, err := readSnapshot(rc)
	if err != nil {
		return fmt.Errorf("restore tag store: %w", err)
	}
	s := f.s
	s.mu.Lock()
	s.st = st
	// The term of the last command is unknown: a leader must apply a new one before it serves
	// linearizable reads (it does so on election anyway).
	s.appliedTerm.Store(0)
	s.setApplied(index, 0)
	s.m.setCounts(st)
	s.mu.Unlock()
	s.feed.reset(index)
	s.signalApplied()
	tags, links := st.counts()
	s.log.Info("restored tag store from snapshot", "index", index, "tags", tags, "links", links)
	return nil
}

// fsmSnapshot is a point-in-time clone of the state.
type fsmSnapshot struct {
	st    *state
	index uint64
}

// Persist streams the clone into the sink; it runs concurrently with Apply, which writes to
// the live state, not to this clone.
func (fs *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, fs.st, fs.index); err != nil {
		return errors.Join(fmt.Errorf("persist tag store snapshot: %w", err), sink.Cancel())
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("persist tag store snapshot: %w", err)
	}
	return nil
}

// Release drops the clone.
func (fs *fsmSnapshot) Release() { fs.st = nil }

// Interface guards
var (
	_ raft.FSM                = fsm{}
	_ raft.ConfigurationStore = fsm{}
	_ raft.FSMSnapshot        = (*fsmSnapshot)(nil)
)
