package tui

import (
	"time"

	"fmt"
	"slices"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// MinWidth and MinHeight are the smallest terminal the full view is drawn in; below it the
// view says so and shows a compact list of the swarms.
const (
	MinWidth  = 80
	MinHeight = 24
)

// View draws the model: the full view, or the compact one in a small terminal, or the help.
func (m Model) View() string {
	w, h := m.width, m.height
	if w <= 0 || h <= 0 {
		return ""
	}
	if m.help {
		return m.helpView()
	}
	var lines []string
	if w < MinWidth || h < MinHeight {
		lines = m.compact()
	} else {
		lines = m.full()
	}
	for i := range lines {
		lines[i] = clip(lines[i], w)
	}
	if len(lines) > h {
		lines = lines[:h]
	}
	return strings.Join(lines, "\n")
}

// compact is the view of a terminal smaller than MinWidth x MinHeight: what is wrong, then one
// line per swarm and the status, as far as they fit.
func (m Model) compact() []string {
	msg := fmt.Sprintf("terminal too small (%dx%d), need %dx%d", m.width, m.height, MinWidth, MinHeight)
	var lines []string
	for _, l := range strings.Split(ansi.Wrap(msg, m.width, " "), "\n") {
		lines = append(lines, m.st.warn.Render(l))
	}
	for _, sw := range m.visibleSwarms() {
		lines = append(lines, fmt.Sprintf("%s %4s %s", ShortDigest(sw.Digest), formatPercent(sw.Progress), FormatRate(sw.RateIn)))
	}
	if len(lines) > m.height-1 {
		lines = lines[:max(m.height-1, 1)]
	}
	if m.height > 1 {
		lines = append(lines, m.statusBar(m.width))
	}
	return lines
}

// Fixed lines of the full view: the header and status bar, two panel titles and two table
// headers, the ring and build-index lines, the events title and a title of the graph.
const fixedLines = 1 + 1 + 2 + 2 + 2 + 1 + 1

// full is the view of a terminal of at least MinWidth x MinHeight.
func (m Model) full() []string {
	w, h := m.width, m.height
	vis := m.visibleSwarms()
	hosts := m.visibleHosts(vis)
	var sel *snapshot.Swarm
	if len(vis) > 0 {
		sel = &vis[m.selectedIndex(vis)]
	}

	evs := m.visibleEvents()

	// Share the height: events get a few rows (more in a tall terminal), the tables a quarter
	// each (a half for the focused one), the graph the rest; what the graph does not need goes
	// back to the tables, then the events.
	maxEvents := 3 + (h-MinHeight)/6
	eventRows := min(max(len(evs), 1), maxEvents)
	avail := h - fixedLines - eventRows
	share := func(p panel) int {
		if m.focus == p {
			return max(avail/2, 2)
		}
		return max(avail/4, 2)
	}
	swRows := min(max(len(vis), 1), share(panelSwarms))
	hostRows := min(max(len(hosts), 1), share(panelHosts))
	graphRows := max(avail-swRows-hostRows, 1)
	need := 1
	if sel != nil {
		need = len(renderGraph(m.st, *sel, w, 1<<20, m.graphScroll))
	}
	if spare := graphRows - need; spare > 0 {
		graphRows = need
		give := func(rows *int, want int) {
			add := min(spare, max(want-*rows, 0))
			*rows += add
			spare -= add
		}
		give(&swRows, len(vis))
		give(&hostRows, len(hosts))
		give(&eventRows, len(evs))
	}

	var lines []string
	lines = append(lines, m.header(w))
	lines = append(lines, m.title(panelSwarms, fmt.Sprintf("swarms in flight (%d of %d)", len(vis), len(m.cluster.Swarms))))
	lines = append(lines, swarmTable(m.st, vis, m.selectedDigestIn(vis), SortColumns[m.sortCol], m.reverse, swRows, w)...)

	if sel != nil {
		lines = append(lines, m.title(panelGraph, graphTitle(*sel)))
		lines = append(lines, renderGraph(m.st, *sel, w, graphRows, m.graphScroll)...)
	} else {
		lines = append(lines, m.title(panelGraph, "peer graph"))
		lines = append(lines, m.st.dim.Render(m.emptySwarmsText()))
	}

	lines = append(lines, m.title(panelHosts, fmt.Sprintf("hosts (%d)", len(hosts))))
	lines = append(lines, hostTable(m.st, hosts, m.hostScroll, hostRows, w)...)
	lines = append(lines, ringLine(m.st, m.cluster.Ring, w), buildIndexLine(m.st, m.cluster.BuildIndex, m.cluster.Time, w))

	lines = append(lines, m.title(panelEvents, fmt.Sprintf("events (%d)", len(evs))))
	lines = append(lines, eventLines(m.st, evs, m.eventScroll, eventRows, w)...)

	// Pad so that the status bar sits on the last line.
	for len(lines) < h-1 {
		lines = append(lines, "")
	}
	lines = append(lines[:min(len(lines), h-1)], m.statusBar(w))
	return lines
}

// selectedDigestIn is the digest the table marks as selected.
func (m Model) selectedDigestIn(vis []snapshot.Swarm) string {
	if len(vis) == 0 {
		return ""
	}
	return string(vis[m.selectedIndex(vis)].Digest)
}

func (m Model) emptySwarmsText() string {
	switch {
	case !m.have && m.err != nil:
		return "no snapshot yet: " + m.err.Error()
	case !m.have:
		return "waiting for the first snapshot…"
	case m.filter != "" && len(m.cluster.Swarms) > 0:
		return fmt.Sprintf("no swarm matches %q (esc clears the filter)", m.filter)
	}
	return "no swarms in flight"
}

// title is a panel's title line; the focused panel's is marked and coloured.
func (m Model) title(p panel, text string) string {
	if m.focus == p {
		return m.st.focusTitle.Render("▶ " + text)
	}
	return m.st.title.Render("  " + text)
}

func graphTitle(sw snapshot.Swarm) string {
	origins, live := 0, 0
	for _, p := range sw.Peers {
		if p.Role == "origin" {
			origins++
		}
	}
	for _, e := range sw.Edges {
		if e.Live {
			live++
		}
	}
	return fmt.Sprintf("peer graph %s · %d peers (%d origins) · %d edges (%d live)",
		ShortDigest(sw.Digest), len(sw.Peers), origins, len(sw.Edges), live)
}

// header is the first line: what the view shows and when it was taken.
func (m Model) header(w int) string {
	s := m.st.title.Render("krakenctl top")
	if m.have {
		s += "  " + m.cluster.Time.UTC().Format("2006-01-02 15:04:05Z")
		s += m.st.dim.Render(fmt.Sprintf("  %d swarms · %d hosts · %d ring members", len(m.cluster.Swarms), len(m.cluster.Hosts), len(m.cluster.Ring)))
	}
	return clip(s, w)
}

// statusBar is the last line: what the view lacks (a failing source, unreachable roles),
// whether it is paused, the filter and sort, and the help hint on the right.
func (m Model) statusBar(w int) string {
	var parts []string
	if m.paused {
		p := "PAUSED"
		if m.pendingCount > 0 {
			p += fmt.Sprintf(" (%d updates waiting)", m.pendingCount)
		}
		parts = append(parts, m.st.paused.Render(p))
	}
	if m.err != nil {
		parts = append(parts, m.st.bad.Render(fmt.Sprintf("✗ source: %v (%d failures, showing the last snapshot)", m.err, m.fails)))
	}
	if len(m.cluster.Errors) > 0 {
		var un []string
		for _, e := range m.cluster.Errors {
			un = append(un, strings.TrimSpace(e.Role+" "+e.Addr))
		}
		parts = append(parts, m.st.bad.Render("✗ unreachable: "+strings.Join(un, ", ")))
	}
	if m.filtering {
		parts = append(parts, m.st.key.Render("/")+m.filter+"▏")
	} else if m.filter != "" {
		parts = append(parts, "filter: "+m.filter)
	}
	arrow := "▼"
	if m.reverse {
		arrow = "▲"
	}
	parts = append(parts, m.st.dim.Render("sort: "+SortColumns[m.sortCol]+arrow))
	left := strings.Join(parts, "  ")
	right := m.st.key.Render("?") + m.st.dim.Render(" help  ") + m.st.key.Render("q") + m.st.dim.Render(" quit")
	rw := lipgloss.Width(right)
	if w < rw+10 {
		return clip(left, w)
	}
	return fit(left, w-rw-1) + " " + right
}

// helpView is the key list over a cleared screen.
func (m Model) helpView() string {
	keys := [][2]string{
		{"↑/k ↓/j", "select a swarm; scroll the focused panel"},
		{"tab", "focus the next panel (shift+tab: previous)"},
		{"enter", "focus the peer graph of the selected swarm"},
		{"/", "filter by digest or host address (enter keeps it)"},
		{"esc", "clear the filter"},
		{"s / S", "next sort column / reverse the order"},
		{"p, space", "pause: stop applying new snapshots"},
		{"?", "this help (any key closes it)"},
		{"q, ctrl+c", "quit"},
	}
	var b strings.Builder
	b.WriteString(m.st.title.Render("krakenctl top — keys") + "\n\n")
	for _, k := range keys {
		b.WriteString(m.st.key.Render(fit(k[0], 11)) + " " + k[1] + "\n")
	}
	b.WriteString("\n" + m.st.dim.Render("◆ marks an origin; bars are rates against the fastest edge or a host's cap."))
	box := m.st.help.Render(b.String())
	out := m.st.r.Place(m.width, m.height, lipgloss.Center, lipgloss.Center, box)
	lines := strings.Split(out, "\n")
	for i := range lines {
		lines[i] = clip(lines[i], m.width)
	}
	if len(lines) > m.height {
		lines = lines[:m.height]
	}
	return strings.Join(lines, "\n")
}

// visibleEvents are the log's events worth an operator's eye that pass the filter.
func (m Model) visibleEvents() []snapshot.HostEvent {
	var out []snapshot.HostEvent
	for _, e := range m.events {
		if !notable(e.Kind) {
			continue
		}
		if m.filter != "" && !matches(m.filter, string(e.Digest)) && !matches(m.filter, e.Host) && !matches(m.filter, e.Addr) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// notable says whether an event kind goes in the log: what went wrong or changed, not the
// per-piece and per-connection traffic the graph already shows.
func notable(k snapshot.EventKind) bool {
	switch k {
	case snapshot.EventPieceReceived, snapshot.EventPieceSent, snapshot.EventConnOpen, snapshot.EventConnClose:
		return false
	}
	return true
}

// swarmTable is the swarms panel: a header and up to rows rows, scrolled so the selected one
// shows.
func swarmTable(st styles, vis []snapshot.Swarm, selected, sortCol string, reverse bool, rows, w int) []string {
	cols := []struct {
		name, sort string
		width      int
		right      bool
	}{
		{"DIGEST", "digest", 12, false}, {"SIZE", "size", 8, true}, {"PROGRESS", "progress", 15, false},
		{"RATE", "rate", 11, true}, {"PEERS", "peers", 6, true}, {"ORIGIN", "origin", 7, true}, {"ETA", "eta", 6, true},
	}
	var hdr []string
	for _, c := range cols {
		n := c.name
		if c.sort == sortCol {
			if reverse {
				n += "▲"
			} else {
				n += "▼"
			}
		}
		if c.right {
			hdr = append(hdr, padLeft(n, c.width))
		} else {
			hdr = append(hdr, fit(n, c.width))
		}
	}
	lines := []string{st.header.Render(clip("  "+strings.Join(hdr, " ")+" STATE", w))}
	if len(vis) == 0 {
		return lines
	}
	sel := slices.IndexFunc(vis, func(s snapshot.Swarm) bool { return string(s.Digest) == selected })
	start := 0
	if sel >= rows {
		start = sel - rows + 1
	}
	for i := start; i < len(vis) && i < start+rows; i++ {
		sw := vis[i]
		eta := FormatSeconds(sw.ETA)
		state := swarmState(sw)
		cells := []string{
			fit(ShortDigest(sw.Digest), 12),
			padLeft(FormatBytes(float64(sw.Size)), 8),
			bar(sw.Progress, 10) + " " + padLeft(formatPercent(sw.Progress), 4),
			padLeft(FormatRate(sw.RateIn), 11),
			padLeft(fmt.Sprint(len(sw.Peers)), 6),
			padLeft(formatPercent(sw.OriginShare), 7),
			padLeft(eta, 6),
		}
		mark := "  "
		if i == sel {
			mark = "▶ "
		}
		line := fit(mark+strings.Join(cells, " ")+" "+state, w)
		if i == sel {
			line = st.selected.Render(line)
		} else if state == "failed" {
			line = st.bad.Render(line)
		}
		lines = append(lines, line)
	}
	if rest := len(vis) - (start + rows); rest > 0 && rows > 0 {
		// The last row says what is below instead of showing one more swarm.
		lines[len(lines)-1] = st.dim.Render(clip(fmt.Sprintf("  + %d more swarms (↓ to scroll)", rest+1), w))
	}
	return lines
}

// swarmState is a swarm's state in a word or two: done, failed (a member failed), or in flight.
func swarmState(sw snapshot.Swarm) string {
	if sw.Done {
		return "done"
	}
	for _, p := range sw.Peers {
		if p.State == "failed" {
			return "failed"
		}
	}
	return "in flight"
}

// hostTable is the hosts panel: origins then agents, their rates against their caps,
// connections and blacklisted peers; a down host shows its error.
func hostTable(st styles, hosts []snapshot.Host, skip, rows, w int) []string {
	addrW := 15
	for _, h := range hosts {
		addrW = max(addrW, len(h.API))
	}
	addrW = min(addrW, 24)
	hdr := fit("ROLE", 6) + " " + fit("HOST", addrW) + " " + fit("IN / CAP", 21) + " " + fit("OUT / CAP", 21) + " " + padLeft("CONNS", 5) + " " + padLeft("BL", 3) + "  SWARM ADDR"
	lines := []string{st.header.Render(clip("  "+hdr, w))}
	if len(hosts) == 0 {
		return append(lines, st.dim.Render("  no hosts known"))
	}
	skip = min(max(skip, 0), max(len(hosts)-rows, 0))
	for i := skip; i < len(hosts) && i < skip+rows; i++ {
		h := hosts[i]
		role := fit(h.Role, 6)
		if h.Role == "origin" {
			role = st.origin.Render(role)
		}
		head := "  " + role + " " + fit(h.API, addrW) + " "
		if !h.Up {
			msg := "✗ DOWN"
			if h.Error != "" {
				msg += ": " + h.Error
			}
			lines = append(lines, clip(head+st.bad.Render(msg), w))
			continue
		}
		bl := padLeft(fmt.Sprint(len(h.Blacklisted)), 3)
		if len(h.Blacklisted) > 0 {
			bl = st.bad.Render(bl)
		}
		// The swarm address is how the peer graph names the host; the last column, so a
		// narrow terminal loses it first.
		lines = append(lines, clip(head+capCell(st, h.RateIn, h.IngressCap)+" "+capCell(st, h.RateOut, h.EgressCap)+" "+padLeft(fmt.Sprint(h.Conns), 5)+" "+bl+"  "+st.dim.Render(h.Addr), w))
	}
	if rest := len(hosts) - (skip + rows); rest > 0 {
		lines[len(lines)-1] = st.dim.Render(clip(fmt.Sprintf("  + %d more hosts (tab to hosts, ↓ to scroll)", rest+1), w))
	}
	return lines
}

// capCell is a rate against a cap in 21 cells: the rate, a bar of the fraction used and the
// percentage; "no cap" when there is none. Near the cap is warned, at it is bad.
func capCell(st styles, rate float64, limit int64) string {
	r := padLeft(FormatRate(rate), 10)
	if limit <= 0 {
		return r + st.dim.Render(fit(" no cap", 11))
	}
	f := rate / float64(limit)
	b := bar(f, 5) + padLeft(formatPercent(f), 5)
	switch {
	case f >= 0.95:
		b = st.bad.Render(b)
	case f >= 0.75:
		b = st.warn.Render(b)
	}
	return r + " " + b
}

// ringLine is the ring's members and their health, on one line.
func ringLine(st styles, ring []snapshot.RingEntry, w int) string {
	s := st.title.Render("  ring ")
	if len(ring) == 0 {
		return clip(s+st.dim.Render(" no ring members known"), w)
	}
	healthy := 0
	var parts []string
	for _, e := range ring {
		p := "◆ " + e.Addr
		switch {
		case e.Healthy && e.Reachable:
			healthy++
			p = st.good.Render(p + " ok")
		case e.Healthy:
			healthy++
			p = st.warn.Render(p + " ok (not reachable from here)")
		default:
			p = st.bad.Render(fmt.Sprintf("%s ✗ %d failed checks", p, e.Failures))
		}
		parts = append(parts, p)
	}
	return clip(s+fmt.Sprintf("%d/%d healthy: ", healthy, len(ring))+strings.Join(parts, st.dim.Render(" · ")), w)
}

// buildIndexLine is the build-index's Raft leader and term, then its replication queues: a
// remote with parked items or failing since its last success is drawn as a problem.
func buildIndexLine(st styles, bi *snapshot.BuildIndexState, now time.Time, w int) string {
	s := st.title.Render("  build-index ")
	switch {
	case bi == nil:
		s += st.dim.Render("none in this cluster")
	case bi.Error != "":
		s += st.bad.Render("✗ " + bi.Error)
	case bi.Leader == "":
		s += st.bad.Render(fmt.Sprintf("✗ no leader (term %d, %d nodes)", bi.Term, bi.Nodes))
	default:
		s += fmt.Sprintf("leader %s · term %d · %d nodes", bi.Leader, bi.Term, bi.Nodes)
	}
	if bi != nil {
		for _, q := range bi.Replication {
			s += st.dim.Render(" · ") + replicationCell(st, q, now)
		}
	}
	return clip(s, w)
}

// replicationCell is one remote's queue: "→ dc2 3 pending (oldest 2m05s) 1 parked".
func replicationCell(st styles, q snapshot.RemoteQueue, now time.Time) string {
	s := "→ " + q.Name
	switch {
	case q.Pending == 0 && q.Parked == 0:
		return s + st.dim.Render(" in sync")
	case q.Pending > 0:
		s += fmt.Sprintf(" %d pending", q.Pending)
		if !q.OldestPending.IsZero() {
			s += " (oldest " + FormatDuration(now.Sub(q.OldestPending)) + ")"
		}
	}
	if q.Parked > 0 {
		s += st.bad.Render(fmt.Sprintf(" %d parked", q.Parked))
	}
	if q.LastError != "" && q.LastErrorAt.After(q.LastSuccess) {
		s += st.bad.Render(" ✗ " + q.LastError)
	}
	return s
}

// eventLines are the newest rows events (scrolled back by back), oldest at the top.
func eventLines(st styles, evs []snapshot.HostEvent, back, rows, w int) []string {
	if len(evs) == 0 {
		return []string{st.dim.Render("  no events yet")}
	}
	end := len(evs) - min(max(back, 0), max(len(evs)-rows, 0))
	start := max(end-rows, 0)
	var lines []string
	for _, e := range evs[start:end] {
		lines = append(lines, clip("  "+eventLine(st, e), w))
	}
	return lines
}

// eventLine is one event: time, kind, host, blob and what it says.
func eventLine(st styles, e snapshot.HostEvent) string {
	kind := fit(string(e.Kind), 16)
	switch e.Kind {
	case snapshot.EventTorrentFailed, snapshot.EventBlacklist, snapshot.EventPieceBad, snapshot.EventDialFailed, snapshot.EventConnRejected:
		kind = st.bad.Render(kind)
	case snapshot.EventOriginFallback, snapshot.EventTrackerFailover, snapshot.EventDemoted, snapshot.EventEvicted:
		kind = st.warn.Render(kind)
	case snapshot.EventTorrentDone:
		kind = st.good.Render(kind)
	}
	var detail string
	switch e.Kind {
	case snapshot.EventOriginFallback:
		detail = e.Err
		if e.Pieces > 0 {
			detail += fmt.Sprintf(" ×%d pieces", e.Pieces)
		}
	case snapshot.EventTrackerFailover:
		detail = "tracker " + e.Addr + ": " + e.Err
	case snapshot.EventBlacklist:
		detail = e.Addr + ": " + e.Err
	case snapshot.EventTorrentDone:
		detail = FormatBytes(float64(e.Bytes))
		if e.Duration > 0 {
			detail += " in " + FormatDuration(e.Duration)
		}
	default:
		detail = strings.TrimSpace(e.Addr + " " + e.Err)
	}
	dg := ""
	if e.Digest != "" {
		dg = ShortDigest(e.Digest) + " "
	}
	return st.dim.Render(e.Time.UTC().Format("15:04:05")) + " " + kind + " " + fit(e.Host, 15) + " " + dg + detail
}
