// Package ringtest provides an in-memory health checker for tests of code built on the ring
// package: tests decide which members are down and drive rounds with Ring.CheckNow.
package ringtest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/krakenctl/krakenctl/ring"
)

// ErrDown is what Checker returns for a member set down without a specific error.
var ErrDown = errors.New("ringtest: member down")

// Checker is a ring.Checker whose answers the test sets. Members are healthy until SetDown or
// SetError; checks of unknown members succeed. The zero value is ready to use, and all methods
// are safe for concurrent use.
type Checker struct {
	mu     sync.Mutex
	errs   map[string]error
	checks map[string]int
}

// SetDown makes checks of member fail with ErrDown.
func (c *Checker) SetDown(member string) {
	c.SetError(member, ErrDown)
}

// SetError makes checks of member fail with err; a nil err makes them succeed.
func (c *Checker) SetError(member string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.errs == nil {
		c.errs = make(map[string]error)
	}
	if err == nil {
		delete(c.errs, member)
		return
	}
	c.errs[member] = err
}

// SetUp makes checks of member succeed.
func (c *Checker) SetUp(member string) {
	c.SetError(member, nil)
}

// Checks returns how many times member has been checked.
func (c *Checker) Checks(member string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks[member]
}

// Check implements ring.Checker. It fails with ctx's error when ctx is already done.
func (c *Checker) Check(ctx context.Context, member string) error {
	c.mu.Lock()
	if c.checks == nil {
		c.checks = make(map[string]int)
	}
	c.checks[member]++
	err := c.errs[member]
	c.mu.Unlock()
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("check %s: %w", member, ctxErr)
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", member, err)
	}
	return nil
}

// Interface guards
var _ ring.Checker = (*Checker)(nil)
