package origin

import (
	"path/filepath"
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

// The touch journal remembers touches across a reopen (a restart), says "cannot tell" for a
// cutoff before it started, and forgets touches older than touchRetention, moving its horizon
// with them so a cutoff that old is "cannot tell" rather than "not touched".
func TestTouchJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "touches.db")
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	j, err := openTouchJournal(path, start)
	require.NoError(t, err)
	d, other := digest.FromString("touched"), digest.FromString("never")
	at := start.Add(time.Hour)
	require.NoError(t, j.record(d, at))
	require.NoError(t, j.record(d, at.Add(-time.Minute)), "an older touch does not move it back")
	require.NoError(t, j.Close())

	j, err = openTouchJournal(path, at.Add(time.Hour)) // restarted: still knows since start
	require.NoError(t, err)
	defer func() { require.NoError(t, j.Close()) }()
	check := func(d digest.Digest, cutoff time.Time, touched, known bool) {
		t.Helper()
		gotT, gotK, err := j.touchedSince(d, cutoff)
		require.NoError(t, err)
		require.Equal(t, [2]bool{touched, known}, [2]bool{gotT, gotK}, "%s at %s", d, cutoff)
	}
	check(d, at, true, true)
	check(d, at.Add(time.Nanosecond), false, true)
	check(other, start, false, true)
	check(d, start.Add(-time.Second), true, false)
	check(other, start.Add(-time.Second), false, false)

	require.NoError(t, j.prune(at.Add(touchRetention+time.Minute)))
	check(d, at.Add(-time.Hour), false, false)
	check(d, at.Add(touchRetention+time.Minute), false, true)
	_, _, err = j.touchedSince(digest.SHA512.FromString("x"), at)
	require.Error(t, err)
}
