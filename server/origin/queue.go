package origin

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Task kinds in the durable queue.
const (
	// kindWriteback copies a blob from the local store to the namespace's storage backend.
	kindWriteback = "writeback"
	// kindReplicate copies a blob from the local store to another origin (Target).
	kindReplicate = "replicate"
)

var tasksBucket = []byte("tasks")

// task is one unit of durable work. It stays in the queue until it succeeds or fails
// permanently, so a restart resumes it.
type task struct {
	Kind      string        `json:"kind"`
	Namespace string        `json:"namespace"`
	Digest    digest.Digest `json:"digest"`
	Target    string        `json:"target,omitempty"`
	Attempts  int           `json:"attempts"`
	NotBefore time.Time     `json:"not_before"`
	LastError string        `json:"last_error,omitempty"`
	Created   time.Time     `json:"created"`
}

func (t task) key() string {
	return t.Kind + "\x00" + t.Target + "\x00" + t.Digest.String() + "\x00" + t.Namespace
}

// queue is a durable task queue in a bbolt file. It is safe for concurrent use. Tasks are
// identified by (kind, target, digest, namespace): enqueueing an identical task again keeps one
// entry with the earlier due time.
type queue struct {
	db *bolt.DB

	mu      sync.Mutex
	running map[string]bool // keys handed out by due and not yet finished
	wake    chan struct{}   // capacity 1: "something became due"
}

func openQueue(path string) (*queue, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open queue %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(tasksBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open queue %s: %w", path, err)
	}
	return &queue{db: db, running: map[string]bool{}, wake: make(chan struct{}, 1)}, nil
}

func (q *queue) close() error { return q.db.Close() }

// add stores t durably (fsynced by bbolt before it returns). It reports whether t is new.
func (q *queue) add(t task) (bool, error) {
	if t.Created.IsZero() {
		t.Created = time.Now()
	}
	added := false
	err := q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(tasksBucket)
		k := []byte(t.key())
		if old := b.Get(k); old != nil {
			var prev task
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
		return false, fmt.Errorf("enqueue %s %s: %w", t.Kind, t.Digest, err)
	}
	q.poke()
	return added, nil
}

func (q *queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// due returns up to limit tasks whose time has come and that no worker holds, marking them
// running, the time the next not-yet-due task becomes due (zero if none), and how many tasks of
// each kind the queue holds. It scans the whole queue: fine for the thousands of tasks an
// origin has pending at once, not for millions.
func (q *queue) due(now time.Time, limit int) ([]task, time.Time, map[string]int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []task
	var next time.Time
	counts := map[string]int{kindWriteback: 0, kindReplicate: 0}
	err := q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(tasksBucket).ForEach(func(k, v []byte) error {
			var t task
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("decode task %q: %w", k, err)
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
		q.running[t.key()] = true
	}
	return out, next, counts, nil
}

// done removes a finished task (success or permanent failure).
func (q *queue) done(t task) error {
	defer q.release(t)
	err := q.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(tasksBucket).Delete([]byte(t.key())) })
	if err != nil {
		return fmt.Errorf("finish task %s %s: %w", t.Kind, t.Digest, err)
	}
	return nil
}

// retry records a failed attempt and when to try again.
func (q *queue) retry(t task, cause error, at time.Time) error {
	defer q.release(t)
	t.Attempts++
	t.LastError = cause.Error()
	t.NotBefore = at
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	err = q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(tasksBucket)
		if b.Get([]byte(t.key())) == nil {
			return nil // removed meanwhile
		}
		return b.Put([]byte(t.key()), v)
	})
	if err != nil {
		return fmt.Errorf("reschedule task %s %s: %w", t.Kind, t.Digest, err)
	}
	return nil
}

// release lets a task be handed out again and wakes the scheduler.
func (q *queue) release(t task) {
	q.mu.Lock()
	delete(q.running, t.key())
	q.mu.Unlock()
	q.poke()
}

// all returns every task in the queue (for start-up holds and status).
func (q *queue) all() ([]task, error) {
	var out []task
	err := q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(tasksBucket).ForEach(func(k, v []byte) error {
			var t task
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("decode task %q: %w", k, err)
			}
			out = append(out, t)
			return nil
		})
	})
	return out, err
}

// errPermanent marks a task failure that retrying cannot fix.
var errPermanent = errors.New("permanent failure")
