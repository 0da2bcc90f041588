package metainfo

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestGeneratorTooManyPieces starts the Generator just below the limit instead of hashing the
// 4 GiB it takes to get there.
func TestGeneratorTooManyPieces(t *testing.T) {
	t.Parallel()
	g, err := NewGenerator(MinPieceLength)
	require.NoError(t, err)
	g.length = MinPieceLength*MaxPieces - 10
	_, err = g.Write(make([]byte, 10))
	require.NoError(t, err, "exactly MaxPieces pieces are allowed")
	_, err = g.Write([]byte{0})
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = g.Finish()
	require.ErrorIs(t, err, ErrFinished)
}
