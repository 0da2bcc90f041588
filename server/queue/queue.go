// Package queue is a durable task queue with retries, shared by the roles that must finish work
// they have acknowledged: the origin's write-back and replication, the build-index's tag
// write-back. Tasks live in a bbolt file (fsynced on every change), so a crash or restart resumes
// them; a Runner executes due tasks with a bounded number of workers and exponential backoff.
package queue

import (
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
	wake    chan struct{}   // capacity 1: "something may have become due"
}

// Open opens (creating if needed) the queue file at path. Only one process may open it.
func Open(path string) (*Queue, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open queue %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(tasksBucket); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(parkedBucket)
		return err
	}); err != nil {
		_ = db.Close() // the update's error is the one to report
		return nil, fmt.Errorf("open queue %s: %w", path, err)
	}
	return &Queue{db: db, running: map[string]bool{}, wake: make(chan struct{}, 1)}, nil
}

// Close closes the file. No other method may be called after it.
func (q *Queue) Close() error { return q.db.Close() }

// Add stores t durably (fsynced before it returns) and reports whether it is new. Adding a task
// that is already queued keeps the earlier due time.
func (q *Queue) Add(t Task) (bool, error) {
	if t.Created.IsZero() {
		t.Created = time.Now()
	}
	added := false
	err := q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(tasksBucket)
		k := []byte(t.ID())
		if old := b.Get(k); old != nil {
			var prev Task
			if json.Unmarshal(old, &prev) == nil && !t.NotBefore.Before(prev.NotBefore) {
				return nil
			}
			t.Attempts = 0
		} else {
			added = true
		}
		v, err := json.Marshal(t)
		if err != nil {
			return err
		}
		return b.Put(k, v)
	})
	if err != nil {
		return false, fmt.Errorf("enqueue %s %q: %w", t.Kind, t.Key, err)
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
// running; the time the next not-yet-due task becomes due (zero if none); and how many tasks of
// each kind the queue holds. It scans the whole queue: fine for the thousands of tasks a role
// has pending at once, not for millions.
func (q *Queue) Due(now time.Time, limit int) ([]Task, time.Time, map[string]int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Task
	var next time.Time
	counts := map[string]int{}
	err := q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(tasksBucket).ForEach(func(k, v []byte) error {
			var t Task
			if json.Unmarshal(v, &t) != nil {
				// A record this code did not write (a damaged file): counted, never handed
				// out, and it does not stop the tasks around it.
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
	if err != nil {
		return nil, time.Time{}, nil, fmt.Errorf("scan queue: %w", err)
	}
	for _, t := range out {
		q.running[t.ID()] = true
	}
	return out, next, counts, nil
}

// Done removes a finished task (success or permanent failure) and releases it.
func (q *Queue) Done(t Task) error {
	defer q.Release(t)
	err := q.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(tasksBucket).Delete([]byte(t.ID())) })
	if err != nil {
		return fmt.Errorf("finish task %s %q: %w", t.Kind, t.Key, err)
	}
	return nil
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
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	err = q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(tasksBucket)
		if b.Get([]byte(t.ID())) == nil {
			return nil // removed meanwhile
		}
		return b.Put([]byte(t.ID()), v)
	})
	if err != nil {
		return fmt.Errorf("reschedule task %s %q: %w", t.Kind, t.Key, err)
	}
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
	err = q.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(tasksBucket).Delete([]byte(t.ID())); err != nil {
			return err
		}
		return tx.Bucket(parkedBucket).Put([]byte(t.ID()), v)
	})
	if err != nil {
		return fmt.Errorf("park task %s %q: %w", t.Kind, t.Key, err)
	}
	return nil
}

// Parked returns every parked task.
func (q *Queue) Parked() ([]Task, error) { return q.scan(parkedBucket) }

// Unpark queues again, due now and with its attempts reset, every parked task match accepts,
// and says how many. A task queued meanwhile under the same identity is kept as it is.
func (q *Queue) Unpark(match func(Task) bool) (int, error) {
	n := 0
	err := q.db.Update(func(tx *bolt.Tx) error {
		parked, tasks := tx.Bucket(parkedBucket), tx.Bucket(tasksBucket)
		var move [][]byte
		var vals [][]byte
		if err := parked.ForEach(func(k, v []byte) error {
			var t Task
			if json.Unmarshal(v, &t) != nil || !match(t) {
				return nil
			}
			t.Attempts, t.NotBefore = 0, time.Time{}
			nv, err := json.Marshal(t)
			if err != nil {
				return err
			}
			move = append(move, append([]byte(nil), k...))
			vals = append(vals, nv)
			return nil
		}); err != nil {
			return err
		}
		for i, k := range move {
			if err := parked.Delete(k); err != nil {
				return err
			}
			if tasks.Get(k) == nil {
				if err := tasks.Put(k, vals[i]); err != nil {
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
