// Package queue is a durable task queue with retries, shared by the roles that must finish work
// they have acknowledged: the origin's write-back and replication, the build-index's tag
// write-back. Tasks live in a bbolt file (fsynced on every change), so a crash or restart resumes
// them; a Runner executes due tasks with a bounded number of workers and exponential backoff.
//
// Besides the tasks, the file holds an index of the queued tasks by due time and a count of
// them by kind, both written in the same transactions as the tasks, so that finding the due
// tasks reads only those (and the few held by workers or damaged), however many wait for
// later. A file written without the index, or last written by a program that does not keep it
// (an older version after a downgrade), is re-indexed once when it is opened.
package queue

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// KindCorrupt is the kind Due counts undecodable records under.
const KindCorrupt = "corrupt"

// ErrPermanent marks a task failure that retrying cannot fix; the Runner drops such a task.
// Executors wrap it: fmt.Errorf("%w: no backend", queue.ErrPermanent).
var ErrPermanent = errors.New("permanent failure")

var (
	tasksBucket  = []byte("tasks")
	parkedBucket = []byte("parked")
	// dueBucket indexes tasksBucket: key = dueStamp(NotBefore) + task ID, empty value.
	dueBucket = []byte("due")
	// kindsBucket counts tasksBucket's records by kind (the ID up to its first NUL): kind → 8
	// bytes, big-endian.
	kindsBucket = []byte("kinds")
	// metaBucket holds metaIndexedTx: the ID of the last write transaction that kept the index,
	// which tells at open whether anything else wrote the file since.
	metaBucket    = []byte("meta")
	metaIndexedTx = []byte("indexed_tx")
)

// Task is one unit of durable work. It stays in the queue until it succeeds or fails
// permanently. (Kind, Key) identifies it: adding the same task again keeps one entry.
type Task struct {
	Kind string `json:"kind"`
	// Key identifies the task within its kind, e.g. "<target>\x00<digest>".
	Key string `json:"key"`
	// Payload is the executor's data, opaque to the queue.
	Payload   json.RawMessage `json:"payload,omitempty"`
	Attempts  int             `json:"attempts"`
	NotBefore time.Time       `json:"not_before"`
	LastError string          `json:"last_error,omitempty"`
	Created   time.Time       `json:"created"`
}

// ID is the task's identity in the queue.
func (t Task) ID() string { return t.Kind + "\x00" + t.Key }

// Queue is a durable task queue in a bbolt file. It is safe for concurrent use.
type Queue struct {
	db *bolt.DB

	mu      sync.Mutex
	running map[string]bool // IDs handed out by Due and not yet finished
	// damaged holds the IDs of queued records found undecodable (at open, or when Due met
	// them): they are counted under KindCorrupt rather than their kind, and never handed out.
	damaged map[string]bool
	wake    chan struct{} // capacity 1: "something may have become due"
}

// Open opens (creating if needed) the queue file at path. Only one process may open it.
func Open(path string) (*Queue, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open queue %s: %w", path, err)
	}
	q := &Queue{db: db, running: map[string]bool{}, damaged: map[string]bool{}, wake: make(chan struct{}, 1)}
	if err := q.update(func(tx *bolt.Tx) error {
		fresh := tx.Bucket(metaBucket) == nil || tx.Bucket(dueBucket) == nil || tx.Bucket(kindsBucket) == nil
		for _, name := range [][]byte{tasksBucket, parkedBucket, dueBucket, kindsBucket, metaBucket} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		// The ID of the last committed write transaction: this transaction's own, less one.
		if last := uint64(tx.ID() - 1); fresh || indexedTx(tx) != last {
			return q.reindex(tx)
		}
		return nil
	}); err != nil {
		_ = db.Close() // the update's error is the one to report
		return nil, fmt.Errorf("open queue %s: %w", path, err)
	}
	return q, nil
}

// update runs fn in a write transaction that also records, in the same commit, that the index
// is current as of it.
func (q *Queue) update(fn func(tx *bolt.Tx) error) error {
	return q.db.Update(func(tx *bolt.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(tx.ID()))
		return tx.Bucket(metaBucket).Put(metaIndexedTx, v[:])
	})
}

func indexedTx(tx *bolt.Tx) uint64 {
	v := tx.Bucket(metaBucket).Get(metaIndexedTx)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// reindex rebuilds the due index and the kind counts from the tasks, noting the records that
// do not decode. It reads the whole queue, once, when the file is opened without a current
// index.
func (q *Queue) reindex(tx *bolt.Tx) error {
	for _, name := range [][]byte{dueBucket, kindsBucket} {
		if err := tx.DeleteBucket(name); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return err
		}
	}
	clear(q.damaged)
	due := tx.Bucket(dueBucket)
	counts := map[string]uint64{}
	if err := tx.Bucket(tasksBucket).ForEach(func(k, v []byte) error {
		counts[kindOf(k)]++
		var t Task
		if json.Unmarshal(v, &t) != nil {
			q.damaged[string(k)] = true
			return nil
		}
		return due.Put(dueKey(t.NotBefore, k), nil)
	}); err != nil {
		return err
	}
	kinds := tx.Bucket(kindsBucket)
	for kind, n := range counts {
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], n)
		if err := kinds.Put([]byte(kind), v[:]); err != nil {
			return err
		}
	}
	return nil
}

// kindOf is the kind part of a task ID.
func kindOf(id []byte) string {
	if i := bytes.IndexByte(id, 0); i >= 0 {
		return string(id[:i])
	}
	return string(id)
}

// dueStamp orders due times as bytes: the zero time (due at once) and anything before 1678
// first, then nanoseconds since 1970 with the sign bit flipped so that byte order is time
// order, anything after 2261 last.
func dueStamp(t time.Time) uint64 {
	switch {
	case t.IsZero() || t.Year() < 1678:
		return 0
	case t.Year() > 2261:
		return ^uint64(0)
	}
	return uint64(t.UnixNano()) ^ 1<<63
}

func dueKey(t time.Time, id []byte) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, dueStamp(t))
	return append(k, id...)
}

// putTask stores t in the tasks bucket with its index entry, replacing the entry of the record
// it overwrites (prev, when that decoded), and counts it when it is new.
func putTask(tx *bolt.Tx, t Task, prev []byte) error {
	id := []byte(t.ID())
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	due := tx.Bucket(dueBucket)
	if prev != nil {
		var old Task
		if json.Unmarshal(prev, &old) == nil {
			if err := due.Delete(dueKey(old.NotBefore, id)); err != nil {
				return err
			}
		}
		// An undecodable previous record's index entry, if any, is stale now: Due drops it.
	} else if err := addKind(tx, kindOf(id), 1); err != nil {
		return err
	}
	if err := tx.Bucket(tasksBucket).Put(id, v); err != nil {
		return err
	}
	return due.Put(dueKey(t.NotBefore, id), nil)
}

// deleteTask removes the queued record of id, if any, with its index entry and count, and
// returns the record it removed.
func deleteTask(tx *bolt.Tx, id []byte) ([]byte, error) {
	tasks := tx.Bucket(tasksBucket)
	prev := tasks.Get(id)
	if prev == nil {
		return nil, nil
	}
	prev = append([]byte(nil), prev...) // valid only until the delete below
	var old Task
	if json.Unmarshal(prev, &old) == nil {
		if err := tx.Bucket(dueBucket).Delete(dueKey(old.NotBefore, id)); err != nil {
			return nil, err
		}
	}
	if err := addKind(tx, kindOf(id), -1); err != nil {
		return nil, err
	}
	return prev, tasks.Delete(id)
}

func addKind(tx *bolt.Tx, kind string, delta int64) error {
	b := tx.Bucket(kindsBucket)
	var n uint64
	if v := b.Get([]byte(kind)); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	n = uint64(max(int64(n)+delta, 0))
	if n == 0 {
		return b.Delete([]byte(kind))
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], n)
	return b.Put([]byte(kind), v[:])
}

// Close closes the file. No other method may be called after it.
func (q *Queue) Close() error { return q.db.Close() }

// Add stores t durably (fsynced before it returns) and reports whether it is new. Adding a task
// that is already queued keeps the earlier due time.
func (q *Queue) Add(t Task) (bool, error) {
	if t.Created.IsZero() {
		t.Created = time.Now()
	}
	added, replaced := false, false
	err := q.update(func(tx *bolt.Tx) error {
		old := tx.Bucket(tasksBucket).Get([]byte(t.ID()))
		if old != nil {
			var prev Task
			if json.Unmarshal(old, &prev) == nil && !t.NotBefore.Before(prev.NotBefore) {
				return nil
			}
			t.Attempts = 0
			replaced = true
		} else {
			added = true
		}
		return putTask(tx, t, old)
	})
	if err != nil {
		return false, fmt.Errorf("enqueue %s %q: %w", t.Kind, t.Key, err)
	}
	if replaced {
		q.mu.Lock()
		delete(q.damaged, t.ID())
		q.mu.Unlock()
	}
	q.poke()
	return added, nil
}

func (q *Queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Due returns up to limit tasks whose time has come and that no worker holds, marking them
// running; the time the next task not handed out becomes due (zero if none; at or before now
// when due tasks were left for lack of room); and how many tasks of each kind the queue holds.
// It walks the due-time index from its start, so it reads the tasks that are due, those that
// workers hold and the damaged ones (all bounded), and one entry past now, whatever the
// queue holds for later.
func (q *Queue) Due(now time.Time, limit int) ([]Task, time.Time, map[string]int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Task
	var next time.Time
	var stale [][]byte
	counts := map[string]int{}
	nowStamp := dueStamp(now)
	err := q.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(kindsBucket).ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				counts[string(k)] = int(binary.BigEndian.Uint64(v))
			}
			return nil
		}); err != nil {
			return err
		}
		tasks := tx.Bucket(tasksBucket)
		c := tx.Bucket(dueBucket).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) < 8 {
				stale = append(stale, append([]byte(nil), k...))
				continue
			}
			stamp, id := binary.BigEndian.Uint64(k), k[8:]
			if q.running[string(id)] {
				continue
			}
			v := tasks.Get(id)
			if v == nil {
				stale = append(stale, append([]byte(nil), k...))
				continue
			}
			var t Task
			if json.Unmarshal(v, &t) != nil {
				// A record this code did not write (a damaged file): counted, never handed
				// out, and it does not stop the tasks around it.
				q.damaged[string(id)] = true
				continue
			}
			if dueStamp(t.NotBefore) != stamp {
				// Left behind by a record that was damaged when it was replaced.
				stale = append(stale, append([]byte(nil), k...))
				continue
			}
			if stamp > nowStamp || len(out) == limit {
				next = t.NotBefore
				break
			}
			out = append(out, t)
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, nil, fmt.Errorf("scan queue: %w", err)
	}
	for id := range q.damaged {
		if k := kindOf([]byte(id)); counts[k] > 0 {
			counts[k]--
			if counts[k] == 0 {
				delete(counts, k)
			}
		}
		counts[KindCorrupt]++
	}
	for _, t := range out {
		q.running[t.ID()] = true
	}
	if len(stale) > 0 {
		// Dropped after the read, so that a scan stays a read transaction but a stale entry
		// is read at most once more. Best effort: a failure leaves them for the next scan.
		_ = q.update(func(tx *bolt.Tx) error {
			due := tx.Bucket(dueBucket)
			for _, k := range stale {
				if err := due.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return out, next, counts, nil
}

// Done removes a finished task (success or permanent failure) and releases it.
func (q *Queue) Done(t Task) error {
	defer q.Release(t)
	err := q.update(func(tx *bolt.Tx) error {
		_, err := deleteTask(tx, []byte(t.ID()))
		return err
	})
	if err != nil {
		return fmt.Errorf("finish task %s %q: %w", t.Kind, t.Key, err)
	}
	q.forget(t.ID())
	return nil
}

// forget drops id from the damaged set: its record is gone or rewritten.
func (q *Queue) forget(id string) {
	q.mu.Lock()
	delete(q.damaged, id)
	q.mu.Unlock()
}

// maxLastError bounds a task's LastError: the causes of failures may quote what a remote
// answered, and every byte of it is stored, fsynced and read back on every scan.
const maxLastError = 4 << 10

func lastError(cause error) string {
	s := cause.Error()
	if len(s) > maxLastError {
		s = strings.ToValidUTF8(s[:maxLastError], "") + "…"
	}
	return s
}

// Retry records a failed attempt and when to try again, and releases the task.
func (q *Queue) Retry(t Task, cause error, at time.Time) error {
	defer q.Release(t)
	t.Attempts++
	t.LastError = lastError(cause)
	t.NotBefore = at
	err := q.update(func(tx *bolt.Tx) error {
		prev := tx.Bucket(tasksBucket).Get([]byte(t.ID()))
		if prev == nil {
			return nil // removed meanwhile
		}
		return putTask(tx, t, prev)
	})
	if err != nil {
		return fmt.Errorf("reschedule task %s %q: %w", t.Kind, t.Key, err)
	}
	q.forget(t.ID())
	return nil
}

// Release lets a task handed out by Due be handed out again, unchanged.
func (q *Queue) Release(t Task) {
	q.mu.Lock()
	delete(q.running, t.ID())
	q.mu.Unlock()
	q.poke()
}

// Len returns how many tasks are queued, without decoding them.
func (q *Queue) Len() (int, error) {
	n := 0
	err := q.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(tasksBucket).Stats().KeyN
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read queue: %w", err)
	}
	return n, nil
}

// All returns every queued task (parked ones are not queued).
func (q *Queue) All() ([]Task, error) { return q.scan(tasksBucket) }

func (q *Queue) scan(bucket []byte) ([]Task, error) {
	var out []Task
	err := q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var t Task
			if json.Unmarshal(v, &t) != nil {
				return nil // a damaged record: Due counts it under KindCorrupt
			}
			out = append(out, t)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read queue: %w", err)
	}
	return out, nil
}

// Park moves a task that failed in a way retrying cannot fix out of the queue, into the parked
// set, with its cause; it stays there (durably) until Unpark queues it again. A parked task is
// never handed out by Due.
func (q *Queue) Park(t Task, cause error) error {
	defer q.Release(t)
	t.Attempts++
	t.LastError = lastError(cause)
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	err = q.update(func(tx *bolt.Tx) error {
		if _, err := deleteTask(tx, []byte(t.ID())); err != nil {
			return err
		}
		return tx.Bucket(parkedBucket).Put([]byte(t.ID()), v)
	})
	if err != nil {
		return fmt.Errorf("park task %s %q: %w", t.Kind, t.Key, err)
	}
	q.forget(t.ID())
	return nil
}

// Parked returns every parked task.
func (q *Queue) Parked() ([]Task, error) { return q.scan(parkedBucket) }

// Unpark queues again, due now and with its attempts reset, every parked task match accepts,
// and says how many. A task queued meanwhile under the same identity is kept as it is.
func (q *Queue) Unpark(match func(Task) bool) (int, error) {
	n := 0
	err := q.update(func(tx *bolt.Tx) error {
		parked, tasks := tx.Bucket(parkedBucket), tx.Bucket(tasksBucket)
		var move [][]byte
		var vals []Task
		if err := parked.ForEach(func(k, v []byte) error {
			var t Task
			if json.Unmarshal(v, &t) != nil || !match(t) {
				return nil
			}
			t.Attempts, t.NotBefore = 0, time.Time{}
			move = append(move, append([]byte(nil), k...))
			vals = append(vals, t)
			return nil
		}); err != nil {
			return err
		}
		for i, k := range move {
			if err := parked.Delete(k); err != nil {
				return err
			}
			if tasks.Get(k) == nil {
				if err := putTask(tx, vals[i], nil); err != nil {
					return err
				}
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("unpark tasks: %w", err)
	}
	if n > 0 {
		q.poke()
	}
	return n, nil
}
