//go:build unix

package castore

import (
	"errors"
	"syscall"
)

// isNoSpace reports whether err is the file system refusing a write for lack of space: the
// disk is full, or the user's quota is spent.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
