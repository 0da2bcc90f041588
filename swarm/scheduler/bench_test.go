package scheduler_test

import (
	"context"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
)

func envInt(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil {
		return v
	}
	return def
}

// BenchmarkSwarm measures one swarm in-process, without HTTP: N agents and an origin all
// limited to R bytes/s pull an S-byte blob at once. It reports efficiency ((S/R)/t) at the
// median and the worst agent and the origin's egress in copies. Sizes come from SWARM_N,
// SWARM_SIZE and SWARM_RATE; `krakenctl bench swarm` is the end-to-end benchmark.
func BenchmarkSwarm(b *testing.B) {
	n := int(envInt("SWARM_N", 8))
	size := envInt("SWARM_SIZE", 64<<20)
	rate := envInt("SWARM_RATE", 25<<20)
	scheduler.SetOriginDepth(int(envInt("SWARM_ORIGIN_DEPTH", 2)))
	pipe := envInt("SWARM_PIPELINE", 0)
	window := int(envInt("SWARM_WINDOW", 0))
	for range b.N {
		tr := announcetest.New()
		blob := randomBlob(b, int(size))
		origin, d := startOrigin(b, tr, blob, scheduler.Config{EgressRate: rate})
		agents := make([]*node, n)
		for i := range agents {
			agents[i] = startNode(b, b.TempDir(), scheduler.Config{EgressRate: rate, IngressRate: rate, PipelineBytes: pipe, Window: window}, tr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		times := make([]float64, n)
		var wg sync.WaitGroup
		start := time.Now()
		for i, a := range agents {
			wg.Go(func() {
				dl, err := a.s.Open(ctx, "bench", d)
				if err != nil {
					b.Error(err)
					return
				}
				defer func() { _ = dl.Close() }() // read side
				if _, err := dl.CopyRange(ctx, io.Discard, 0, dl.Size()); err != nil {
					b.Error(err)
				}
				times[i] = time.Since(start).Seconds()
			})
		}
		wg.Wait()
		cancel()
		slices.Sort(times)
		ideal := float64(size) / float64(rate)
		var out int64
		for _, st := range origin.s.Stats() {
			out += st.BytesOut
		}
		b.ReportMetric(ideal/times[n/2], "eff_p50")
		b.ReportMetric(ideal/times[n-1], "eff_max")
		b.ReportMetric(float64(out)/float64(size), "origin_copies")
		b.Logf("N=%d S=%d R=%d: times %v; origin copies %.3f", n, size, rate, times, float64(out)/float64(size))
		for _, a := range agents {
			a.stopOnce()
		}
		origin.stopOnce()
	}
}
