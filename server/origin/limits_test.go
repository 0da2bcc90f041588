package origin_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/httpbackend"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/origin"
)

// A pull-through from a store that throttles its first HEAD and its first GET (429) succeeds
// through the route's limits, and the origin's registry counts the throttled answers and the
// retries under the route's name: the role passes its registerer to the backends.
func TestPullThroughRetriesThrottledBackend(t *testing.T) {
	t.Parallel()
	data, d := randomBlob(t, 300_000)
	var (
		mu   sync.Mutex
		seen = map[string]int{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method]++
		first := seen[r.Method] == 1
		mu.Unlock()
		if first {
			w.Header().Set("Retry-After", "0")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		if r.URL.Path != "/mirror/base/_objects/"+d.Encoded() {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(data)
		}
	}))
	t.Cleanup(srv.Close)
	c := newCluster(t, 1, 1, nil, func(cfg *origin.Config) {
		cfg.Backends = []backends.Config{{
			Namespace: ".*", Name: "throttling-http", HTTP: &httpbackend.Config{URL: srv.URL},
			Limits: &backends.LimitsConfig{Retries: 2, Concurrency: 2, DownloadRate: 64 << 20},
		}}
	})
	body, _, err := c.origin(c.nodes[0].addr).Open(t.Context(), "mirror/base", d, 0)
	require.NoError(t, err)
	got, err := io.ReadAll(body)
	require.NoError(t, body.Close())
	require.NoError(t, err)
	require.Equal(t, data, got)

	mfs, err := c.nodes[0].c.Registry(cluster.Origin, 0).Gather()
	require.NoError(t, err)
	counts := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["route"] == "throttling-http" && labels["op"] != "" && m.GetCounter().GetValue() > 0 {
				counts[mf.GetName()+"/"+labels["op"]] = m.GetCounter().GetValue()
			}
		}
	}
	require.Equal(t, map[string]float64{
		"krakenctl_backend_throttled_total/stat": 1, "krakenctl_backend_retries_total/stat": 1,
		"krakenctl_backend_throttled_total/download": 1, "krakenctl_backend_retries_total/download": 1,
	}, counts)
}
