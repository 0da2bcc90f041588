package registry

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzParseChallenges: WWW-Authenticate comes from the upstream registry, so it is untrusted.
// Parsing never panics, every challenge has a lower-case scheme, and parameter keys are lower
// case.
func FuzzParseChallenges(f *testing.F) {
	f.Add(`Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull"`)
	f.Add(`Basic realm="x"`)
	f.Add(`Bearer realm="unterminated`)
	f.Add(`Bearer a=b\`)
	f.Fuzz(func(t *testing.T, header string) {
		for _, c := range parseChallenges([]string{header}) {
			if c.scheme == "" {
				t.Fatalf("empty scheme from %q", header)
			}
			for k := range c.params {
				for i := 0; i < len(k); i++ {
					if k[i] >= 'A' && k[i] <= 'Z' {
						t.Fatalf("key %q not lower case from %q", k, header)
					}
				}
			}
		}
	})
}

// FuzzParseContentDigest: Docker-Content-Digest comes from the upstream registry. Whatever it
// holds, parsing never panics and what it accepts is a valid sha256 or sha512 digest.
func FuzzParseContentDigest(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("a", 64))
	f.Add("sha512:" + strings.Repeat("0", 128))
	f.Add("sha256:" + strings.Repeat("A", 64))
	f.Add("md5:d41d8cd98f00b204e9800998ecf8427e")
	f.Add("")
	f.Fuzz(func(t *testing.T, h string) {
		d, err := parseContentDigest(h)
		if err != nil {
			return
		}
		if d.Validate() != nil || (d.Algorithm() != digest.SHA256 && d.Algorithm() != digest.SHA512) || d.String() != h {
			t.Fatalf("accepted %q as %q", h, d)
		}
	})
}
