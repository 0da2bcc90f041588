package limit_test

import (
	"bytes"
	"testing"

	"github.com/krakenctl/krakenctl/backend/limit"
	"github.com/krakenctl/krakenctl/backend/memory"
)

// BenchmarkUpload measures write-back throughput through the wrapper, uncapped and capped, over
// the in-memory backend: the cost of the wrapper itself, and that a cap holds. The issue's
// benchmark against the emulators wraps their backends with limit.New the same way.
func BenchmarkUpload(b *testing.B) {
	data := bytes.Repeat([]byte("k"), 8<<20)
	for _, tc := range []struct {
		name string
		rate int64
	}{{"unlimited", 0}, {"cap=256MiB/s", 256 << 20}} {
		b.Run(tc.name, func(b *testing.B) {
			lb, err := limit.New(memory.New(), limit.Config{UploadRate: tc.rate}, limit.Deps{Route: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := lb.Upload(b.Context(), ns, name, bytes.NewReader(data), int64(len(data))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
