package tagstore

import (
	"errors"
	"sync"

	"github.com/hashicorp/raft"
)

// closingStable is Raft's stable store (current term, last vote) with a Close that waits for
// calls in flight and makes later writes no-ops.
//
// Why: raft's network transport processes heartbeats on its own goroutines, outside the Raft
// loop that Shutdown stops and waits for. A heartbeat that passed raft's shutdown check just
// before Shutdown can still persist a new term after it, and raft panics when that write fails
// ("failed to save current term: database not open"), taking the whole process down during an
// orderly stop. Dropping such a write is safe: it is as if the heartbeat had arrived after the
// node stopped, and a heartbeat carries no vote and no entries.
type closingStable struct {
	mu     sync.RWMutex
	closed bool
	s      raft.StableStore
}

func (c *closingStable) Set(key, val []byte) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil
	}
	return c.s.Set(key, val)
}

func (c *closingStable) Get(key []byte) ([]byte, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil, errStableClosed
	}
	return c.s.Get(key)
}

func (c *closingStable) SetUint64(key []byte, val uint64) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil
	}
	return c.s.SetUint64(key, val)
}

func (c *closingStable) GetUint64(key []byte) (uint64, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, errStableClosed
	}
	return c.s.GetUint64(key)
}

// close waits for the calls in flight; the underlying store may be closed once it returns.
func (c *closingStable) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

var errStableClosed = errors.New("stable store closed")

// Interface guards
var _ raft.StableStore = (*closingStable)(nil)
