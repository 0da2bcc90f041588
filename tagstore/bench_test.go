package tagstore_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/krakenctl/krakenctl/tagstore"
	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

// These benchmarks run a three-node cluster on loopback TCP. RunParallel uses 32 clients per
// GOMAXPROCS so Raft can batch concurrent writes and reads.

func BenchmarkPut(b *testing.B) {
	for _, mae := range []int{64, 256} {
		b.Run(fmt.Sprintf("max_append_entries=%d", mae), func(b *testing.B) { benchPut(b, mae) })
	}
}

func benchPut(b *testing.B, maxAppend int) {
	c := tagstoretest.Start(b, tagstoretest.Options{Network: tagstoretest.TCP, Configure: func(cfg *tagstore.Config) {
		cfg.MaxAppendEntries = maxAppend
	}})
	s := c.Leader().Store()
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := s.Put(b.Context(), "bench", fmt.Sprintf("t%d", i%1000), dg(fmt.Sprint(i))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
}

func BenchmarkPutSequential(b *testing.B) {
	c := tagstoretest.Start(b, tagstoretest.Options{Network: tagstoretest.TCP})
	s := c.Leader().Store()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Put(b.Context(), "bench", fmt.Sprintf("t%d", i%1000), dg(fmt.Sprint(i))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetLinearizable(b *testing.B) {
	c := tagstoretest.Start(b, tagstoretest.Options{Network: tagstoretest.TCP})
	s := c.Leader().Store()
	for i := range 100 {
		if _, err := s.Put(b.Context(), "bench", fmt.Sprintf("t%d", i), dg(fmt.Sprint(i))); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := s.Get(b.Context(), "bench", fmt.Sprintf("t%d", i%100), tagstore.Linearizable); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "gets/s")
}

func BenchmarkList100k(b *testing.B) {
	c := tagstoretest.Start(b, tagstoretest.Options{Network: tagstoretest.TCP, Nodes: 1})
	s := c.Leader().Store()
	tags := make([]tagstore.Tag, 100_000)
	for i := range tags {
		tags[i] = tagstore.Tag{Repo: "bench/big", Name: fmt.Sprintf("tag-%06d", i), Digest: dg(fmt.Sprint(i))}
	}
	if _, _, err := s.Import(b.Context(), tags); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		names, err := s.Tags(b.Context(), "bench/big", "", 0, tagstore.Linearizable)
		if err != nil || len(names) != len(tags) {
			b.Fatal(len(names), err)
		}
	}
}
