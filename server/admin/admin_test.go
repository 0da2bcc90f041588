package admin_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/admin"
)

// TestShared: callers at once share one call, later callers within the reuse period get its
// answer, and after the period the function is asked again.
func TestShared(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	release := make(chan struct{})
	fail := errors.New("not yet")
	ready := admin.Shared(func(context.Context) error {
		calls.Add(1)
		<-release
		return fail
	}, time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() { errs <- ready(t.Context()) })
	}
	require.Eventually(t, func() bool { return calls.Load() == 1 }, 10*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.ErrorIs(t, err, fail)
	}
	require.ErrorIs(t, ready(t.Context()), fail, "reused")
	require.EqualValues(t, 1, calls.Load(), "one call for eleven callers")

	var again atomic.Int32
	short := admin.Shared(func(context.Context) error { again.Add(1); return nil }, time.Nanosecond)
	require.NoError(t, short(t.Context()))
	time.Sleep(time.Millisecond)
	require.NoError(t, short(t.Context()))
	require.EqualValues(t, 2, again.Load(), "asked again once the period is over")
}

// TestSharedCallerGivesUp: a caller whose context ends gets its error; the call it started
// goes on for the others.
func TestSharedCallerGivesUp(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var sawCancel atomic.Bool
	ready := admin.Shared(func(ctx context.Context) error {
		select {
		case <-release:
		case <-ctx.Done():
			sawCancel.Store(true)
		}
		return nil
	}, time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, ready(ctx), context.Canceled)
	close(release)
	require.NoError(t, ready(t.Context()))
	require.False(t, sawCancel.Load(), "the first caller's cancel did not end the shared call")
}
