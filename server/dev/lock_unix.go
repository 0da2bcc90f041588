//go:build unix

package dev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockName is the lock file in a dev cluster's directory.
const lockName = "dev.lock"

// lockDir takes an exclusive, non-blocking lock on dir, held until the returned function is
// called or the process exits (so a crashed cluster never leaves a stale lock behind).
func lockDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock dev dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close() // the flock error is the one to report; the file was never written
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock dev dir %s: %w (is another `krakenctl dev up` running with it?)", dir, ErrDirInUse)
		}
		return nil, fmt.Errorf("lock dev dir %s: %w", dir, err)
	}
	// Closing the file releases the lock: the descriptor goes even when Close reports an error,
	// and nothing was written to the file that the error could have lost.
	return func() { _ = f.Close() }, nil
}
