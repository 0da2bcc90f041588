package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// failing stands in for a role whose Run fails at once (a listener that breaks, a loop that
// gives up); it releases the real server it replaces.
type failing struct{ real server }

var errBoom = errors.New("boom")

func (f failing) Run(context.Context) error { return errors.Join(errBoom, f.real.Close()) }
func (f failing) Close() error              { return f.real.Close() }

// A role that fails while running ends WaitReady and Run with its error, named, and the other
// roles are stopped.
func TestRoleFailureEndsRun(t *testing.T) {
	t.Parallel()
	c, err := New(Spec{Dir: t.TempDir(), Origins: 1, Agents: 1}, Deps{})
	require.NoError(t, err)
	c.members[Agent][0].srv = failing{real: c.members[Agent][0].srv}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	<-c.Failed()
	require.ErrorIs(t, c.WaitReady(ctx), errBoom, "waiting ends with the failure")
	err = <-errc
	require.ErrorIs(t, err, errBoom)
	require.ErrorContains(t, err, "agent 0")
	require.ErrorIs(t, c.Err(), errBoom)
	require.False(t, c.Running(Origin, 0), "the other roles were stopped")
	require.False(t, c.Running(Tracker, 0))
}
