package origin

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/queue"
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

// Every touch renews the check of the blob's backend object: a touch while an earlier touch's
// task waits, or while it runs, leaves a task in the queue due touch_hold after itself at the
// earliest (the queue keeps the earlier due time of a task added twice, and removes a running
// task when it finishes, so one key per blob lost the later touch).
func TestTouchTaskRenews(t *testing.T) {
	q, err := queue.Open(filepath.Join(t.TempDir(), "queue.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = q.Close() })
	d := digest.FromString("touched")
	const hold = time.Minute
	// latest is the due time of the last task the queue would hand out for d.
	latest := func() time.Time {
		tasks, err := q.All()
		require.NoError(t, err)
		var last time.Time
		for _, tk := range tasks {
			if tk.NotBefore.After(last) {
				last = tk.NotBefore
			}
		}
		return last
	}
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for i, at := range []time.Time{t0, t0.Add(hold / 10), t0.Add(hold / 2)} {
		_, err := q.Add(touchTask("team/app", d, at, hold))
		require.NoError(t, err)
		require.False(t, latest().Before(at.Add(hold)), "touch %d", i)
	}

	// The first task is running when another touch comes; it then finishes.
	running, _, _, err := q.Due(t0.Add(hold*5/4), 10)
	require.NoError(t, err)
	require.NotEmpty(t, running)
	again := t0.Add(hold * 5 / 4)
	_, err = q.Add(touchTask("team/app", d, again, hold))
	require.NoError(t, err)
	for _, tk := range running {
		require.NoError(t, q.Done(tk))
	}
	require.False(t, latest().Before(again.Add(hold)), "the touch while a task ran")
}
