package castore

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCopyHashedWriteError checks that a failing write stops the copy with the write's error
// and that the pipeline's goroutine and buffers are all given back (goleak checks the former).
func TestCopyHashedWriteError(t *testing.T) {
	t.Parallel()
	s := &Store{metrics: newMetrics(0)}
	path := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	f, err := os.Open(path) // Read-only: every write fails.
	require.NoError(t, err)
	defer func() { _ = f.Close() }() // read-only
	_, err = s.copyHashed(t.Context(), f, sha256.New(), bytes.NewReader(make([]byte, 10*copyBufSize)), 0, &reservation{s: s})
	require.ErrorContains(t, err, "write blob")
}
