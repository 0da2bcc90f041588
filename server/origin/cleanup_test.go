package origin_test

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/cacheapi"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
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

// An origin with no backend holds the only copies of what it acknowledged: its cleanup removes
// nothing whatever the config says ("only copy"), and a store with no room refuses the next
// upload with 507 instead of evicting one.
func TestNoBackendNeverRemovesABlob(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1, nil, func(cfg *origin.Config) {
		cfg.Store.Capacity = 1 << 20
		cfg.Store.Cleanup = cacheapi.Config{Interval: cacheapi.Off, TTI: time.Nanosecond, TTL: time.Nanosecond}
	})
	o := c.origin(c.nodes[0].addr)
	a, aD := randomBlob(t, 950<<10)
	require.NoError(t, o.Upload(t.Context(), "only/ns", aD, bytes.NewReader(a), int64(len(a))))
	time.Sleep(time.Millisecond) // idle and old beyond the tti and ttl asked for

	st, err := o.CacheStatus(t.Context(), 10)
	require.NoError(t, err)
	require.Empty(t, st.WouldRemove, "the policy is off: nothing to remove")
	for _, req := range []api.CacheEvictRequest{{Policy: true}, {Digests: []string{aD.String()}}, {IdleOver: "1ns"}} {
		rep, err := o.CacheEvict(t.Context(), req)
		require.NoError(t, err)
		require.Empty(t, rep.Removed, "%+v", req)
	}
	rep, err := o.CacheEvict(t.Context(), api.CacheEvictRequest{Digests: []string{aD.String()}})
	require.NoError(t, err)
	require.Len(t, rep.Kept, 1)
	require.Equal(t, "only copy", rep.Kept[0].Kept)

	b, bD := randomBlob(t, 200<<10)
	err = o.Upload(t.Context(), "only/ns", bD, bytes.NewReader(b), int64(len(b)))
	var apiErr *errcode.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusInsufficientStorage, apiErr.Status, "no room, and nothing may be evicted")
	require.Equal(t, a, readAll(t, o, "only/ns", aD), "the only copy is intact")
}
