package proxy

import (
	"strings"
	"testing"
)

// FuzzDecodeSession: upload ids come from request paths. Decoding never panics, never names an
// origin that is not configured (the proxy must not send requests where a client points it),
// and what it accepts round-trips through encodeSession.
func FuzzDecodeSession(f *testing.F) {
	origins := map[string]bool{"127.0.0.1:15000": true, "origin-b.internal:15000": true}
	member := func(a string) bool { return origins[a] }
	f.Add(encodeSession("127.0.0.1:15000", "0123456789abcdef0123456789abcdef"))
	f.Add(encodeSession("10.9.9.9:80", "0123456789abcdef0123456789abcdef"))
	f.Add("MTI3LjAuMC4xOjE1MDAw.")
	f.Add("..")
	f.Add("")
	f.Fuzz(func(t *testing.T, id string) {
		addr, sid, err := decodeSession(id, member)
		if err != nil {
			return
		}
		if !origins[addr] {
			t.Fatalf("%q decoded to unconfigured origin %q", id, addr)
		}
		if sid == "" || strings.ContainsAny(sid, "/?#%") {
			t.Fatalf("%q decoded to unsafe session id %q", id, sid)
		}
		if got := encodeSession(addr, sid); got != id {
			t.Fatalf("%q decoded to (%q, %q), which encodes as %q", id, addr, sid, got)
		}
	})
}
