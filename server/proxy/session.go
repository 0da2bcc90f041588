package proxy

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
)

// An upload session id names the origin that holds the session and the origin's own id:
//
//	<origin address, base64url without padding>.<origin session id>
//
// so any proxy that knows the same origins can continue a session another one started. Both
// parts are URL-safe. An id naming an origin that is not configured is an unknown session:
// the proxy never sends requests to addresses a client chose.

func encodeSession(addr, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(addr)) + "." + id
}

// decodeSession returns the origin address and the origin's session id of a proxy session id,
// or an error wrapping registry.ErrUploadUnknown when the id is malformed or names an origin
// that member does not know.
func decodeSession(s string, member func(string) bool) (addr, id string, err error) {
	enc, id, ok := strings.Cut(s, ".")
	if !ok || !client.ValidUploadID(id) {
		return "", "", fmt.Errorf("upload %q: malformed id: %w", s, registry.ErrUploadUnknown)
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", "", fmt.Errorf("upload %q: malformed id: %w", s, registry.ErrUploadUnknown)
	}
	addr = string(raw)
	if !member(addr) {
		return "", "", fmt.Errorf("upload %q: names %q, which is not a configured origin: %w", s, addr, registry.ErrUploadUnknown)
	}
	return addr, id, nil
}
