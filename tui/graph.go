package tui

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// receiver is one member of a swarm as the peer graph draws it: what it receives and from whom.
type receiver struct {
	addr  string
	peer  *snapshot.SwarmPeer // nil for an address only edges name
	rate  float64
	bytes int64
	edges []snapshot.Edge // incoming, fastest first
}

// receivers groups sw's edges by receiver: every agent, and any other address an edge goes to.
// Fastest first, then most bytes, then by address, so the busiest part of the swarm is on top.
func receivers(sw snapshot.Swarm) []receiver {
	byAddr := map[string]*receiver{}
	var order []string
	add := func(addr string) *receiver {
		r, ok := byAddr[addr]
		if !ok {
			r = &receiver{addr: addr}
			byAddr[addr] = r
			order = append(order, addr)
		}
		return r
	}
	for i := range sw.Peers {
		p := &sw.Peers[i]
		if p.Role != "origin" {
			add(p.Addr).peer = p
		}
	}
	origin := map[string]bool{}
	for _, p := range sw.Peers {
		if p.Role == "origin" {
			origin[p.Addr] = true
		}
	}
	for _, e := range sw.Edges {
		if origin[e.To] {
			// What an origin receives is the proofs its super-seeding challenges ask for
			// (docs/protocol.md), not the blob: origins are senders in this graph.
			continue
		}
		r := add(e.To)
		r.edges = append(r.edges, e)
		r.rate += e.Rate
		r.bytes += e.Bytes
	}
	out := make([]receiver, 0, len(order))
	for _, a := range order {
		r := byAddr[a]
		slices.SortStableFunc(r.edges, func(a, b snapshot.Edge) int {
			return cmp.Or(cmp.Compare(b.Rate, a.Rate), cmp.Compare(b.Bytes, a.Bytes), strings.Compare(a.From, b.From))
		})
		out = append(out, *r)
	}
	slices.SortStableFunc(out, func(a, b receiver) int {
		return cmp.Or(cmp.Compare(b.rate, a.rate), cmp.Compare(b.bytes, a.bytes), strings.Compare(a.addr, b.addr))
	})
	return out
}

// isOrigin says whether addr is an origin of sw (by its role, or by an edge it sent marked so).
func isOrigin(sw snapshot.Swarm, addr string) bool {
	for _, p := range sw.Peers {
		if p.Addr == addr {
			return p.Role == "origin"
		}
	}
	for _, e := range sw.Edges {
		if e.From == addr && e.FromOrigin {
			return true
		}
	}
	return false
}

// renderGraph draws the peer graph of sw in at most maxLines lines of width cells: a line of
// the origins and what they send, then each receiver with its fastest senders as a tree, the
// edges' rates drawn as bars against the fastest edge of the swarm. Receivers that do not fit
// (and the first skip ones, scrolled past) are summed into one line, "+ N more peers, RATE",
// so the view stays readable at any swarm size.
func renderGraph(st styles, sw snapshot.Swarm, width, maxLines, skip int) []string {
	if maxLines <= 0 {
		return nil
	}
	var lines []string

	// The origins, and the rate each sends to this swarm.
	var origins []string
	sent := map[string]float64{}
	for _, e := range sw.Edges {
		sent[e.From] += e.Rate
	}
	for _, p := range sw.Peers {
		if p.Role == "origin" {
			o := st.origin.Render("◆ origin "+p.Addr) + " out " + FormatRate(sent[p.Addr])
			if p.State == "unreachable" || p.Error != "" {
				o += " " + st.bad.Render("✗ unreachable")
			}
			origins = append(origins, o)
		}
	}
	if len(origins) == 0 {
		origins = append(origins, st.dim.Render("no origin in this swarm"))
	}
	lines = append(lines, clip(strings.Join(origins, st.dim.Render(" · ")), width))

	recv := receivers(sw)
	if len(recv) == 0 {
		return append(lines, st.dim.Render("no transfers yet"))[:min(2, maxLines)]
	}
	skip = min(max(skip, 0), len(recv)-1)

	var maxRate float64
	var maxBytes int64
	addrW := 9
	for _, r := range recv {
		addrW = max(addrW, len(r.addr))
		for _, e := range r.edges {
			maxRate = max(maxRate, e.Rate)
			maxBytes = max(maxBytes, e.Bytes)
			addrW = max(addrW, len(e.From)+len("◆ origin "))
		}
	}
	addrW = min(addrW, 30)
	barW := 10
	if width < 90 {
		barW = 6
	}

	// How many senders each receiver shows: as many as fit for all of them (up to 4), else
	// one, and the receivers that still do not fit are summed at the end.
	budget := maxLines - len(lines)
	rest := recv[skip:]
	perRecv := 1
	for k := 4; k >= 1; k-- {
		need := 0
		for _, r := range rest {
			need += 1 + min(len(r.edges), k)
		}
		if skip > 0 {
			need++ // the line that sums the ones scrolled past
		}
		if need <= budget {
			perRecv = k
			break
		}
	}

	shown := make([]bool, len(recv))
	var body []string
	for i := skip; i < len(recv); i++ {
		r := recv[i]
		n := 1 + min(len(r.edges), perRecv)
		reserve := 0
		if i < len(recv)-1 || skip > 0 {
			reserve = 1 // for the "+ N more peers" line
		}
		if len(body)+n+reserve > budget {
			if len(body)+1+reserve <= budget && len(r.edges) > 0 {
				n = 1 // the receiver without its senders still says what it gets
			} else {
				break
			}
		}
		body = append(body, receiverLine(st, sw, r, addrW, width))
		for j, e := range r.edges[:min(len(r.edges), n-1)] {
			last, hidden := j == n-2, 0
			if last {
				hidden = len(r.edges) - (n - 1)
			}
			body = append(body, senderLine(st, e, last, hidden, addrW, barW, maxRate, maxBytes, isOrigin(sw, e.From), width))
		}
		shown[i] = true
	}
	var moreN int
	var moreRate float64
	for i, r := range recv {
		if !shown[i] {
			moreN++
			moreRate += r.rate
		}
	}
	lines = append(lines, body...)
	if moreN > 0 && len(lines) < maxLines {
		lines = append(lines, st.dim.Render(clip(fmt.Sprintf("+ %d more peers, %s", moreN, FormatRate(moreRate)), width)))
	}
	if len(lines) > maxLines {
		lines = lines[:maxLines]
	}
	return lines
}

// receiverLine is a receiver's head line: its address, state and progress, and what it gets
// in all.
func receiverLine(st styles, sw snapshot.Swarm, r receiver, addrW, width int) string {
	state := "?"
	if r.peer != nil {
		state = r.peer.State
		if sw.Pieces > 0 {
			state += " " + formatPercent(float64(r.peer.Pieces)/float64(sw.Pieces))
		}
	}
	from := fmt.Sprintf("◀ %s from %d", FormatRate(r.rate), len(r.edges))
	if len(r.edges) == 0 {
		from = "◀ nothing received"
	}
	head := st.title.Render(fit(r.addr, addrW)) + "  " + fit(state, 16) + "  " + from
	if r.peer != nil && r.peer.Error != "" {
		head += "  " + st.bad.Render("✗ "+r.peer.Error)
	}
	return clip(head, width)
}

// senderLine is one edge into r: the sender (origins marked), a rate bar, the rate and the
// bytes sent so far; the last one shown says how many senders it hides.
func senderLine(st styles, e snapshot.Edge, last bool, hidden int, addrW, barW int, maxRate float64, maxBytes int64, origin bool, width int) string {
	branch := "├◀ "
	if last {
		branch = "└◀ "
	}
	name := e.From
	if origin {
		name = "◆ origin " + e.From
	}
	frac := 0.0
	switch {
	case maxRate > 0:
		frac = e.Rate / maxRate
	case maxBytes > 0:
		frac = float64(e.Bytes) / float64(maxBytes)
	}
	nameCell := fit(name, addrW)
	if origin {
		nameCell = st.origin.Render(nameCell)
	}
	b := bar(frac, barW)
	if !e.Live {
		b = st.dim.Render(b)
	} else if origin {
		b = st.origin.Render(b)
	} else {
		b = st.good.Render(b)
	}
	line := "  " + st.dim.Render(branch) + nameCell + " " + b + " " + padLeft(FormatRate(e.Rate), 12) + "  " + padLeft(FormatBytes(float64(e.Bytes)), 9)
	if !e.Live {
		line += st.dim.Render("  closed")
	}
	if hidden > 0 {
		line += st.dim.Render(fmt.Sprintf("  (+%d more)", hidden))
	}
	return clip(line, width)
}
