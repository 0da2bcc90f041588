package scheduler_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
)

// A one-piece blob fetched once from three origins wastes nothing: every byte received was needed.
func TestOnePieceBlobWastesNothing(t *testing.T) {
	t.Parallel()
	ft := announcetest.New()
	blob := randomBlob(t, 1000)
	_, d := startOrigin(t, ft, blob, scheduler.Config{})
	startOrigin(t, ft, blob, scheduler.Config{})
	startOrigin(t, ft, blob, scheduler.Config{})
	agent := startNode(t, t.TempDir(), scheduler.Config{SeedTime: time.Hour, IngressRate: 1 << 40}, ft)
	got, err := pull(t.Context(), agent.s, d)
	require.NoError(t, err)
	require.Equal(t, blob, got)
	var st scheduler.TorrentStats
	for _, s := range agent.s.Stats() {
		if s.Digest == d {
			st = s
		}
	}
	require.Equal(t, d, st.Digest)
	require.Equal(t, int64(len(blob)), st.BytesIn)
	require.Zero(t, st.Wasted, "bytes in %d", st.BytesIn)
}
