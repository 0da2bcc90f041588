//go:build linux && (amd64 || arm64)

package castore

import (
	"os"
	"syscall"
)

// writeBackEvery is how many written bytes a writeBack lets accumulate before it starts
// writing them back.
const writeBackEvery = 8 << 20

// writeBack starts asynchronous write-back (sync_file_range SYNC_FILE_RANGE_WRITE) of a file
// being written sequentially, every writeBackEvery bytes: the disk then works while the rest
// arrives and is hashed, instead of all at once in the final fsync, and dirty pages do not
// pile up. It is only a hint: errors are ignored, and the fsync at commit is what makes the
// data durable.
type writeBack struct {
	fd      int
	flushed int64 // Write-back has been started for [0, flushed).
	written int64
}

func newWriteBack(f *os.File, offset int64) *writeBack {
	return &writeBack{fd: int(f.Fd()), flushed: offset, written: offset}
}

func (w *writeBack) wrote(n int) {
	w.written += int64(n)
	if w.written-w.flushed >= writeBackEvery {
		_ = syscall.SyncFileRange(w.fd, w.flushed, w.written-w.flushed, syscallSyncFileRangeWrite)
		w.flushed = w.written
	}
}

// syscallSyncFileRangeWrite is SYNC_FILE_RANGE_WRITE from <linux/fs.h>.
const syscallSyncFileRangeWrite = 2
