package cmdutil

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// ParseDigest parses a blob digest given on the command line: "sha256:<64 hex digits>" or the
// 64 hex digits alone, in lower case. The error says what is accepted; callers wrap it in a
// usage error naming the argument or flag.
//
// It accepts what registry.ParseDigest accepts on the servers' URLs, but answers a person, not
// an HTTP client, and so does not link the server side.
func ParseDigest(s string) (digest.Digest, error) {
	in := s
	if !strings.Contains(s, ":") {
		s = string(digest.SHA256) + ":" + s
	}
	d, err := digest.Parse(s)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("%q is not a sha256 digest: want sha256:<64 lower-case hex digits> or the 64 hex digits alone", in)
	}
	return d, nil
}
