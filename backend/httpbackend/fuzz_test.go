package httpbackend

import "testing"

// FuzzParseJSONIndex: directory listings come from the storage server, so they are untrusted.
// Decoding never panics, and what it accepts round-trips as names.
func FuzzParseJSONIndex(f *testing.F) {
	f.Add([]byte(`["a","b"]`))
	f.Add([]byte(`[{"name":"x","type":"file"},{"name":"d","type":"directory"}]`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		names, err := parseJSONIndex(data)
		if err != nil && names != nil {
			t.Fatalf("names %q with error %v", names, err)
		}
	})
}

// FuzzParseHTMLIndex: links are relative names of this directory only.
func FuzzParseHTMLIndex(f *testing.F) {
	f.Add([]byte(`<a href="abc">abc</a><a href='../x'>x</a><a href="?C=N">sort</a>`))
	f.Add([]byte(`<A HREF="a%2Fb">`))
	f.Add([]byte(`<a href="a%3Fb">`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, n := range parseHTMLIndex(data) {
			// Escaped characters ("a%3Fb") come back unescaped; List filters names with
			// backend.CheckName, so the parser only promises non-empty names.
			if n == "" {
				t.Fatalf("empty name from %q", data)
			}
		}
	})
}
