package registry

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// ParseDigest parses a blob digest from a URL or query. It accepts "sha256:<64 hex>" and, as
// Kraken did, a bare 64-character hex string meaning SHA-256. Other algorithms are unsupported:
// every piece hash and every store in krakenctl is SHA-256.
func ParseDigest(s string) (digest.Digest, error) {
	if s == "" {
		return "", Errorf(http.StatusBadRequest, CodeDigestInvalid, "missing digest")
	}
	if !strings.Contains(s, ":") {
		s = "sha256:" + s
	}
	d, err := digest.Parse(s)
	if err != nil {
		if d := digest.Digest(s); d.Algorithm() != digest.SHA256 && d.Algorithm().Available() {
			return "", Errorf(http.StatusBadRequest, CodeUnsupported, "digest algorithm %q is not supported; use sha256", d.Algorithm())
		}
		return "", &Error{Status: http.StatusBadRequest, Code: CodeDigestInvalid, Message: fmt.Sprintf("invalid digest %q", s), Err: err}
	}
	if d.Algorithm() != digest.SHA256 {
		return "", Errorf(http.StatusBadRequest, CodeUnsupported, "digest algorithm %q is not supported; use sha256", d.Algorithm())
	}
	return d, nil
}

// ParseContentRange parses a chunk's Content-Range header as the OCI spec writes it,
// "<start>-<end>" with an inclusive end, also accepting the HTTP form "bytes <start>-<end>/<total>"
// and "bytes=<start>-<end>". It returns the start offset and the chunk length.
func ParseContentRange(s string) (start, length int64, err error) {
	t := strings.TrimSpace(s)
	t = strings.TrimPrefix(t, "bytes=")
	t = strings.TrimPrefix(t, "bytes ")
	if i := strings.IndexByte(t, '/'); i >= 0 {
		t = t[:i]
	}
	a, b, ok := strings.Cut(t, "-")
	if !ok {
		return 0, 0, Errorf(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid, "invalid Content-Range %q: want <start>-<end>", s)
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start || end == math.MaxInt64 {
		return 0, 0, Errorf(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid, "invalid Content-Range %q: want <start>-<end> with start <= end", s)
	}
	return start, end - start + 1, nil
}
