package origin

import (
	"encoding/json"
	"fmt"
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
	// writebackAfterTouch follows every GC touch, writeback.touch_delay later.
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
