//go:build unix

package castore

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockDir creates path and takes an exclusive, non-blocking flock on it. The lock lasts until
// the returned file is closed or the process exits; flock locks belong to the open file, so a
// second Store in the same process is refused too.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock directory: %w", err)
	}
	return f, nil
}
