//go:build !unix

package castore

import (
	"errors"
	"syscall"
)

// isNoSpace reports whether err is the file system refusing a write for lack of space.
func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }
