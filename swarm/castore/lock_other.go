//go:build !unix

package castore

import (
	"fmt"
	"os"
)

// lockDir creates path. Without flock there is no lock: only one Store may use a directory.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock directory: %w", err)
	}
	return f, nil
}
