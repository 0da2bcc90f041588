package registry

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// MaxRangeParts is the most comma-separated parts of a Range header that ParseRange looks at;
// a header with more is ignored (the whole blob is served). Real clients send one.
const MaxRangeParts = 64

// ByteRange is a satisfiable range of a blob: Length (>= 1) bytes from Start.
type ByteRange struct {
	Start, Length int64
}

// ContentRange is the Content-Range header of a 206 response serving br of a size-byte blob.
func (br ByteRange) ContentRange(size int64) string {
	return fmt.Sprintf("bytes %d-%d/%d", br.Start, br.Start+br.Length-1, size)
}

// UnsatisfiedRange is the Content-Range header of a 416 answer for a size-byte blob.
func UnsatisfiedRange(size int64) string {
	return "bytes */" + strconv.FormatInt(size, 10)
}

// errRange builds the 416 answer to a Range header; the handler adds Content-Range: bytes */size
// (UnsatisfiedRange).
func errRange(format string, a ...any) *errcode.Error {
	return errcode.Errorf(http.StatusRequestedRangeNotSatisfiable, errcode.CodeRangeInvalid, format, a...)
}

// ParseRange interprets a request's Range header against a blob of size bytes, as RFC 9110 §14.
// It is the one Range parser of every role (origin, agent, and the registry API of proxy and
// agent), so they all answer a header the same way.
//
// Each part of the header's range set is one of
//
//	<first>-<last>  last is inclusive and clamped to the end of the blob
//	<first>-        to the end
//	-<suffix>       the last suffix bytes (the whole blob when suffix >= size)
//
// (whitespace around the unit, the parts and their numbers is tolerated). Parts no byte of the
// blob satisfies (a first byte past the end, a suffix of 0) are dropped; the others are sorted and coalesced where they overlap or touch. The result:
//
//   - nil and no error, to serve the whole blob (200): no header, an empty blob, a unit other than bytes, a
//     header of more than MaxRangeParts parts, or parts that stay more than one range after
//     coalescing. RFC 9110 lets a server ignore Range; serving no multipart/byteranges bodies
//     (nginx's max_ranges 1) means an answer is never larger than the blob, where 20,000
//     "0-0" parts used to get a 2.8 MB multipart body for a 1 MiB blob.
//   - one range, to serve as 206 with ContentRange.
//   - an *errcode.Error with status 416 and RANGE_INVALID for a malformed header (no "=",
//     a part that is not one of the forms above, a last byte before the first, a number that
//     does not fit an int64) or one that no byte satisfies (for example "bytes=-0"); the
//     handler sends Content-Range: UnsatisfiedRange(size) with it.
func ParseRange(h string, size int64) (*ByteRange, error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return nil, nil
	}
	unit, set, ok := strings.Cut(h, "=")
	if !ok {
		return nil, errRange("invalid range %q: want bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX", h)
	}
	if !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return nil, nil
	}
	if size == 0 {
		// No byte range of an empty blob can be written in a Content-Range (RFC 9110 allows
		// only a suffix, which would be "bytes 0--1/0"); serve it whole, as Go's ServeContent
		// does, rather than refuse a client that sends Range on every request.
		return nil, nil
	}
	if strings.Count(set, ",") >= MaxRangeParts {
		return nil, nil
	}
	var (
		ranges []ByteRange
		parts  int
	)
	for part := range strings.SplitSeq(set, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue // RFC 9110 §5.6.1: empty list elements are allowed and ignored
		}
		parts++
		br, ok, err := parseRangePart(part, size)
		if err != nil {
			return nil, errRange("invalid range %q: %v", h, err)
		}
		if ok {
			ranges = append(ranges, br)
		}
	}
	if parts == 0 {
		return nil, errRange("invalid range %q: no range in the set", h)
	}
	if len(ranges) == 0 {
		return nil, errRange("range %q is not satisfiable: the blob has %d bytes", h, size)
	}
	ranges = coalesce(ranges)
	if len(ranges) > 1 {
		return nil, nil
	}
	return &ranges[0], nil
}

// parseRangePart parses one part of a bytes range set against a size-byte blob. ok is false
// for a well-formed part that selects no byte.
func parseRangePart(part string, size int64) (br ByteRange, ok bool, err error) {
	first, last, found := strings.Cut(part, "-")
	if !found {
		return ByteRange{}, false, fmt.Errorf("%q has no '-'", part)
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		suffix, err := parseRangeInt(last)
		if err != nil {
			return ByteRange{}, false, err
		}
		if suffix == 0 || size == 0 {
			return ByteRange{}, false, nil
		}
		suffix = min(suffix, size)
		return ByteRange{Start: size - suffix, Length: suffix}, true, nil
	}
	start, err := parseRangeInt(first)
	if err != nil {
		return ByteRange{}, false, err
	}
	end := size - 1
	if last != "" {
		e, err := parseRangeInt(last)
		if err != nil {
			return ByteRange{}, false, err
		}
		if e < start {
			return ByteRange{}, false, fmt.Errorf("%q: the last byte is before the first", part)
		}
		end = min(e, size-1)
	}
	if start >= size {
		return ByteRange{}, false, nil
	}
	return ByteRange{Start: start, Length: end - start + 1}, true, nil
}

// coalesce sorts ranges by start and merges those that overlap or touch.
func coalesce(ranges []ByteRange) []ByteRange {
	slices.SortFunc(ranges, func(a, b ByteRange) int { return cmp.Compare(a.Start, b.Start) })
	out := ranges[:1]
	for _, r := range ranges[1:] {
		cur := &out[len(out)-1]
		if end := cur.Start + cur.Length; r.Start <= end {
			cur.Length = max(end, r.Start+r.Length) - cur.Start
			continue
		}
		out = append(out, r)
	}
	return out
}

// parseRangeInt parses a non-negative decimal of a Range header: digits only (no sign, no
// spaces), fitting an int64.
func parseRangeInt(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a byte position", s)
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a byte position that fits 63 bits", s)
	}
	return v, nil
}
