package castore_test

import (
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/castore"
)

// Page lists every blob exactly once, in digest order, in pages of the size asked for, and a
// blob deleted between two pages is simply not listed.
func TestPage(t *testing.T) {
	s := openStore(t, t.TempDir(), castore.Options{})
	var all []digest.Digest
	for i := range 23 {
		all = append(all, ingest(t, s, blobData(uint64(i), 100+i)))
	}
	slices.Sort(all)
	require.Empty(t, s.Page("", 0))

	var got []digest.Digest
	after := digest.Digest("")
	for {
		p := s.Page(after, 5)
		require.LessOrEqual(t, len(p), 5)
		for _, in := range p {
			got = append(got, in.Digest)
			require.Positive(t, in.Size)
			require.False(t, in.LastAccess.IsZero())
		}
		if len(p) < 5 {
			break
		}
		after = p[len(p)-1].Digest
	}
	require.Equal(t, all, got)

	first := s.Page("", 3)
	require.NoError(t, s.Delete(all[3]))
	rest := s.Page(first[2].Digest, 100)
	require.Len(t, rest, len(all)-4)
	require.Equal(t, all[4], rest[0].Digest)
}

// DeleteIdle deletes only a blob idle since the cutoff, neither open nor held; a dry run
// decides the same way and keeps it.
func TestDeleteIdle(t *testing.T) {
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s := openStore(t, t.TempDir(), castore.Options{Now: clock})
	data := blobData(1, 1000)
	d := ingest(t, s, data)

	// Used at the cutoff: kept.
	_, err := s.DeleteIdle(d, now, false)
	require.ErrorIs(t, err, castore.ErrRecentlyUsed)
	cutoff := now.Add(time.Minute)

	b, err := s.Open(t.Context(), d)
	require.NoError(t, err)
	_, err = s.DeleteIdle(d, cutoff, false)
	require.ErrorIs(t, err, castore.ErrInUse, "open")
	require.NoError(t, b.Close())

	release := s.Hold(d)
	_, err = s.DeleteIdle(d, cutoff, false)
	require.ErrorIs(t, err, castore.ErrInUse, "held")
	release()

	n, err := s.DeleteIdle(d, cutoff, true)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), n)
	require.Equal(t, data, readBlob(t, s, d), "a dry run keeps it")

	// The read above used it at now; a touch later than the cutoff keeps it.
	now = now.Add(2 * time.Minute)
	require.True(t, s.Touch(d))
	_, err = s.DeleteIdle(d, cutoff, false)
	require.ErrorIs(t, err, castore.ErrRecentlyUsed)

	n, err = s.DeleteIdle(d, now.Add(time.Second), false)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), n)
	_, err = s.Stat(d)
	require.ErrorIs(t, err, castore.ErrNotFound)
	_, err = s.DeleteIdle(d, now.Add(time.Second), false)
	require.ErrorIs(t, err, castore.ErrNotFound)
	require.False(t, s.Touch(d))
}
