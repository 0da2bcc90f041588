package announce_test

import (
	"encoding/json"
	"testing"

	"github.com/krakenctl/krakenctl/swarm/announce"
)

// FuzzRequest: an announce body from the network either fails to decode or validate, or is a
// request whose fields obey the protocol's rules.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"namespace":"library/ubuntu","digest":"sha256:` + hex64 + `","peer_id":"` + hex40 + `","addr":"127.0.0.1:16001","complete":true}`))
	f.Add([]byte(`{"namespace":"","digest":"sha256:zz","peer_id":"x","addr":"nope"}`))
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
			_ = p.Validate()
		}
	})
}

const (
	hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	hex40 = "0123456789abcdef0123456789abcdef01234567"
)
