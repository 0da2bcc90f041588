package gc_test

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/krakenctl/krakenctl/server/gc"
)

// BenchmarkRun is a whole run (mark, then sweep) over one origin holding 10,000 or 100,000
// blobs of which 10% are referenced (images of 9 layers and a manifest, in 7 repositories),
// the build-index, the manifest walker and the origin being the in-memory fakes of these
// tests: it measures the collector's own time and memory, not HTTP or disks. Reported: the
// run's time, and peak_heap_MiB, the highest heap in use above what the fakes hold before the
// run, sampled every millisecond (garbage not yet collected included), and peak_live_MiB, the
// highest live heap above the fakes' state at any progress event (see liveHeap).
//
//	go test -run '^$' -bench Run -benchmem ./server/gc/
func BenchmarkRun(b *testing.B) {
	b.Run("blobs=10000", func(b *testing.B) { benchRun(b, 10_000) })
	b.Run("blobs=100000", func(b *testing.B) { benchRun(b, 100_000) })
}

func benchRun(b *testing.B, total int) {
	const layers = 9
	images := total / 10 / (layers + 1)
	var peak uint64
	for b.Loop() {
		b.StopTimer()
		wd := newWorld(1, images, layers, total-images*(layers+1))
		// The fake's sorted listing is its own state: build it before measuring.
		if _, err := wd.origins[0].GCBlobs(b.Context(), "", 1); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		var high atomic.Uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			t := time.NewTicker(time.Millisecond)
			defer t.Stop()
			for {
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > base && m.HeapInuse-base > high.Load() {
					high.Store(m.HeapInuse - base)
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		})
		c, err := gc.New(gc.Config{Grace: time.Hour}, wd.deps())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		rep, err := c.Run(b.Context())
		b.StopTimer()
		close(stop)
		wg.Wait()
		if err != nil {
			b.Fatal(err)
		}
		if got := rep.Totals(); got.Scanned != total || got.Referenced != total/10 || got.Collected != total-total/10 {
			b.Fatalf("scanned %d, referenced %d, collected %d", got.Scanned, got.Referenced, got.Collected)
		}
		peak = max(peak, high.Load())
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak_heap_MiB")
	b.ReportMetric(float64(liveHeap(b, total, images, layers))/(1<<20), "peak_live_MiB")
}

// liveHeap runs once more, untimed, collecting garbage at every progress event (each manifest
// walked, each page swept) to read the live heap there: the highest, above the fakes' own
// state, is what a run holds, apart from what the garbage collector has not yet reclaimed.
func liveHeap(b *testing.B, total, images, layers int) uint64 {
	wd := newWorld(1, images, layers, total-images*(layers+1))
	if _, err := wd.origins[0].GCBlobs(b.Context(), "", 1); err != nil {
		b.Fatal(err)
	}
	live := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := live()
	var high uint64
	deps := wd.deps()
	deps.Progress = func(gc.Progress) {
		if l := live(); l > base {
			high = max(high, l-base)
		}
	}
	c, err := gc.New(gc.Config{Grace: time.Hour, Parallel: 1}, deps)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.Run(b.Context()); err != nil {
		b.Fatal(err)
	}
	return high
}
