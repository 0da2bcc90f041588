package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
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

// recording stands in for a role that runs until told to stop: it logs when it was told and
// when it had stopped (closing the real server it replaces).
type recording struct {
	real server
	role Role
	log  *events
}

type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(what string, r Role) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, what+" "+string(r))
}

func (r recording) Run(ctx context.Context) error {
	<-ctx.Done()
	r.log.add("stop", r.role)
	err := r.real.Close()
	r.log.add("stopped", r.role)
	return err
}

func (r recording) Close() error { return r.real.Close() }

// Close stops clients before the servers they call: no role of a tier is told to stop before
// every role of the tiers before it has stopped.
func TestCloseStopsInTiers(t *testing.T) {
	t.Parallel()
	c, err := New(Spec{Dir: t.TempDir(), Origins: 1, BuildIndexes: 1, Proxies: 1, Agents: 2}, Deps{})
	require.NoError(t, err)
	var ev events
	for _, m := range c.order {
		m.srv = recording{real: m.srv, role: m.role, log: &ev}
	}
	require.NoError(t, c.Start())
	require.NoError(t, c.Close())

	tier := map[string]int{}
	for i, rs := range closeTiers {
		for _, r := range rs {
			tier[string(r)] = i
		}
	}
	require.Len(t, ev.log, 2*len(c.order), "every role was told to stop and stopped: %q", ev.log)
	for i, e := range ev.log {
		what, role, _ := strings.Cut(e, " ")
		if what != "stop" {
			continue
		}
		for _, later := range ev.log[i+1:] {
			w, r, _ := strings.Cut(later, " ")
			require.False(t, w == "stopped" && tier[r] < tier[role], "%s stopped after %s was told to stop: %q", r, role, ev.log)
		}
	}
}
