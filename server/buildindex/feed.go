package buildindex

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/krakenctl/krakenctl/tagstore"
)

// feedCursor is a follower's place in the tag store's change feed: the index up to which every
// change is queued, in a file of dir. It need not be durable: a cursor that lags only queues
// some changes again, and both followers (the write-back, replication) are idempotent.
type feedCursor struct {
	dir  string
	what string // "write-back", "replication": for the logs
	log  *slog.Logger
}

func (c feedCursor) path() string { return filepath.Join(c.dir, "cursor") }

// load returns the index of the last change known to be queued, 0 when unknown.
func (c feedCursor) load() uint64 {
	b, err := os.ReadFile(c.path())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("read the "+c.what+" cursor; starting from the beginning", "err", err)
		}
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		c.log.Warn("corrupt "+c.what+" cursor; starting from the beginning", "err", err)
		return 0
	}
	return n
}

// save records that every change up to index is queued.
func (c feedCursor) save(index uint64) error {
	tmp := c.path() + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(index, 10)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.path())
}

// followFeed hands consume the store's change feed from the cursor on, and subscribes again
// from where consume got to each time the feed ends, until ctx ends. consume returns the index
// up to which every change it saw is queued.
func followFeed(ctx context.Context, store Store, cur feedCursor, consume func(ctx context.Context, ch <-chan tagstore.Change, from uint64) uint64) {
	from := cur.load()
	if last := store.Status().LastLogIndex; from > last {
		// The Raft state is older than the cursor (it was replaced or lost): the indexes
		// below the cursor are new changes now.
		cur.log.Warn(cur.what+" cursor is ahead of the Raft log; following from the start", "cursor", from, "last_log_index", last)
		from = 0
	}
	for {
		ch, cancel := store.Changes(from)
		from = consume(ctx, ch, from)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
			// The feed ended without ctx ending: the store is closing, or it asked for a
			// resync (queued by consume). Pick up from the cursor.
		}
	}
}
