package backendtest

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
)

// testDelete checks backend.Deleter on backends that implement it (garbage collection deletes
// through it): a deleted object is gone for Stat, Download and List, its neighbours stay, a
// missing one is ErrNotFound, and bad keys are refused before any I/O.
func (s *suite) testDelete(t *testing.T) {
	b := s.newBackend(t)
	d, ok := b.(backend.Deleter)
	if !ok {
		t.Skip("the backend does not implement backend.Deleter")
	}
	ns := s.ns("delete")
	gone, data := object(71, 1000)
	kept, other := object(72, 1000)
	s.put(t, b, ns, gone, data)
	s.put(t, b, ns, kept, other)

	require.NoError(t, d.Delete(t.Context(), ns, gone))
	_, err := b.Stat(t.Context(), ns, gone)
	require.ErrorIs(t, err, backend.ErrNotFound)
	require.ErrorIs(t, b.Download(t.Context(), ns, gone, io.Discard), backend.ErrNotFound)
	names, err := b.List(t.Context(), ns, "")
	require.NoError(t, err)
	require.Equal(t, []string{kept}, names)
	requireObject(t, b, ns, kept, other)

	require.ErrorIs(t, d.Delete(t.Context(), ns, gone), backend.ErrNotFound)
	require.ErrorIs(t, d.Delete(t.Context(), ns, "../"+kept), backend.ErrInvalidKey)
	require.ErrorIs(t, d.Delete(t.Context(), "../x", kept), backend.ErrInvalidKey)
	// The object can be stored again after a delete.
	s.put(t, b, ns, gone, data)
	var buf bytes.Buffer
	require.NoError(t, b.Download(t.Context(), ns, gone, &buf))
	require.True(t, bytes.Equal(data, buf.Bytes()))
}
