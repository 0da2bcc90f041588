package castore_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/castore"
)

// A blob file removed behind the store's back (by hand, by a cleanup script) is noticed at the
// next Open: the entry and its metadata are forgotten and Open, then Stat, say ErrNotFound, so a
// caller fetches the blob again instead of failing forever; the same digest can be ingested
// again. A reader that had it open keeps reading.
func TestVanishedBlobIsForgotten(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, castore.Options{})
	data := blobData(7, 4096)
	d := ingest(t, s, data)
	require.NoError(t, s.PutMeta(d, "namespace", []byte("team/app")))
	reader, err := s.Open(t.Context(), d)
	require.NoError(t, err)

	require.NoError(t, os.Remove(filepath.Join(dir, "blobs", string(d.Algorithm()), d.Encoded())))
	_, err = s.Stat(d)
	require.NoError(t, err, "the index does not know yet")
	_, err = s.Open(t.Context(), d)
	require.ErrorIs(t, err, castore.ErrNotFound)
	_, err = s.Stat(d)
	require.ErrorIs(t, err, castore.ErrNotFound, "forgotten at the failed Open")
	_, err = s.GetMeta(d, "namespace")
	require.Error(t, err, "its metadata went with it")
	used, _ := s.Usage()
	require.Zero(t, used)

	got := make([]byte, len(data))
	_, err = reader.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, data, got, "the open reader keeps its file")
	require.NoError(t, reader.Close())

	ingest(t, s, data)
	b, err := s.Open(t.Context(), d)
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = buf.ReadFrom(b)
	require.NoError(t, err)
	require.NoError(t, b.Close())
	require.Equal(t, data, buf.Bytes())
}
