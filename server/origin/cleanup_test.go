package origin_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/cacheapi"
	"github.com/krakenctl/krakenctl/server/origin"
)

// An origin's cleanup never removes a blob awaiting write-back, however idle: with storage
// down and a tti of a nanosecond, the policy keeps it ("held"); once it is written back, the
// same policy removes it, and a read pulls it back from storage.
func TestCleanupKeepsPendingWriteback(t *testing.T) {
	t.Parallel()
	be := memory.New()
	be.SetFailure(errors.New("backend is down"))
	c := newCluster(t, 1, 1, be, func(cfg *origin.Config) {
		cfg.Store.Cleanup = cacheapi.Config{Interval: cacheapi.Off, TTI: time.Nanosecond}
	})
	o := c.origin(c.nodes[0].addr)
	a, aD := randomBlob(t, 64<<10)
	require.NoError(t, o.Upload(t.Context(), "clean/ns", aD, bytes.NewReader(a), int64(len(a))))
	time.Sleep(time.Millisecond) // idle longer than the tti

	st, err := o.CacheStatus(t.Context(), 10)
	require.NoError(t, err)
	require.Equal(t, "origin", st.Role)
	require.Equal(t, 1, st.BlobCount)
	require.Equal(t, []api.CacheReasonTotal{{Reason: "held", Blobs: 1, Bytes: int64(len(a))}}, st.WouldKeep)
	require.Equal(t, "held", st.Blobs[0].InUse)

	rep, err := o.CacheEvict(t.Context(), api.CacheEvictRequest{Policy: true})
	require.NoError(t, err)
	require.Empty(t, rep.Removed)
	require.Len(t, rep.Kept, 1)
	require.Equal(t, "held", rep.Kept[0].Kept)
	require.Equal(t, "tti", rep.Kept[0].Reason)
	rep, err = o.CacheEvict(t.Context(), api.CacheEvictRequest{Digests: []string{aD.String()}})
	require.NoError(t, err)
	require.Empty(t, rep.Removed, "a manual eviction keeps it too")
	require.Equal(t, a, readAll(t, o, "clean/ns", aD))

	be.SetFailure(nil)
	require.Eventually(t, func() bool { _, ok := be.Peek("clean/ns", aD.Encoded()); return ok }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		rep, err := o.CacheEvict(t.Context(), api.CacheEvictRequest{Policy: true})
		return err == nil && len(rep.Removed) == 1 && rep.Removed[0].Digest == aD
	}, 10*time.Second, 20*time.Millisecond, "written back, the idle blob goes")
	st, err = o.CacheStatus(t.Context(), 0)
	require.NoError(t, err)
	require.Zero(t, st.BlobCount)
	require.Equal(t, a, readAll(t, o, "clean/ns", aD), "pulled back from storage")
}
