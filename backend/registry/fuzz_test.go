package registry

import "testing"

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
