package tagstore

import (
	"testing"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// TestClosingStable: before close every call reaches the store; after it writes are dropped
// (raft would panic on an error) and reads fail.
func TestClosingStable(t *testing.T) {
	inner := raft.NewInmemStore()
	c := &closingStable{s: inner}
	require.NoError(t, c.SetUint64([]byte("CurrentTerm"), 3))
	require.NoError(t, c.Set([]byte("LastVoteCand"), []byte("n1")))
	v, err := c.GetUint64([]byte("CurrentTerm"))
	require.NoError(t, err)
	require.Equal(t, uint64(3), v)

	c.close()
	require.NoError(t, c.SetUint64([]byte("CurrentTerm"), 4))
	require.NoError(t, c.Set([]byte("LastVoteCand"), []byte("n2")))
	v, err = inner.GetUint64([]byte("CurrentTerm"))
	require.NoError(t, err)
	require.Equal(t, uint64(3), v, "a write after close never reaches the store")
	b, err := inner.Get([]byte("LastVoteCand"))
	require.NoError(t, err)
	require.Equal(t, "n1", string(b))
	_, err = c.GetUint64([]byte("CurrentTerm"))
	require.ErrorIs(t, err, errStableClosed)
	_, err = c.Get([]byte("LastVoteCand"))
	require.ErrorIs(t, err, errStableClosed)
}
