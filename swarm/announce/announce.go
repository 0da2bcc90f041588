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
	"github.com/krakenctl/krakenctl/swarm/metainfo"
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
	// Addr is the "ip:port" where the peer accepts swarm connections: an IP literal (see
	// ParseAddr), which a tracker also checks against the connection the announce came on.
	Addr string `json:"addr"`
	// Complete says the peer has the whole blob: it is a seeder.
	Complete bool `json:"complete"`
	// Have and Pieces are the peer's progress: the pieces it holds of the blob's Pieces.
	// Optional (omitted, 0 and 0, by older announcers and before the peer knows the metainfo);
	// trackers only report them (their swarm list), nothing in a handout depends on them.
	Have   int `json:"have,omitempty"`
	Pieces int `json:"pieces,omitempty"`
	// API is the "ip:port" of the peer's HTTP API, where its /swarm/torrents is served, so
	// that an operator's tools find every member of a swarm from the tracker's list.
	// Optional; an IP literal as Addr (ParseAddr), which a tracker checks against the
	// connection the announce came on as it does Addr.
	API string `json:"api,omitempty"`
}

// Validate reports the first rule r breaks, wrapping ErrInvalid and naming the field: namespace
// follows the OCI repository-name grammar, digest is a valid sha256 digest, peer_id is
// 2*wire.PeerIDLength lower-case hex digits, addr is an ip:port other peers can dial
// (ParseAddr), have and pieces obey 0 <= have <= pieces <= metainfo.MaxPieces, and api, when
// set, is an address ParseAddr accepts.
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
	if err := checkAddr(r.Addr); err != nil {
		return err
	}
	if err := CheckProgress(r.Have, r.Pieces); err != nil {
		return err
	}
	return CheckAPI(r.API)
}

// CheckProgress reports whether have of pieces is a progress an announce may carry:
// 0 <= have <= pieces <= metainfo.MaxPieces (the most pieces a blob has). Errors wrap
// ErrInvalid.
func CheckProgress(have, pieces int) error {
	switch {
	case have < 0 || pieces < 0:
		return fmt.Errorf("%w: have and pieces must not be negative (have %d, pieces %d)", ErrInvalid, have, pieces)
	case pieces > metainfo.MaxPieces:
		return fmt.Errorf("%w: pieces: %d is more than a blob has (at most %d)", ErrInvalid, pieces, metainfo.MaxPieces)
	case have > pieces:
		return fmt.Errorf("%w: have: %d is more than pieces (%d)", ErrInvalid, have, pieces)
	}
	return nil
}

// CheckAPI reports whether api is an announce's API address: empty (not given) or an address
// ParseAddr accepts. Errors wrap ErrInvalid and name the field api.
func CheckAPI(api string) error {
	if api == "" {
		return nil
	}
	_, err := parseAddr("api", api)
	return err
}

// Peer is one peer in a tracker's answer.
type Peer struct {
	// ID is the lower-case hex of the peer's wire.PeerID; the handshake must carry it.
	ID string `json:"peer_id"`
	// Addr is the "ip:port" where the peer accepts swarm connections (see ParseAddr).
	Addr string `json:"addr"`
	// Origin marks one of the blob's owning origins (always complete).
	Origin bool `json:"origin,omitempty"`
	// Complete marks a peer that has the whole blob.
	Complete bool `json:"complete,omitempty"`
}

// Validate reports whether p has a well-formed peer id and a dialable address (ParseAddr: an
// IP literal, never a name), wrapping ErrInvalid. A Client drops handed-out peers that fail it.
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

// ParseAddr parses a peer address as the protocol allows it: an IP literal and a decimal port in
// 1..65535 ("10.0.0.7:16001", "[2001:db8::7]:16001"), never a host name, so that no peer
// resolves a name another peer chose. The IP must be one other hosts can dial: not unspecified
// (nor 0.0.0.0/8, "this network"), multicast, link-local (169.254.0.0/16, fe80::/10), the
// limited broadcast address 255.255.255.255, or zoned. Loopback passes: only a tracker knows
// whether it serves a cluster on one host, and it refuses loopback otherwise. An IPv4-mapped
// IPv6 address is returned as IPv4, so each address has one spelling (AddrPort.String).
// Errors wrap ErrInvalid and name the kind of address refused.
func ParseAddr(addr string) (netip.AddrPort, error) { return parseAddr("addr", addr) }

// parseAddr is ParseAddr for the field named field (addr, or api).
func parseAddr(field, addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %s: %q is not host:port: %w", ErrInvalid, field, addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: %s: %q: port must be a number in 1..65535", ErrInvalid, field, addr)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %s: %q: host must be an IP address, not a name: peers do not resolve names", ErrInvalid, field, addr)
	}
	if ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%w: %s: %q: zoned address; other hosts cannot dial it", ErrInvalid, field, addr)
	}
	ip = ip.Unmap()
	switch {
	case ip.IsUnspecified() || thisNetwork.Contains(ip):
		return netip.AddrPort{}, fmt.Errorf("%w: %s: %q: unspecified address; announce an address other peers can dial", ErrInvalid, field, addr)
	case ip.IsMulticast():
		return netip.AddrPort{}, fmt.Errorf("%w: %s: %q: multicast address", ErrInvalid, field, addr)
	case ip.IsLinkLocalUnicast():
		return netip.AddrPort{}, fmt.Errorf("%w: %s: %q: link-local address; it means a different host on every link (169.254.169.254 is a cloud metadata service)", ErrInvalid, field, addr)
	case ip == limitedBroadcast:
		return netip.AddrPort{}, fmt.Errorf("%w: %s: %q: broadcast address", ErrInvalid, field, addr)
	case classE.Contains(ip):
		return netip.AddrPort{}, fmt.Errorf("%w: %s: %q: reserved address (240.0.0.0/4); no host has one", ErrInvalid, field, addr)
	case siteLocal.Contains(ip):
		return netip.AddrPort{}, fmt.Errorf("%w: %s: %q: site-local address (fec0::/10, deprecated); it means a different host on every site", ErrInvalid, field, addr)
	case ip.Is6() && (v4Compatible.Contains(ip) && !ip.IsLoopback() || nat64.Contains(ip) || nat64Local.Contains(ip)):
		// An IPv4 address dressed as IPv6 (::a.b.c.d, or a NAT64 translator's 64:ff9b::a.b.c.d)
		// is no host's own address, and would carry past these checks an IPv4 one they
		// refuse (loopback, link-local): a peer announces its native address.
		return netip.AddrPort{}, fmt.Errorf("%w: %s: %q: an IPv4 address embedded in IPv6 (IPv4-compatible or NAT64); announce the native address", ErrInvalid, field, addr)
	}
	return netip.AddrPortFrom(ip, uint16(n)), nil
}

var (
	// thisNetwork is 0.0.0.0/8: no host has such an address, and some kernels dial 0.x.y.z
	// as a local address.
	thisNetwork      = netip.MustParsePrefix("0.0.0.0/8")
	limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	classE           = netip.MustParsePrefix("240.0.0.0/4")
	siteLocal        = netip.MustParsePrefix("fec0::/10")
	v4Compatible     = netip.MustParsePrefix("::/96") // but :: (refused above) and ::1 (loopback)
	nat64            = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local       = netip.MustParsePrefix("64:ff9b:1::/48")
)

// checkAddr reports whether addr is a peer address ParseAddr accepts.
func checkAddr(addr string) error {
	_, err := ParseAddr(addr)
	return err
}

func lowerHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }
