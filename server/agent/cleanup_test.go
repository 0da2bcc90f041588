package agent_test

import (
	"io"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/cacheapi"
	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
)

// An agent's cleanup keeps a blob while it is streamed to a client and while the swarm seeds
// it, however idle; once both are over, the same policy removes it, and the removal counts in
// the agent's metrics.
func TestCleanupKeepsWhatIsServedOrSeeded(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 16<<20) // more than loopback buffers hold, so the handler blocks
	d := digest.FromBytes(blob)
	startOrigin(t, tr, nil, blob)
	a := startAgent(t, tr, func(cfg *agent.Config) {
		cfg.SeedTime = time.Second
		cfg.Cleanup = cacheapi.Config{Interval: cacheapi.Off, TTI: time.Nanosecond}
	})

	_, err := a.cl.Pull(t.Context(), ns, d, io.Discard, nil)
	require.NoError(t, err)
	// A client that reads nothing: the agent's handler is stuck writing, with the stored blob
	// open. (While it downloads, a stream reads the partial download, and the swarm's torrent
	// is what keeps the blob: "active".)
	body, _, err := a.cl.Open(t.Context(), ns, d, 0)
	require.NoError(t, err)
	st, err := a.cl.CacheStatus(t.Context(), 1)
	require.NoError(t, err)
	require.Equal(t, 1, st.BlobCount)
	require.Equal(t, "open", st.Blobs[0].InUse)
	rep, err := a.cl.CacheEvict(t.Context(), api.CacheEvictRequest{Policy: true})
	require.NoError(t, err)
	require.Empty(t, rep.Removed)
	require.Len(t, rep.Kept, 1)
	require.Equal(t, "open", rep.Kept[0].Kept)
	require.NoError(t, body.Close())

	require.Eventually(t, func() bool {
		rep, err := a.cl.CacheEvict(t.Context(), api.CacheEvictRequest{Policy: true})
		return err == nil && len(rep.Removed) == 1 && rep.Removed[0].Reason == "tti"
	}, 15*time.Second, 50*time.Millisecond, "neither read nor seeded any more: removed")
	require.Equal(t, 1.0, counter(t, a, "krakenctl_store_cleanup_removed_blobs_total", "tti"))
	require.Equal(t, float64(len(blob)), counter(t, a, "krakenctl_store_cleanup_removed_bytes_total", "tti"))
}

// A blob the swarm still seeds (its seed time is not over) is kept by a manual eviction too,
// as "active": the agent passes its scheduler's Active to the store.
func TestCleanupKeepsWhatTheSwarmSeeds(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 256<<10)
	d := digest.FromBytes(blob)
	startOrigin(t, tr, nil, blob)
	a := startAgent(t, tr, func(cfg *agent.Config) { cfg.SeedTime = time.Hour })
	_, err := a.cl.Pull(t.Context(), ns, d, io.Discard, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		rep, err := a.cl.CacheEvict(t.Context(), api.CacheEvictRequest{Digests: []string{d.String()}})
		return err == nil && len(rep.Kept) == 1 && rep.Kept[0].Kept == "active"
	}, 10*time.Second, 20*time.Millisecond, "kept while seeded (once the pull's read has closed it)")
	st, err := a.cl.CacheStatus(t.Context(), 0)
	require.NoError(t, err)
	require.Equal(t, 1, st.BlobCount)
}

func counter(t *testing.T, a *testAgent, name, reason string) float64 {
	t.Helper()
	families, err := a.reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{reason=%q}", name, reason)
	return 0
}
