package registry

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// byteRange is a satisfiable range of a blob: length bytes from start.
type byteRange struct {
	start, length int64
}

// contentRange is the Content-Range header of a 206 response serving br of a size-byte blob.
func (br byteRange) contentRange(size int64) string {
	return fmt.Sprintf("bytes %d-%d/%d", br.start, br.start+br.length-1, size)
}

// errRangeNotSatisfiable builds the 416 answer to a Range header that selects no byte of a
// size-byte blob; the handler adds Content-Range: bytes */size.
func errRangeNotSatisfiable(h string, size int64) *errcode.Error {
	return errcode.Errorf(http.StatusRequestedRangeNotSatisfiable, errcode.CodeRangeInvalid,
		"range %q is not satisfiable for a blob of %d bytes", h, size)
}

// parseRange interprets a request's Range header against a blob of size bytes, as RFC 9110
// §14 with one range:
//
//	bytes=<first>-<last>  last is inclusive and clamped to the end
//	bytes=<first>-        to the end
//	bytes=-<suffix>       the last suffix bytes (the whole blob when suffix >= size)
//
// It returns nil and no error when the whole blob is to be served: no header, a unit other
// than bytes, or several ranges (which RFC 9110 lets a server ignore). A malformed bytes range,
// a first byte past the end, a last byte before the first (e.g. "500-0") or an empty suffix
// ("-0") is an *errcode.Error with status 416 and RANGE_INVALID.
func parseRange(h string, size int64) (*byteRange, error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return nil, nil
	}
	unit, spec, ok := strings.Cut(h, "=")
	if !ok {
		return nil, errRangeNotSatisfiable(h, size)
	}
	if !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return nil, nil
	}
	if strings.Contains(spec, ",") {
		return nil, nil
	}
	spec = strings.TrimSpace(spec)
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return nil, errRangeNotSatisfiable(h, size)
	}
	if first == "" {
		suffix, err := parseRangeInt(last)
		if err != nil || suffix == 0 || size == 0 {
			return nil, errRangeNotSatisfiable(h, size)
		}
		suffix = min(suffix, size)
		return &byteRange{start: size - suffix, length: suffix}, nil
	}
	start, err := parseRangeInt(first)
	if err != nil || start >= size {
		return nil, errRangeNotSatisfiable(h, size)
	}
	end := size - 1
	if last != "" {
		e, err := parseRangeInt(last)
		if err != nil || e < start {
			return nil, errRangeNotSatisfiable(h, size)
		}
		end = min(e, size-1)
	}
	return &byteRange{start: start, length: end - start + 1}, nil
}

// parseRangeInt parses a non-negative decimal of a Range header: digits only (no sign, no
// spaces), fitting an int64.
func parseRangeInt(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("parse range: %q is not a decimal", s)
	}
	return strconv.ParseInt(s, 10, 64)
}
