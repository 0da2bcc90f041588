package origin

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/queue"
)

// Task kinds in the durable queue.
const (
	// kindWriteback copies a blob from the local store to the namespace's storage backend.
	kindWriteback = "writeback"
	// kindReplicate copies a blob from the local store to another origin (target).
	kindReplicate = "replicate"
)

// Targets of the write-backs garbage collection queues (gc.go). A write-back writes to the
// namespace's backend whatever its target; a target of their own gives these keys apart from
// the write-back a commit queued, so neither replaces the other, nor is lost when the other,
// running at the time, finishes and removes its key.
const (
	// writebackAfterTouch follows every GC touch, writeback.touch_hold later (touchTask).
	writebackAfterTouch = "gc-touch"
	// writebackAfterDelete puts back a backend copy that a GC deleted while this origin
	// touched or fetched the blob.
	writebackAfterDelete = "gc-delete"
)

// blobTask is the payload of the origin's queue tasks.
type blobTask struct {
	Namespace string        `json:"namespace"`
	Digest    digest.Digest `json:"digest"`
	Target    string        `json:"target,omitempty"`
}

func newTask(kind, ns string, d digest.Digest, target string, notBefore time.Time) queue.Task {
	p, _ := json.Marshal(blobTask{Namespace: ns, Digest: d, Target: target}) // plain strings: cannot fail
	return queue.Task{Kind: kind, Key: target + "\x00" + d.String() + "\x00" + ns, Payload: p, NotBefore: notBefore}
}

func decodeTask(t queue.Task) (blobTask, error) {
	var bt blobTask
	if err := json.Unmarshal(t.Payload, &bt); err != nil {
		return bt, fmt.Errorf("%w: decode %s task: %w", queue.ErrPermanent, t.Kind, err)
	}
	if err := bt.Digest.Validate(); err != nil {
		return bt, fmt.Errorf("%w: %s task: %w", queue.ErrPermanent, t.Kind, err)
	}
	return bt, nil
}

// touchTask is the write-back a GC touch at now queues: it holds the blob and checks its backend
// object at least hold after now. Its due time is rounded up to a quarter of hold and is part of
// its key, so touches within one quarter share a task and a later touch gets a task of its own:
// the queue keeps the earlier due time of a task added twice, and a task running when it is
// added again is removed when it finishes, either of which would lose the later touch's
// horizon. At most five such tasks per blob are queued at once.
func touchTask(ns string, d digest.Digest, now time.Time, hold time.Duration) queue.Task {
	slot := max(hold/4, time.Nanosecond)
	due := now.Add(hold).Truncate(slot)
	if due.Before(now.Add(hold)) {
		due = due.Add(slot)
	}
	t := newTask(kindWriteback, ns, d, writebackAfterTouch, due)
	t.Key += "\x00" + strconv.FormatInt(due.UnixNano(), 10)
	return t
}
