package registry

import (
	_ "crypto/sha512" // registers sha512 with go-digest: OCI clients push sha512 content
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// ParseDigest parses a blob digest from a URL or query. It accepts "sha256:<64 hex>" and, as
// Kraken did, a bare 64-character hex string meaning SHA-256. Other algorithms are unsupported:
// every piece hash and every store in krakenctl is SHA-256.
func ParseDigest(s string) (digest.Digest, error) {
	if s == "" {
		return "", errcode.Errorf(http.StatusBadRequest, errcode.CodeDigestInvalid, "missing digest")
	}
	if !strings.Contains(s, ":") {
		s = "sha256:" + s
	}
	d, err := digest.Parse(s)
	if err != nil {
		if d := digest.Digest(s); d.Algorithm() != digest.SHA256 && d.Algorithm().Available() {
			return "", errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported, "digest algorithm %q is not supported; use sha256", d.Algorithm())
		}
		return "", &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeDigestInvalid, Message: fmt.Sprintf("invalid digest %q", s), Err: err}
	}
	if d.Algorithm() != digest.SHA256 {
		return "", errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported, "digest algorithm %q is not supported; use sha256", d.Algorithm())
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
		return 0, 0, errcode.Errorf(http.StatusRequestedRangeNotSatisfiable, errcode.CodeRangeInvalid, "invalid Content-Range %q: want <start>-<end>", s)
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start || end == math.MaxInt64 {
		return 0, 0, errcode.Errorf(http.StatusRequestedRangeNotSatisfiable, errcode.CodeRangeInvalid, "invalid Content-Range %q: want <start>-<end> with start <= end", s)
	}
	return start, end - start + 1, nil
}

// ParseOCIDigest parses a digest from an OCI distribution URL or query: "sha256:<64 hex>" or
// "sha512:<128 hex>", lowercase, as the spec's registered algorithms. Unlike ParseDigest it takes
// no bare hex and allows sha512; errors are *errcode.Error with DIGEST_INVALID (400), or
// UNSUPPORTED (400) for a well-formed digest of another algorithm.
func ParseOCIDigest(s string) (digest.Digest, error) {
	if s == "" {
		return "", errcode.Errorf(http.StatusBadRequest, errcode.CodeDigestInvalid, "missing digest")
	}
	alg, encoded, ok := strings.Cut(s, ":")
	switch digest.Algorithm(alg) {
	case digest.SHA256, digest.SHA512:
	default:
		if ok && digestAlgorithmGrammar(alg) && encoded != "" && !strings.ContainsAny(encoded, "/?#") {
			return "", errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported, "digest algorithm %q is not supported; use sha256 or sha512", alg)
		}
		return "", errcode.Errorf(http.StatusBadRequest, errcode.CodeDigestInvalid, "invalid digest %q: want sha256:<64 hex> or sha512:<128 hex>", s)
	}
	d := digest.Digest(s)
	if err := d.Validate(); err != nil {
		return "", &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeDigestInvalid, Message: fmt.Sprintf("invalid digest %q", s), Err: err}
	}
	return d, nil
}

// digestAlgorithmGrammar reports whether alg matches the image spec's algorithm grammar,
// [a-z0-9]+ ([+._-] [a-z0-9]+)*.
func digestAlgorithmGrammar(alg string) bool {
	if alg == "" {
		return false
	}
	prevSep := true
	for i := 0; i < len(alg); i++ {
		c := alg[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			prevSep = false
		case c == '+' || c == '.' || c == '_' || c == '-':
			if prevSep {
				return false
			}
			prevSep = true
		default:
			return false
		}
	}
	return !prevSep
}
