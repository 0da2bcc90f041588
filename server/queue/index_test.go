package queue

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// fill queues n tasks of kind "later", due in an hour, and due tasks of kind "now", in batches
// of one transaction each (one fsync per batch rather than per task).
func fill(tb testing.TB, q *Queue, n, due int, at time.Time) {
	tb.Helper()
	const batch = 10_000
	put := func(kind string, i int, nb time.Time) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			t := Task{Kind: kind, Key: fmt.Sprintf("%08d", i), NotBefore: nb, Created: at}
			return putTask(tx, t, tx.Bucket(tasksBucket).Get([]byte(t.ID())))
		}
	}
	for i := 0; i < n; i += batch {
		require.NoError(tb, q.update(func(tx *bolt.Tx) error {
			for j := i; j < min(i+batch, n); j++ {
				if err := put("later", j, at.Add(time.Hour+time.Duration(j)*time.Millisecond))(tx); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	require.NoError(tb, q.update(func(tx *bolt.Tx) error {
		for j := range due {
			if err := put("now", j, at.Add(-time.Duration(j)*time.Second))(tx); err != nil {
				return err
			}
		}
		return nil
	}))
}

// scanDue is Due as it was before the index (the whole tasks bucket read and decoded on every
// call), kept as the benchmarks' baseline.
func (q *Queue) scanDue(now time.Time, limit int) ([]Task, time.Time, map[string]int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Task
	var next time.Time
	counts := map[string]int{}
	err := q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(tasksBucket).ForEach(func(k, v []byte) error {
			var t Task
			if json.Unmarshal(v, &t) != nil {
				counts[KindCorrupt]++
				return nil
			}
			counts[t.Kind]++
			if q.running[string(k)] {
				return nil
			}
			if t.NotBefore.After(now) {
				if next.IsZero() || t.NotBefore.Before(next) {
					next = t.NotBefore
				}
				return nil
			}
			if len(out) < limit {
				out = append(out, t)
			}
			return nil
		})
	})
	return out, next, counts, err
}

// BenchmarkDue is the runner's due scan over a queue of n tasks none of which is due, as it
// was (scan) and as it is (index).
func BenchmarkDue(b *testing.B) {
	now := time.Now()
	for _, n := range []int{100, 100_000} {
		q, err := Open(filepath.Join(b.TempDir(), "q.db"))
		require.NoError(b, err)
		fill(b, q, n, 0, now)
		for _, impl := range []struct {
			name string
			due  func(time.Time, int) ([]Task, time.Time, map[string]int, error)
		}{{"scan", q.scanDue}, {"index", q.Due}} {
			b.Run(fmt.Sprintf("%s/queued=%d", impl.name, n), func(b *testing.B) {
				for b.Loop() {
					out, next, counts, err := impl.due(now, 4)
					if err != nil || len(out) != 0 || next.IsZero() || counts["later"] != n {
						b.Fatalf("due: %d tasks, next %v, counts %v, err %v", len(out), next, counts, err)
					}
				}
			})
		}
		require.NoError(b, q.Close())
	}
}

// The index hands out due tasks in due order, at most limit, skips those held by workers, and
// reports the next due time; it agrees with the full scan on what is due.
func TestDueFollowsIndex(t *testing.T) {
	t.Parallel()
	q, err := Open(filepath.Join(t.TempDir(), "q.db"))
	require.NoError(t, err)
	defer func() { require.NoError(t, q.Close()) }()
	now := time.Now()
	fill(t, q, 50, 5, now)

	held, next, counts, err := q.Due(now, 3)
	require.NoError(t, err)
	require.Equal(t, map[string]int{"later": 50, "now": 5}, counts)
	require.Equal(t, []string{"00000004", "00000003", "00000002"}, keys(held), "earliest first")
	require.False(t, next.After(now), "due tasks were left for lack of room: next is now or earlier")

	got, next, _, err := q.Due(now, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"00000001", "00000000"}, keys(got), "those held by workers are skipped")
	require.WithinDuration(t, now.Add(time.Hour), next, time.Millisecond)

	for _, tk := range got {
		require.NoError(t, q.Done(tk))
	}
	_, _, counts, err = q.Due(now, 10)
	require.NoError(t, err)
	require.Equal(t, map[string]int{"later": 50, "now": 3}, counts)

	// Retry moves a task's index entry with its due time; Add with an earlier time too.
	for _, tk := range held {
		q.Release(tk)
	}
	first, _, _, err := q.Due(now.Add(2*time.Hour), 1)
	require.NoError(t, err)
	require.Equal(t, []string{"00000004"}, keys(first))
	require.NoError(t, q.Retry(first[0], fmt.Errorf("later"), now.Add(3*time.Hour)))
	_, err = q.Add(Task{Kind: "later", Key: "00000049", NotBefore: now.Add(-time.Minute)})
	require.NoError(t, err)
	got, _, _, err = q.Due(now, 10)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"00000003", "00000002", "00000049"}, keys(got))
	q.mu.Lock()
	want, _, wantCounts, err := q.scanDueLocked(now)
	q.mu.Unlock()
	require.NoError(t, err)
	require.Empty(t, want, "the scan agrees: nothing else is due")
	require.Equal(t, wantCounts, map[string]int{"later": 50, "now": 3})
	requireIndexComplete(t, q)
}

func (q *Queue) scanDueLocked(now time.Time) ([]Task, time.Time, map[string]int, error) {
	q.mu.Unlock()
	defer q.mu.Lock()
	return q.scanDue(now, 1<<30)
}

func keys(ts []Task) []string {
	out := []string{}
	for _, t := range ts {
		out = append(out, t.Key)
	}
	return out
}

// requireIndexComplete checks that every queued record that decodes has exactly its index
// entry, and nothing else is indexed.
func requireIndexComplete(t *testing.T, q *Queue) {
	t.Helper()
	require.NoError(t, q.db.View(func(tx *bolt.Tx) error {
		want := map[string]bool{}
		require.NoError(t, tx.Bucket(tasksBucket).ForEach(func(k, v []byte) error {
			var tk Task
			if json.Unmarshal(v, &tk) == nil {
				want[string(dueKey(tk.NotBefore, k))] = true
			}
			return nil
		}))
		got := map[string]bool{}
		require.NoError(t, tx.Bucket(dueBucket).ForEach(func(k, _ []byte) error {
			got[string(k)] = true
			return nil
		}))
		require.Equal(t, want, got)
		return nil
	}))
}

// A queue file written before the index existed (tasks and parked buckets only) is indexed
// when it is opened: its due tasks are handed out, the others counted and waited for.
func TestOpenIndexesFileWithoutIndex(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	now := time.Now()
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		tasks, err := tx.CreateBucket(tasksBucket)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket(parkedBucket); err != nil {
			return err
		}
		for i, nb := range []time.Time{{}, now.Add(-time.Minute), now.Add(time.Hour)} {
			tk := Task{Kind: "k", Key: fmt.Sprint(i), NotBefore: nb}
			v, err := json.Marshal(tk)
			if err != nil {
				return err
			}
			if err := tasks.Put([]byte(tk.ID()), v); err != nil {
				return err
			}
		}
		return tasks.Put([]byte("k\x00bad"), []byte("{not json"))
	}))
	require.NoError(t, db.Close())

	q, err := Open(path)
	require.NoError(t, err)
	defer func() { require.NoError(t, q.Close()) }()
	got, next, counts, err := q.Due(now, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"0", "1"}, keys(got))
	require.WithinDuration(t, now.Add(time.Hour), next, time.Millisecond)
	require.Equal(t, map[string]int{"k": 3, KindCorrupt: 1}, counts)
	requireIndexComplete(t, q)
}

// A file written by a program that does not keep the index (an older version, after a
// downgrade) is indexed again at the next open: tasks it added are found, tasks it removed are
// not handed out.
func TestOpenReindexesAfterForeignWrite(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	q, err := Open(path)
	require.NoError(t, err)
	for _, k := range []string{"kept", "removed"} {
		_, err := q.Add(Task{Kind: "k", Key: k})
		require.NoError(t, err)
	}
	require.NoError(t, q.Close())

	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		tasks := tx.Bucket(tasksBucket)
		if err := tasks.Delete([]byte("k\x00removed")); err != nil {
			return err
		}
		v, err := json.Marshal(Task{Kind: "k", Key: "added"})
		if err != nil {
			return err
		}
		return tasks.Put([]byte("k\x00added"), v)
	}))
	require.NoError(t, db.Close())

	q, err = Open(path)
	require.NoError(t, err)
	defer func() { require.NoError(t, q.Close()) }()
	got, _, counts, err := q.Due(time.Now(), 10)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"kept", "added"}, keys(got))
	require.Equal(t, map[string]int{"k": 2}, counts)
	requireIndexComplete(t, q)
}

// A record damaged after it was indexed is counted as corrupt and never handed out, without
// stopping the tasks behind it; queuing the task again replaces it, and the index entry it
// leaves behind is dropped.
func TestDamagedIndexedRecord(t *testing.T) {
	t.Parallel()
	q, err := Open(filepath.Join(t.TempDir(), "q.db"))
	require.NoError(t, err)
	defer func() { require.NoError(t, q.Close()) }()
	now := time.Now()
	_, err = q.Add(Task{Kind: "k", Key: "a", NotBefore: now.Add(-2 * time.Minute)})
	require.NoError(t, err)
	_, err = q.Add(Task{Kind: "k", Key: "b", NotBefore: now.Add(-time.Minute)})
	require.NoError(t, err)
	require.NoError(t, q.update(func(tx *bolt.Tx) error {
		return tx.Bucket(tasksBucket).Put([]byte("k\x00a"), []byte("{damaged"))
	}))

	got, _, counts, err := q.Due(now, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"b"}, keys(got))
	require.Equal(t, map[string]int{"k": 1, KindCorrupt: 1}, counts)
	q.Release(got[0])

	added, err := q.Add(Task{Kind: "k", Key: "a", NotBefore: now.Add(-3 * time.Minute)})
	require.NoError(t, err)
	require.False(t, added, "the damaged record is replaced, not added beside it")
	got, _, counts, err = q.Due(now, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, keys(got))
	require.Equal(t, map[string]int{"k": 2}, counts)
	requireIndexComplete(t, q)
}
