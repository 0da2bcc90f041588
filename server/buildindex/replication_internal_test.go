package buildindex

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// An older item of a tag in flight is cancelled when a newer one comes to wait, and the newer
// one then gets the tag; items of other tags never wait on each other.
func TestTagLocksPreemptOlderItems(t *testing.T) {
	t.Parallel()
	var l tagLocks
	ctx := t.Context()
	old, releaseOld, err := l.acquire(ctx, "team/app:v1", 5)
	require.NoError(t, err)

	other, releaseOther, err := l.acquire(ctx, "team/app:v2", 1)
	require.NoError(t, err, "another tag does not wait")
	require.NoError(t, other.Err())

	got := make(chan context.Context, 1)
	go func() {
		newer, release, err := l.acquire(ctx, "team/app:v1", 9)
		if err != nil {
			close(got)
			return
		}
		got <- newer
		release()
	}()
	select {
	case <-old.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a newer item waiting did not cancel the older one in flight")
	}
	select {
	case <-got:
		t.Fatal("the newer item got the tag before the older one released it")
	default:
	}
	releaseOld()
	newer, ok := <-got
	require.True(t, ok)
	require.NotNil(t, newer)
	releaseOther()

	// An older item that comes to wait does not cancel a newer one.
	cur, release, err := l.acquire(ctx, "team/app:v1", 12)
	require.NoError(t, err)
	wctx, cancel := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() { _, _, err := l.acquire(wctx, "team/app:v1", 3); waited <- err }()
	time.Sleep(20 * time.Millisecond) // let it wait; the assertion below holds either way
	require.NoError(t, cur.Err(), "an older waiter leaves the newer holder alone")
	cancel()
	require.ErrorIs(t, <-waited, context.Canceled)
	release()

	l.mu.Lock()
	defer l.mu.Unlock()
	require.Empty(t, l.m, "no entries are left behind")
}
