package origin

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// One digest's lock excludes, another digest's does not wait for it, and nothing is left in
// the map once every holder let go.
func TestDigestLocks(t *testing.T) {
	var l digestLocks
	a, b := digest.FromString("a"), digest.FromString("b")
	unlockA := l.lock(a)
	l.lock(b)() // a different digest: not blocked by a's holder

	got := make(chan struct{})
	go func() {
		defer close(got)
		l.lock(a)()
	}()
	// The waiter registers before it blocks; it must not get a while a is held.
	require.Eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.m[a] != nil && l.m[a].refs == 2
	}, 10*time.Second, time.Millisecond)
	select {
	case <-got:
		t.Fatal("a second holder got a's lock while the first held it")
	default:
	}
	unlockA()
	<-got
	require.Zero(t, l.held(), "every lock released and forgotten")
}
