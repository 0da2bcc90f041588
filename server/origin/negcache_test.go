package origin_test

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/origin"
)

// counter reads a counter or gauge of origin i's registry (0 when it has no sample yet).
func (c *testCluster) metric(t *testing.T, i int, name string) float64 {
	t.Helper()
	mfs, err := c.nodes[i].c.Registry(cluster.Origin, c.nodes[i].i).Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var v float64
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return v
	}
	return 0
}

// GETs and HEADs of a digest the backend does not have cost one backend round trip in all,
// then are answered from the negative cache (counted); a GET alone asks the backend once too; a push of that digest, to this origin or
// to another one of the ring, is served at once: the cache never hides a pushed blob.
func TestNegativeCache(t *testing.T) {
	t.Parallel()
	be := memory.New()
	c := newCluster(t, 2, 1, be, func(cfg *origin.Config) { cfg.NegativeCache.TTL = time.Hour })
	data, d := randomBlob(t, 5000)
	for i, nd := range c.nodes {
		o := c.origin(nd.addr)
		url := "http://" + nd.addr + "/namespace/team%2Fapp/blobs/" + d.String()
		stats, downloads := be.Calls(memory.OpStat), be.Calls(memory.OpDownload)
		for range 5 {
			require.Equal(t, http.StatusNotFound, do(t, c.hc, http.MethodHead, url, nil, nil).status)
			_, _, err := o.Open(t.Context(), "team/app", d, 0)
			require.True(t, client.IsNotFound(err), "%v", err)
		}
		require.Equal(t, stats+1, be.Calls(memory.OpStat), "origin %d: the first HEAD asks the backend", i)
		require.Equal(t, downloads, be.Calls(memory.OpDownload), "origin %d: no GET does", i)
		require.EqualValues(t, 9, c.metric(t, i, "krakenctl_origin_negative_cache_hits_total"))
		require.EqualValues(t, 1, c.metric(t, i, "krakenctl_origin_negative_cache_entries"))
	}

	_, other := randomBlob(t, 10)
	stats := be.Calls(memory.OpStat)
	for range 3 {
		_, _, err := c.origin(c.nodes[0].addr).Open(t.Context(), "team/app", other, 0)
		require.True(t, client.IsNotFound(err), "%v", err)
	}
	// A pull-through asks the backend for the size to reserve first: its 404 ends it.
	require.Equal(t, 1, be.Calls(memory.OpStat)-stats+be.Calls(memory.OpDownload), "three GETs of another digest, one backend round trip")

	// Miss (above, on both), push to one, get from both: 200.
	o0 := c.origin(c.nodes[0].addr)
	require.NoError(t, o0.Upload(t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data))))
	require.EqualValues(t, 1, c.metric(t, 0, "krakenctl_origin_negative_cache_entries"), "the commit forgot it; the other digest stays")
	for _, nd := range c.nodes {
		require.Equal(t, data, readAll(t, c.origin(nd.addr), "team/app", d), nd.addr)
		url := "http://" + nd.addr + "/namespace/team%2Fapp/blobs/" + d.String()
		require.Equal(t, http.StatusOK, do(t, c.hc, http.MethodHead, url, nil, nil).status, nd.addr)
	}
}
