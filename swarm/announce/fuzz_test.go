package announce_test

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
)

// FuzzRequest: an announce body from the network either fails to decode or validate, or is a
// request whose fields obey the protocol's rules.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"namespace":"library/ubuntu","digest":"sha256:` + hex64 + `","peer_id":"` + hex40 + `","addr":"127.0.0.1:16001","complete":true}`))
	f.Add([]byte(`{"namespace":"","digest":"sha256:zz","peer_id":"x","addr":"nope"}`))
	f.Add([]byte(`{"namespace":"a","digest":"sha256:` + hex64 + `","peer_id":"` + hex40 + `","addr":"10.0.0.1:1","have":3,"pieces":7,"api":"10.0.0.1:16000"}`))
	f.Add([]byte(`{"namespace":"a","digest":"sha256:` + hex64 + `","peer_id":"` + hex40 + `","addr":"10.0.0.1:1","have":8,"pieces":7}`))
	f.Add([]byte(`{"namespace":"a","digest":"sha256:` + hex64 + `","peer_id":"` + hex40 + `","addr":"10.0.0.1:1","have":-1,"pieces":-1,"api":"x:1"}`))
	f.Add([]byte(`{"namespace":"a","digest":"sha256:` + hex64 + `","peer_id":"` + hex40 + `","addr":"10.0.0.1:1","pieces":1e30}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var r announce.Request
		if json.Unmarshal(body, &r) != nil {
			return
		}
		if r.Validate() != nil {
			return
		}
		if announce.CheckNamespace(r.Namespace) != nil || announce.CheckDigest(r.Digest) != nil {
			t.Fatalf("valid request with an invalid namespace or digest: %+v", r)
		}
		if _, err := announce.ParsePeerID(r.PeerID); err != nil {
			t.Fatalf("valid request with an invalid peer id: %+v", r)
		}
		if r.Have < 0 || r.Have > r.Pieces || r.Pieces > metainfo.MaxPieces {
			t.Fatalf("valid request with an impossible progress: %+v", r)
		}
		if r.API != "" {
			if _, err := announce.ParseAddr(r.API); err != nil {
				t.Fatalf("valid request with an api address ParseAddr refuses: %+v", r)
			}
		}
	})
}

// FuzzParseAddr: an address ParseAddr accepts is an IP literal of a kind a host may have, and its
// canonical spelling parses to itself.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"10.0.0.7:16001", "[::1]:1", "evil.example:80", "999.1.1.1:80", "169.254.169.254:80",
		"255.255.255.255:1", "[ff02::1]:80", "0.0.0.0:1", "[::ffff:10.0.0.1]:80", "[fe80::1%eth0]:1", ":", "1.2.3.4:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := announce.ParseAddr(s)
		if err != nil {
			return
		}
		ip := ap.Addr()
		if ip.Zone() != "" || ip.Is4In6() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast() || ap.Port() == 0 ||
			ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			t.Fatalf("ParseAddr(%q) accepted %v", s, ap)
		}
		again, err := announce.ParseAddr(ap.String())
		if err != nil || again != ap {
			t.Fatalf("ParseAddr(%q) = %v, whose spelling parses to %v, %v", s, ap, again, err)
		}
	})
}

// FuzzResponse: a tracker's answer decodes without panicking and its interval is bounded.
func FuzzResponse(f *testing.F) {
	f.Add([]byte(`{"peers":[{"peer_id":"` + hex40 + `","addr":"127.0.0.1:1","origin":true}],"interval_s":3}`))
	f.Add([]byte(`{"interval_s":-1e308}`))
	f.Add([]byte(`{"interval_s":1e308}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var r announce.Response
		if json.Unmarshal(body, &r) != nil {
			return
		}
		if d := r.Interval(); d < 0 {
			t.Fatalf("negative interval %v from %s", d, body)
		}
		for _, p := range r.Peers {
			if p.Validate() == nil {
				if _, err := netip.ParseAddrPort(p.Addr); err != nil {
					t.Fatalf("a peer at %q, not an IP literal, passed", p.Addr)
				}
			}
		}
	})
}

const (
	hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	hex40 = "0123456789abcdef0123456789abcdef01234567"
)
