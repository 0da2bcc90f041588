package announce

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// AnnouncePath is where a tracker takes announces: POST a JSON Request, get a JSON Response.
const AnnouncePath = "/announce"

// MetainfoPath is where a tracker serves a blob's metainfo (GET, the metainfo's JSON encoding).
// It has the same shape as the origins' metainfo path, so one proxy rule covers both. The
// namespace is path-escaped into one segment.
func MetainfoPath(ns string, d digest.Digest) string {
	return "/namespace/" + url.PathEscape(ns) + "/blobs/" + d.String() + "/metainfo"
}

// Sentinel errors, wrapped with %w; test them with errors.Is.
var (
	// ErrInvalid means a Request, Peer, namespace or digest breaks a rule of the protocol.
	ErrInvalid = errors.New("announce: invalid")
	// ErrRejected means a tracker refused the request with a 4xx status other than 404 for
	// metainfo: the request is wrong, and no other tracker is asked.
	ErrRejected = errors.New("announce: rejected by tracker")
	// ErrNotFound means a tracker answered that the blob does not exist (404 for metainfo).
	ErrNotFound = errors.New("announce: blob not found")
	// ErrUnavailable means no tracker gave an answer: every one failed to connect, timed out,
	// answered 5xx or sent a malformed document.
	ErrUnavailable = errors.New("announce: no tracker available")
)

// maxInterval bounds Response.Interval, so a tracker cannot silence its peers for long.
const maxInterval = time.Hour

// Request is one announce: "I am PeerID at Addr, downloading (or seeding) Digest".
type Request struct {
	// Namespace is the blob's namespace (an OCI repository name), as in the blob API.
	Namespace string `json:"namespace"`
	// Digest is the blob's SHA-256 digest.
	Digest digest.Digest `json:"digest"`
	// PeerID is the lower-case hex of the announcing peer's wire.PeerID.
	PeerID string `json:"peer_id"`
	// Addr is the "host:port" where the peer accepts swarm connections.
	Addr string `json:"addr"`
	// Complete says the peer has the whole blob: it is a seeder.
	Complete bool `json:"complete"`
}

// Validate reports the first rule r breaks, wrapping ErrInvalid and naming the field: namespace
// follows the OCI repository-name grammar, digest is a valid sha256 digest, peer_id is
// 2*wire.PeerIDLength lower-case hex digits, and addr is a host:port other peers can dial.
func (r Request) Validate() error {
	if err := CheckNamespace(r.Namespace); err != nil {
		return err
	}
	if err := CheckDigest(r.Digest); err != nil {
		return err
	}
	if _, err := ParsePeerID(r.PeerID); err != nil {
		return err
	}
	return checkAddr(r.Addr)
}

// Peer is one peer in a tracker's answer.
type Peer struct {
	// ID is the lower-case hex of the peer's wire.PeerID; the handshake must carry it.
	ID string `json:"peer_id"`
	// Addr is the "host:port" where the peer accepts swarm connections.
	Addr string `json:"addr"`
	// Origin marks one of the blob's owning origins (always complete).
	Origin bool `json:"origin,omitempty"`
	// Complete marks a peer that has the whole blob.
	Complete bool `json:"complete,omitempty"`
}

// Validate reports whether p has a well-formed peer id and a dialable address, wrapping
// ErrInvalid.
func (p Peer) Validate() error {
	if _, err := ParsePeerID(p.ID); err != nil {
		return err
	}
	return checkAddr(p.Addr)
}

// Response is a tracker's answer to an announce.
type Response struct {
	// Peers to connect to, at most the tracker's handout size, never the announcing peer: the
	// blob's owning origins first, then complete seeders, then the other peers, each group in a
	// fresh random order.
	Peers []Peer `json:"peers"`
	// IntervalSeconds is how long to wait before the next announce.
	IntervalSeconds float64 `json:"interval_s"`
}

// Interval returns IntervalSeconds as a duration, at most an hour. It returns 0 when the field
// is missing, not positive or not a number; callers then use their own default.
func (r Response) Interval() time.Duration {
	s := r.IntervalSeconds
	if math.IsNaN(s) || s <= 0 {
		return 0
	}
	if s >= maxInterval.Seconds() {
		return maxInterval
	}
	return time.Duration(s * float64(time.Second))
}

// ParsePeerID parses the hex form of a peer id (wire.PeerID.String()): exactly
// 2*wire.PeerIDLength lower-case hex digits. Errors wrap ErrInvalid.
func ParsePeerID(s string) (wire.PeerID, error) {
	var id wire.PeerID
	if len(s) != 2*wire.PeerIDLength {
		return id, fmt.Errorf("%w: peer_id: want %d hex digits, got %d characters", ErrInvalid, 2*wire.PeerIDLength, len(s))
	}
	for i := 0; i < len(s); i++ {
		if !lowerHex(s[i]) {
			return id, fmt.Errorf("%w: peer_id: %q is not lower-case hex", ErrInvalid, s)
		}
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: peer_id: %w", ErrInvalid, err)
	}
	return id, nil
}

// CheckDigest reports whether d is a valid SHA-256 digest ("sha256:" and 64 lower-case hex
// digits), the only kind the swarm moves. Errors wrap ErrInvalid.
func CheckDigest(d digest.Digest) error {
	if d == "" {
		return fmt.Errorf("%w: digest: required", ErrInvalid)
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: digest: %q: %w", ErrInvalid, d, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%w: digest: algorithm %q is not supported; use sha256", ErrInvalid, d.Algorithm())
	}
	return nil
}

// CheckNamespace reports whether ns is a valid namespace, by the grammar the origins enforce
// (backend.CheckNamespace). Errors wrap ErrInvalid.
func CheckNamespace(ns string) error {
	if ns == "" {
		return fmt.Errorf("%w: namespace: required", ErrInvalid)
	}
	if err := backend.CheckNamespace(ns); err != nil {
		return fmt.Errorf("%w: namespace: %w", ErrInvalid, err)
	}
	return nil
}

// checkAddr reports whether addr is a "host:port" another peer can dial: a host name or an IP
// address that is not unspecified, multicast or zoned, and a decimal port in 1..65535.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: addr: %q is not host:port: %w", ErrInvalid, addr, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%w: addr: %q: port must be a number in 1..65535", ErrInvalid, addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		switch {
		case ip.IsUnspecified():
			return fmt.Errorf("%w: addr: %q: unspecified address; announce an address other peers can dial", ErrInvalid, addr)
		case ip.IsMulticast():
			return fmt.Errorf("%w: addr: %q: multicast address", ErrInvalid, addr)
		case ip.Zone() != "":
			return fmt.Errorf("%w: addr: %q: zoned address; other hosts cannot dial it", ErrInvalid, addr)
		}
		return nil
	}
	if !validHostname(host) {
		return fmt.Errorf("%w: addr: %q: host is neither an IP address nor a host name", ErrInvalid, addr)
	}
	return nil
}

// validHostname reports whether h is a DNS host name: dot-separated labels of letters, digits
// and inner hyphens, each 1..63 bytes, 253 bytes in all.
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	start := 0
	for i := 0; i <= len(h); i++ {
		if i < len(h) && h[i] != '.' {
			if !labelByte(h[i]) {
				return false
			}
			continue
		}
		label := h[start:i]
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		start = i + 1
	}
	return true
}

func lowerHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

// labelByte reports whether c may appear in a label of a host name (RFC 1123).
func labelByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
}
