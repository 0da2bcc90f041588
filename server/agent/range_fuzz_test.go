package agent

import (
	"testing"
)

// FuzzParseRange: whatever a client sends as Range, the answer is either an error or a range
// inside the blob, and the whole blob when the header is not a single bytes range.
func FuzzParseRange(f *testing.F) {
	for _, h := range []string{"", "bytes=0-", "bytes=5-9", "bytes=-3", "bytes=0-0,5-6", "items=0-1", "bytes=9-5",
		"bytes=99999999999999999999-", "bytes= 1 - 2 ", "bytes=-0", "bytes=--1", "BYTES=1-"} {
		f.Add(h, int64(10))
		f.Add(h, int64(0))
	}
	f.Fuzz(func(t *testing.T, header string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 { // math.MinInt64
			return
		}
		off, n, partial, err := parseRange(header, size)
		if err != nil {
			return
		}
		if off < 0 || n < 0 || off > size || n > size-off {
			t.Fatalf("parseRange(%q, %d) = [%d, +%d): outside the blob", header, size, off, n)
		}
		if !partial && (off != 0 || n != size) {
			t.Fatalf("parseRange(%q, %d) = [%d, +%d) not partial, but not the whole blob", header, size, off, n)
		}
		if partial && n == 0 {
			t.Fatalf("parseRange(%q, %d): an empty partial range should be 416", header, size)
		}
	})
}
