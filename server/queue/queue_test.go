package queue_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/server/queue"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, path string) *queue.Queue {
	t.Helper()
	q, err := queue.Open(path)
	require.NoError(t, err)
	return q
}

func TestQueueAddDueDone(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	q := open(t, path)
	now := time.Now()
	added, err := q.Add(queue.Task{Kind: "a", Key: "1", Payload: []byte(`{"x":1}`)})
	require.NoError(t, err)
	require.True(t, added)
	added, err = q.Add(queue.Task{Kind: "a", Key: "1"})
	require.NoError(t, err)
	require.False(t, added, "same kind and key is one task")
	_, err = q.Add(queue.Task{Kind: "b", Key: "1", NotBefore: now.Add(time.Hour)})
	require.NoError(t, err)

	due, next, counts, err := q.Due(now, 10)
	require.NoError(t, err)
	require.Len(t, due, 1)
	require.Equal(t, "a", due[0].Kind)
	require.JSONEq(t, `{"x":1}`, string(due[0].Payload))
	require.WithinDuration(t, now.Add(time.Hour), next, time.Second)
	require.Equal(t, map[string]int{"a": 1, "b": 1}, counts)

	again, _, _, err := q.Due(now, 10)
	require.NoError(t, err)
	require.Empty(t, again, "a running task is not handed out twice")

	require.NoError(t, q.Retry(due[0], errors.New("boom"), now.Add(time.Minute)))
	all, err := q.All()
	require.NoError(t, err)
	require.Len(t, all, 2)
	n, err := q.Len()
	require.NoError(t, err)
	require.Equal(t, 2, n)
	for _, tk := range all {
		if tk.Kind == "a" {
			require.Equal(t, 1, tk.Attempts)
			require.Equal(t, "boom", tk.LastError)
		}
	}
	// Durable: reopen and find both tasks.
	require.NoError(t, q.Close())
	q = open(t, path)
	defer func() { require.NoError(t, q.Close()) }()
	due, _, _, err = q.Due(now.Add(2*time.Minute), 10)
	require.NoError(t, err)
	require.Len(t, due, 1)
	require.Equal(t, 1, due[0].Attempts)
	require.NoError(t, q.Done(due[0]))
	all, err = q.All()
	require.NoError(t, err)
	require.Len(t, all, 1)
}

func TestRunnerRetriesUntilSuccessAndDropsPermanent(t *testing.T) {
	t.Parallel()
	q := open(t, filepath.Join(t.TempDir(), "q.db"))
	defer func() { require.NoError(t, q.Close()) }()
	var mu sync.Mutex
	attempts := map[string]int{}
	finished := make(chan string, 10)
	exec := func(ctx context.Context, tk queue.Task) error {
		mu.Lock()
		attempts[tk.Key]++
		n := attempts[tk.Key]
		mu.Unlock()
		switch tk.Key {
		case "flaky":
			if n < 3 {
				return errors.New("not yet")
			}
			return nil
		case "doomed":
			return fmt.Errorf("%w: never", queue.ErrPermanent)
		}
		return nil
	}
	r, err := queue.NewRunner(q, queue.RunnerConfig{Workers: 2, RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond}, exec,
		queue.RunnerDeps{Subsystem: "test", Finished: func(tk queue.Task, err error) { finished <- fmt.Sprintf("%s:%v", tk.Key, err != nil) }})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	for _, k := range []string{"flaky", "doomed", "easy"} {
		_, err := q.Add(queue.Task{Kind: "k", Key: k})
		require.NoError(t, err)
	}
	got := map[string]bool{}
	for range 3 {
		select {
		case f := <-finished:
			got[f] = true
		case <-time.After(20 * time.Second):
			t.Fatal("tasks did not finish")
		}
	}
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, map[string]bool{"flaky:false": true, "doomed:true": true, "easy:false": true}, got)
	mu.Lock()
	require.Equal(t, 3, attempts["flaky"])
	require.Equal(t, 1, attempts["doomed"], "a permanent failure is not retried")
	mu.Unlock()
	all, err := q.All()
	require.NoError(t, err)
	require.Empty(t, all)
}

// TestRunnerShutdownKeepsTasks: an attempt cut short by shutdown leaves its task queued, with
// no attempt counted, for the next start.
func TestRunnerShutdownKeepsTasks(t *testing.T) {
	t.Parallel()
	q := open(t, filepath.Join(t.TempDir(), "q.db"))
	defer func() { require.NoError(t, q.Close()) }()
	started := make(chan struct{})
	var once sync.Once
	exec := func(ctx context.Context, tk queue.Task) error {
		once.Do(func() { close(started) })
		<-ctx.Done()
		return ctx.Err()
	}
	var dropped atomic.Int32
	r, err := queue.NewRunner(q, queue.RunnerConfig{}, exec, queue.RunnerDeps{Subsystem: "test", Finished: func(queue.Task, error) { dropped.Add(1) }})
	require.NoError(t, err)
	_, err = q.Add(queue.Task{Kind: "k", Key: "slow"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	<-started
	cancel()
	require.NoError(t, <-done)
	all, err := q.All()
	require.NoError(t, err)
	require.Len(t, all, 1)
	require.Zero(t, all[0].Attempts)
	require.Zero(t, dropped.Load())
}

func TestBackoffGrowsAndCaps(t *testing.T) {
	t.Parallel()
	q := open(t, filepath.Join(t.TempDir(), "q.db"))
	defer func() { require.NoError(t, q.Close()) }()
	r, err := queue.NewRunner(q, queue.RunnerConfig{RetryInitial: time.Second, RetryMax: 8 * time.Second}, nil, queue.RunnerDeps{Subsystem: "test"})
	require.NoError(t, err)
	for attempt, base := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 10: 8 * time.Second} {
		d := r.Backoff(attempt)
		require.GreaterOrEqual(t, d, time.Duration(float64(base)*0.8), "attempt %d", attempt)
		require.LessOrEqual(t, d, time.Duration(float64(base)*1.2), "attempt %d", attempt)
	}
}

// A runner that parks keeps a permanent failure, durably, out of Due; Unpark queues exactly
// the tasks it selects again, with their attempts reset.
func TestRunnerParksPermanentFailuresUntilUnparked(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	q := open(t, path)
	var fail atomic.Bool
	fail.Store(true)
	ran := make(chan string, 16)
	r, err := queue.NewRunner(q, queue.RunnerConfig{Workers: 2, RetryInitial: time.Millisecond, Park: true}, func(_ context.Context, tk queue.Task) error {
		ran <- tk.Key
		if fail.Load() {
			return fmt.Errorf("%w: refused", queue.ErrPermanent)
		}
		return nil
	}, queue.RunnerDeps{})
	require.NoError(t, err)
	for _, k := range []string{"a", "b"} {
		_, err := q.Add(queue.Task{Kind: "k", Key: k})
		require.NoError(t, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-ran
	<-ran
	require.Eventually(t, func() bool {
		p, err := q.Parked()
		return err == nil && len(p) == 2
	}, 10*time.Second, 5*time.Millisecond)
	n, err := q.Len()
	require.NoError(t, err)
	require.Zero(t, n, "parked tasks leave the queue")
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, q.Close())

	// Parked survives a reopen, with the cause.
	q = open(t, path)
	defer func() { require.NoError(t, q.Close()) }()
	parked, err := q.Parked()
	require.NoError(t, err)
	require.Len(t, parked, 2)
	require.Contains(t, parked[0].LastError, "refused")
	require.Equal(t, 1, parked[0].Attempts)

	moved, err := q.Unpark(func(tk queue.Task) bool { return tk.Key == "b" })
	require.NoError(t, err)
	require.Equal(t, 1, moved)
	all, err := q.All()
	require.NoError(t, err)
	require.Len(t, all, 1)
	require.Equal(t, "b", all[0].Key)
	require.Zero(t, all[0].Attempts)
	parked, err = q.Parked()
	require.NoError(t, err)
	require.Len(t, parked, 1)
	require.Equal(t, "a", parked[0].Key)

	// Once the cause is fixed, the unparked task runs and leaves; the other stays parked.
	fail.Store(false)
	r, err = queue.NewRunner(q, queue.RunnerConfig{Park: true}, func(_ context.Context, tk queue.Task) error {
		ran <- tk.Key
		return nil
	}, queue.RunnerDeps{})
	require.NoError(t, err)
	ctx, cancel = context.WithCancel(t.Context())
	go func() { done <- r.Run(ctx) }()
	require.Equal(t, "b", <-ran)
	require.Eventually(t, func() bool { n, err := q.Len(); return err == nil && n == 0 }, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	parked, err = q.Parked()
	require.NoError(t, err)
	require.Len(t, parked, 1)
}

// A damaged record does not stop the queue: Due hands out the others and counts it, All and
// Parked leave it out.
func TestDamagedRecordIsSkipped(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	q := open(t, path)
	_, err := q.Add(queue.Task{Kind: "k", Key: "good"})
	require.NoError(t, err)
	require.NoError(t, q.Close())
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("tasks")).Put([]byte("k\x00bad"), []byte("{not json"))
	}))
	require.NoError(t, db.Close())

	q = open(t, path)
	defer func() { require.NoError(t, q.Close()) }()
	due, _, counts, err := q.Due(time.Now(), 10)
	require.NoError(t, err)
	require.Len(t, due, 1)
	require.Equal(t, "good", due[0].Key)
	require.Equal(t, 1, counts[queue.KindCorrupt])
	all, err := q.All()
	require.NoError(t, err)
	require.Len(t, all, 1)
}
