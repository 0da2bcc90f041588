package registry_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// TestParseRange pins the one Range parser every role uses (RFC 9110 §14): single ranges,
// suffixes, coalescing of parts that overlap or touch, the whole blob for what stays several
// ranges or has too many parts, and 416 for what is malformed or selects nothing.
func TestParseRange(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	whole := (*registry.ByteRange)(nil)
	r := func(start, end int64) *registry.ByteRange {
		return &registry.ByteRange{Start: start, Length: end - start + 1}
	}
	for _, c := range []struct {
		h    string
		want *registry.ByteRange
	}{
		{"", whole},
		{"bytes=0-0", r(0, 0)},
		{"bytes=10-19", r(10, 19)},
		{"bytes=10-", r(10, size-1)},
		{"bytes=-10", r(size-10, size-1)},
		{"bytes=-99999999", r(0, size-1)},
		{"bytes=10-99999999", r(10, size-1)},
		{" BYTES = 5 - 9 ", r(5, 9)},
		{"items=0-1", whole},
		// coalesced into one range: served as that range
		{"bytes=0-0,0-0,0-0", r(0, 0)},
		{"bytes=0-9,10-19", r(0, 19)},
		{"bytes=10-19,0-9", r(0, 19)},
		{"bytes=0-15,5-9", r(0, 15)},
		{"bytes=5-9,0-20", r(0, 20)},
		{"bytes=0-9,-0", r(0, 9)},                            // an unsatisfiable part is dropped
		{"bytes=0-9,2000000-", r(0, 9)},                      // so is one past the end
		{"bytes=0-1,,", r(0, 1)},                             // empty list elements are ignored
		{"bytes=-5," + "1048570-1048575", r(size-6, size-1)}, // suffix and range touching
		// still several ranges: the whole blob, never a multipart body
		{"bytes=0-1,5-6", whole},
		{"bytes=0-0,2-2", whole},
		// more parts than MaxRangeParts: ignored, whatever they hold
		{"bytes=" + strings.Repeat("0-0,", 20000) + "0-0", whole},
		{"bytes=" + strings.Repeat("x,", registry.MaxRangeParts), whole},
	} {
		got, err := registry.ParseRange(c.h, size)
		require.NoError(t, err, c.h)
		require.Equal(t, c.want, got, c.h)
	}

	for _, c := range []struct {
		h    string
		size int64
	}{
		{"bytes=-0", size}, // was a 206 with Content-Range bytes 1048576-1048575/1048576 on origins
		{"bytes=-0,-0", size},
		{"bytes=1048576-", size},
		{"bytes=2000000-3000000", size},
		{"bytes=5-4", size},
		{"bytes=a-b", size},
		{"bytes=--5", size},
		{"bytes=5", size},
		{"bytes=-", size},
		{"bytes=+1-2", size},
		{"bytes=99999999999999999999-", size},
		{"bytes=0-1,x", size}, // one malformed part spoils the header
		{"bytes=,", size},
		{"bytes", size},
	} {
		got, err := registry.ParseRange(c.h, c.size)
		require.Nil(t, got, c.h)
		e := registry.FromError(err)
		require.Equal(t, http.StatusRequestedRangeNotSatisfiable, e.Status, c.h)
		require.Equal(t, errcode.CodeRangeInvalid, e.Code, c.h)
	}
	for _, h := range []string{"bytes=0-", "bytes=-5", "bytes=0-0"} {
		got, err := registry.ParseRange(h, 0)
		require.NoError(t, err, "an empty blob is served whole: %s", h)
		require.Nil(t, got, h)
	}
	require.Equal(t, "bytes */1048576", registry.UnsatisfiedRange(size))
	require.Equal(t, "bytes 10-19/1048576", r(10, 19).ContentRange(size))
}
