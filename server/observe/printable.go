package observe

import (
	"fmt"
	"maps"
	"strings"
	"unicode"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// printable returns s with every rune a terminal would act on rather than show spelled out
// as an escape: C0 and C1 controls (ESC starts the sequences that move the cursor, clear
// the screen, set the window title or write to the clipboard; a newline forges a line), DEL,
// and the invisible format runes (bidirectional overrides reorder what is shown). Invalid
// UTF-8 becomes U+FFFD. Every string in a snapshot comes from a host over the network and
// ends up on an operator's terminal, through top's view, --once and swarm inspect.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == unicode.ReplacementChar || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, string(unicode.ReplacementChar)) {
		switch {
		case r < 0x80 && unicode.IsControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func printableDigest(d digest.Digest) digest.Digest { return digest.Digest(printable(string(d))) }

// makePrintable rewrites every string of c with printable, in place.
func makePrintable(c *snapshot.Cluster) {
	for i := range c.Swarms {
		s := &c.Swarms[i]
		s.Digest, s.Namespace = printableDigest(s.Digest), printable(s.Namespace)
		for j := range s.Peers {
			p := &s.Peers[j]
			p.Addr, p.API, p.PeerID = printable(p.Addr), printable(p.API), printable(p.PeerID)
			p.Role, p.State, p.Error = printable(p.Role), printable(p.State), printable(p.Error)
			p.OriginReasons = printableReasons(p.OriginReasons)
			printableBans(p.Blacklisted)
		}
		for j := range s.Edges {
			e := &s.Edges[j]
			e.From, e.To = printable(e.From), printable(e.To)
		}
	}
	for i := range c.Hosts {
		h := &c.Hosts[i]
		h.API, h.Addr, h.Role, h.Error = printable(h.API), printable(h.Addr), printable(h.Role), printable(h.Error)
		printableBans(h.Blacklisted)
	}
	for i := range c.Ring {
		c.Ring[i].Addr = printable(c.Ring[i].Addr)
	}
	if c.BuildIndex != nil {
		c.BuildIndex.Leader, c.BuildIndex.Error = printable(c.BuildIndex.Leader), printable(c.BuildIndex.Error)
		for i := range c.BuildIndex.Replication {
			q := &c.BuildIndex.Replication[i]
			q.Name, q.LastError = printable(q.Name), printable(q.LastError)
		}
	}
	for i := range c.Events {
		c.Events[i] = printableEvent(c.Events[i])
	}
	for i := range c.Errors {
		e := &c.Errors[i]
		e.Role, e.Addr, e.Error = printable(e.Role), printable(e.Addr), printable(e.Error)
	}
}

func printableEvent(e snapshot.HostEvent) snapshot.HostEvent {
	e.Host, e.Role = printable(e.Host), printable(e.Role)
	e.Kind = snapshot.EventKind(printable(string(e.Kind)))
	e.Digest = printableDigest(e.Digest)
	e.Peer, e.Addr, e.Err = printable(e.Peer), printable(e.Addr), printable(e.Err)
	return e
}

func printableBans(bs []snapshot.Blacklisted) {
	for i := range bs {
		b := &bs[i]
		b.Addr, b.Peer, b.Reason = printable(b.Addr), printable(b.Peer), printable(b.Reason)
		b.Digest = printableDigest(b.Digest)
	}
}

func printableReasons(m map[snapshot.OriginReason]int64) map[snapshot.OriginReason]int64 {
	clean := true
	for k := range m {
		if printable(string(k)) != string(k) {
			clean = false
		}
	}
	if clean {
		return m
	}
	out := make(map[snapshot.OriginReason]int64, len(m))
	for k, v := range maps.All(m) {
		out[snapshot.OriginReason(printable(string(k)))] += v
	}
	return out
}
