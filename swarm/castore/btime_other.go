//go:build !linux

package castore

import (
	"errors"
	"time"
)

// birthTime is not read outside Linux: Open dates blobs found on disk by their modification
// time instead (see Info.Created).
func birthTime(string) (time.Time, bool) { return time.Time{}, false }

// diskUsage is not measured outside Linux: a watermark without a capacity then does nothing,
// and Cleanup's report says why.
func diskUsage(string) (int64, int64, error) {
	return 0, 0, errors.New("file system usage is measured on Linux only")
}
