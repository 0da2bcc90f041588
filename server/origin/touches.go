package origin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// touchRetention is how long a GC touch is remembered. A garbage collection asks the ring
// members whether they touched a blob since its cutoff before it deletes the blob's backend
// copy; a cutoff older than what the journal still remembers is answered "cannot say", which
// keeps the copy. 30 days covers any grace period and run length in practice.
const touchRetention = 30 * 24 * time.Hour

// touchPruneEvery is how often, at most, touches older than touchRetention are dropped.
const touchPruneEvery = 24 * time.Hour

var (
	touchesBucket = []byte("touches") // hex of a sha256 digest -> unix nanoseconds of the last touch
	touchMeta     = []byte("meta")
	touchSinceKey = []byte("since") // unix nanoseconds: the journal remembers every touch since
)

// touchJournal remembers, durably, when each blob was last touched for a manifest push
// (docs/gc.md). The store's own last-use time is lost when the blob is evicted or deleted; the
// journal is not, so a garbage collection cannot delete the backend copy of a blob this origin
// touched (and then lost its copy of) after the run started. It is safe for concurrent use.
type touchJournal struct {
	db *bolt.DB

	mu        sync.Mutex
	lastPrune time.Time
}

// openTouchJournal opens (creating) the journal at path. A new journal remembers every touch
// since now.
func openTouchJournal(path string, now time.Time) (*touchJournal, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open touch journal %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(touchesBucket); err != nil {
			return err
		}
		m, err := tx.CreateBucketIfNotExists(touchMeta)
		if err != nil {
			return err
		}
		if m.Get(touchSinceKey) == nil {
			return m.Put(touchSinceKey, nanos(now))
		}
		return nil
	})
	if err != nil {
		_ = db.Close() // the update's error is the one to report
		return nil, fmt.Errorf("open touch journal %s: %w", path, err)
	}
	j := &touchJournal{db: db}
	if err := j.prune(now); err != nil {
		_ = db.Close() // the prune's error is the one to report
		return nil, err
	}
	return j, nil
}

// Close closes the journal's file.
func (j *touchJournal) Close() error { return j.db.Close() }

// record remembers that d was touched at at, durably, before it returns. Concurrent records
// share one commit (bolt's batch).
func (j *touchJournal) record(d digest.Digest, at time.Time) error {
	key, err := digestKey(d)
	if err != nil {
		return err
	}
	err = j.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(touchesBucket)
		if old := b.Get(key); len(old) == 8 && int64(binary.BigEndian.Uint64(old)) >= at.UnixNano() {
			return nil
		}
		return b.Put(key, nanos(at))
	})
	if err != nil {
		return fmt.Errorf("record touch of %s: %w", d, err)
	}
	j.mu.Lock()
	due := at.Sub(j.lastPrune) >= touchPruneEvery
	j.mu.Unlock()
	if due {
		return j.prune(at)
	}
	return nil
}

// touchedSince says whether d was touched at or after cutoff. known is false when the journal
// does not reach back to cutoff (it was created, or pruned, after it): then nobody can say.
func (j *touchJournal) touchedSince(d digest.Digest, cutoff time.Time) (touched, known bool, err error) {
	key, err := digestKey(d)
	if err != nil {
		return false, false, err
	}
	err = j.db.View(func(tx *bolt.Tx) error {
		since := time.Unix(0, int64(binary.BigEndian.Uint64(tx.Bucket(touchMeta).Get(touchSinceKey))))
		known = !cutoff.Before(since)
		if v := tx.Bucket(touchesBucket).Get(key); len(v) == 8 {
			touched = !time.Unix(0, int64(binary.BigEndian.Uint64(v))).Before(cutoff)
		}
		return nil
	})
	if err != nil {
		return false, false, fmt.Errorf("read touch of %s: %w", d, err)
	}
	return touched, known, nil
}

// prune drops touches older than touchRetention and moves the journal's horizon up to match.
func (j *touchJournal) prune(now time.Time) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	horizon := now.Add(-touchRetention)
	err := j.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(touchMeta)
		if since := int64(binary.BigEndian.Uint64(m.Get(touchSinceKey))); since < horizon.UnixNano() {
			if err := m.Put(touchSinceKey, nanos(horizon)); err != nil {
				return err
			}
		}
		b := tx.Bucket(touchesBucket)
		var old [][]byte // collected first: deleting under a cursor skips keys
		err := b.ForEach(func(k, v []byte) error {
			if len(v) != 8 || int64(binary.BigEndian.Uint64(v)) < horizon.UnixNano() {
				old = append(old, k)
			}
			return nil
		})
		for _, k := range old {
			if err == nil {
				err = b.Delete(k)
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("prune touch journal: %w", err)
	}
	j.lastPrune = now
	return nil
}

func digestKey(d digest.Digest) ([]byte, error) {
	if d.Algorithm() != digest.SHA256 || d.Validate() != nil {
		return nil, errors.New("touch journal: want a sha256 digest")
	}
	return []byte(d.Encoded()), nil
}

func nanos(t time.Time) []byte { return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())) }
