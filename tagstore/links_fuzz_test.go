package tagstore_test

import (
	"strings"
	"testing"

	"github.com/krakenctl/krakenctl/tagstore"
)

// FuzzParseLinkName: link names come from HTTP paths. Whatever the input, parsing never
// panics; an accepted name has a known kind, the right number of valid digests, and rebuilds
// to itself; and every accepted name is also a valid prefix.
func FuzzParseLinkName(f *testing.F) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, s := range []string{"blob/" + d, "manifest/" + d, "referrer/" + d + "/" + d, "blob/", "referrer/" + d,
		"blob/sha512:" + strings.Repeat("0", 128), "tag/x", "", "/", "blob//" + d, "blob/" + d + "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		kind, keys, err := tagstore.ParseLinkName(name)
		prefixErr := tagstore.ValidateLinkPrefix(name)
		if err != nil {
			return
		}
		want := map[string]int{"blob": 1, "manifest": 1, "referrer": 2}[kind]
		if want == 0 || len(keys) != want {
			t.Fatalf("%q: kind %q with %d keys accepted", name, kind, len(keys))
		}
		parts := []string{kind}
		for _, k := range keys {
			if err := k.Validate(); err != nil {
				t.Fatalf("%q: key %q accepted but invalid: %v", name, k, err)
			}
			parts = append(parts, k.String())
		}
		if got := strings.Join(parts, "/"); got != name {
			t.Fatalf("%q parsed to %q", name, got)
		}
		if prefixErr != nil {
			t.Fatalf("%q is a link name but not a valid prefix: %v", name, prefixErr)
		}
	})
}
