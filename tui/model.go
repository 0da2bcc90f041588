// Package tui is `krakenctl top`: bubbletea models and lipgloss views over a cluster snapshot
// (swarm/snapshot.Cluster). The models are pure: Update and View do no I/O; snapshots come in
// as messages from a tea.Cmd that calls a Source, which cli/top adapts from the servers'
// clients, so every view is tested from snapshot values built in Go. RenderText is the same
// view as plain text, for `top --once`.
package tui

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// Source hands the model cluster snapshots. Next blocks until the next snapshot is ready (the
// first one at once) or ctx ends. Each snapshot is whole except for Events, which holds only
// the events since the previous one; rates are already computed. An error is shown and the
// last snapshot kept: the view degrades, it does not stop.
type Source interface {
	Next(ctx context.Context) (snapshot.Cluster, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context) (snapshot.Cluster, error)

// Next calls f.
func (f SourceFunc) Next(ctx context.Context) (snapshot.Cluster, error) { return f(ctx) }

// Options configure the model.
type Options struct {
	// Refresh is the wait between the return of one Next and the call of the next; 0 calls
	// again at once, for a Source that paces itself. After an error the model waits at least
	// RetryAfter.
	Refresh time.Duration
	// RetryAfter is the least wait after a failed Next (default 1s), so a source that fails
	// fast is not spun on.
	RetryAfter time.Duration
	// Filter is the initial filter (a substring of a digest or of a host's address).
	Filter string
	// Sort is the initial sort column of the swarms: one of SortColumns (default "rate").
	Sort string
	// NoColor renders without any escape codes (set it when NO_COLOR is set).
	NoColor bool
	// Renderer is the lipgloss renderer the styles are made with (nil: lipgloss's default,
	// which detects the terminal on standard output). Tests pass one with a fixed profile.
	Renderer *lipgloss.Renderer
	// EventLog bounds the events kept for the log panel (default 200).
	EventLog int
}

// SortColumns are the swarm table's sort columns, in the order `s` cycles through them.
var SortColumns = []string{"rate", "progress", "eta", "origin", "peers", "size", "digest"}

// panel names what tab moves the focus between; up and down act on the focused one.
type panel int

const (
	panelSwarms panel = iota
	panelGraph
	panelHosts
	panelEvents
	numPanels
)

func (p panel) String() string {
	return [...]string{"swarms", "peer graph", "hosts", "events"}[p]
}

// Messages of the model's commands.
type (
	snapshotMsg struct{ c snapshot.Cluster }
	errMsg      struct{ err error }
	fetchMsg    struct{}
)

// Model is the `top` view's state. Build it with New.
type Model struct {
	src    Source
	opts   Options
	st     styles
	ctx    context.Context
	cancel context.CancelFunc

	width, height int

	cluster snapshot.Cluster
	have    bool // a snapshot has arrived
	events  []snapshot.HostEvent
	err     error // of the last Next; nil after a success
	fails   int   // consecutive failed Next calls

	paused        bool
	pending       *snapshot.Cluster // newest snapshot received while paused
	pendingEvents []snapshot.HostEvent
	pendingCount  int

	help      bool
	focus     panel
	filter    string
	filtering bool // typing a filter
	sortCol   int  // index into SortColumns
	reverse   bool
	selected  digest.Digest

	graphScroll, hostScroll, eventScroll int
}

// New returns the model of `top` reading src. A nil src shows no data (a view of nothing, for
// tests of the frame). The model passes Next a context derived from ctx, which quitting (q,
// ctrl+c) cancels.
func New(ctx context.Context, src Source, opts Options) tea.Model {
	return newModel(ctx, src, opts)
}

func newModel(parent context.Context, src Source, opts Options) Model {
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = time.Second
	}
	if opts.EventLog <= 0 {
		opts.EventLog = 200
	}
	// Kept in the model because bubbletea's commands take no context: a fetch started by
	// Update must still end when the view quits or the caller's context does.
	ctx, cancel := context.WithCancel(parent)
	m := Model{src: src, opts: opts, st: newStyles(opts.Renderer, opts.NoColor), ctx: ctx, cancel: cancel,
		filter: opts.Filter, width: 80, height: 24}
	if i := slices.Index(SortColumns, opts.Sort); i >= 0 {
		m.sortCol = i
	}
	return m
}

// Init starts the first fetch.
func (m Model) Init() tea.Cmd { return m.fetch(0) }

// fetch is the command that calls Next after delay.
func (m Model) fetch(delay time.Duration) tea.Cmd {
	if m.src == nil {
		return nil
	}
	if delay > 0 {
		return tea.Tick(delay, func(time.Time) tea.Msg { return fetchMsg{} })
	}
	ctx, src := m.ctx, m.src
	return func() tea.Msg {
		c, err := src.Next(ctx)
		if err != nil {
			return errMsg{err}
		}
		return snapshotMsg{c}
	}
}

// Update applies a message.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = max(msg.Width, 0), max(msg.Height, 0)
		return m, nil
	case snapshotMsg:
		m.err, m.fails = nil, 0
		if m.paused {
			c := msg.c
			m.pending = &c
			m.pendingEvents = append(m.pendingEvents, c.Events...)
			m.pendingCount++
		} else {
			m.apply(msg.c, msg.c.Events)
		}
		return m, m.fetch(m.opts.Refresh)
	case errMsg:
		m.err = msg.err
		m.fails++
		return m, m.fetch(max(m.opts.Refresh, m.opts.RetryAfter))
	case fetchMsg:
		return m, m.fetch(0)
	case tea.KeyMsg:
		return m.key(msg)
	}
	return m, nil
}

// apply makes c the shown snapshot and adds events to the log.
func (m *Model) apply(c snapshot.Cluster, events []snapshot.HostEvent) {
	m.cluster = c
	m.have = true
	m.events = append(m.events, events...)
	if over := len(m.events) - m.opts.EventLog; over > 0 {
		m.events = slices.Delete(m.events, 0, over)
	}
}

func (m Model) quit() (tea.Model, tea.Cmd) {
	m.cancel()
	return m, tea.Quit
}

// key handles a key press.
func (m Model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if k.Type == tea.KeyCtrlC {
		return m.quit()
	}
	if m.filtering {
		switch k.Type {
		case tea.KeyEsc:
			m.filtering, m.filter = false, ""
		case tea.KeyEnter:
			m.filtering = false
		case tea.KeyBackspace:
			if r := []rune(m.filter); len(r) > 0 {
				m.filter = string(r[:len(r)-1])
			}
		case tea.KeyRunes, tea.KeySpace:
			m.filter += string(k.Runes)
		case tea.KeyUp, tea.KeyDown:
			m.move(k.Type == tea.KeyDown, 1)
		}
		return m, nil
	}
	if m.help {
		// Any key but quit closes the help.
		if k.String() == "q" {
			return m.quit()
		}
		m.help = false
		return m, nil
	}
	switch k.String() {
	case "q":
		return m.quit()
	case "?":
		m.help = true
	case "p", " ":
		m.togglePause()
	case "tab":
		m.focus = (m.focus + 1) % numPanels
	case "shift+tab":
		m.focus = (m.focus + numPanels - 1) % numPanels
	case "/":
		m.filtering = true
	case "esc":
		m.filter = ""
	case "s":
		m.sortCol = (m.sortCol + 1) % len(SortColumns)
		m.reverse = false
	case "S":
		m.reverse = !m.reverse
	case "up", "k":
		m.move(false, 1)
	case "down", "j":
		m.move(true, 1)
	case "pgup":
		m.move(false, 10)
	case "pgdown":
		m.move(true, 10)
	case "home", "g":
		m.move(false, 1<<30)
	case "end", "G":
		m.move(true, 1<<30)
	case "enter":
		m.focus = panelGraph
	}
	return m, nil
}

func (m *Model) togglePause() {
	m.paused = !m.paused
	if !m.paused && m.pending != nil {
		m.apply(*m.pending, m.pendingEvents)
		m.pending, m.pendingEvents, m.pendingCount = nil, nil, 0
	}
}

// move moves the selection (swarms) or scrolls (other panels) by n.
func (m *Model) move(down bool, n int) {
	d := n
	if !down {
		d = -n
	}
	switch m.focus {
	case panelSwarms:
		vis := m.visibleSwarms()
		if len(vis) == 0 {
			return
		}
		i := min(max(m.selectedIndex(vis)+d, 0), len(vis)-1)
		m.selected = vis[i].Digest
		m.graphScroll = 0
	case panelGraph:
		n := 0
		if vis := m.visibleSwarms(); len(vis) > 0 {
			n = len(receivers(vis[m.selectedIndex(vis)]))
		}
		m.graphScroll = scroll(m.graphScroll, d, n)
	case panelHosts:
		m.hostScroll = scroll(m.hostScroll, d, len(m.visibleHosts(m.visibleSwarms())))
	case panelEvents:
		// Events scroll back from the newest.
		m.eventScroll = scroll(m.eventScroll, -d, len(m.visibleEvents()))
	}
}

// scroll moves a scroll offset by d within [0, n-1].
func scroll(at, d, n int) int {
	return max(min(at+d, n-1), 0)
}

// matches says whether the filter selects text (case-insensitive substring).
func matches(filter, text string) bool {
	return strings.Contains(strings.ToLower(text), strings.ToLower(filter))
}

// swarmMatches says whether f selects sw: by digest, or by the address of any member.
func swarmMatches(f string, sw snapshot.Swarm) bool {
	if f == "" || matches(f, string(sw.Digest)) {
		return true
	}
	for _, p := range sw.Peers {
		if matches(f, p.Addr) || p.API != "" && matches(f, p.API) {
			return true
		}
	}
	return false
}

// visibleSwarms are the snapshot's swarms that pass the filter, in the sort order.
func (m Model) visibleSwarms() []snapshot.Swarm {
	return sortSwarms(filterSwarms(m.cluster.Swarms, m.filter), SortColumns[m.sortCol], m.reverse)
}

func filterSwarms(all []snapshot.Swarm, f string) []snapshot.Swarm {
	var out []snapshot.Swarm
	for _, sw := range all {
		if swarmMatches(f, sw) {
			out = append(out, sw)
		}
	}
	return out
}

// sortSwarms sorts a copy of sws by col, each column in the direction an operator looks at it
// first (fastest, least done, longest to go, most origin traffic, biggest); reverse flips it.
// Ties fall back to the digest so the order is stable between snapshots.
func sortSwarms(sws []snapshot.Swarm, col string, reverse bool) []snapshot.Swarm {
	out := slices.Clone(sws)
	slices.SortStableFunc(out, func(a, b snapshot.Swarm) int {
		var c int
		switch col {
		case "rate":
			c = cmp.Compare(b.RateIn, a.RateIn)
		case "progress":
			c = cmp.Compare(a.Progress, b.Progress)
		case "eta":
			c = cmp.Compare(b.ETA, a.ETA)
		case "origin":
			c = cmp.Compare(b.OriginShare, a.OriginShare)
		case "peers":
			c = cmp.Compare(len(b.Peers), len(a.Peers))
		case "size":
			c = cmp.Compare(b.Size, a.Size)
		}
		if reverse {
			c = -c
		}
		if c == 0 {
			c = strings.Compare(string(a.Digest), string(b.Digest))
			if reverse && col == "digest" {
				c = -c
			}
		}
		return c
	})
	return out
}

// selectedIndex is the index of the selected swarm in vis, or 0 when it is not there.
func (m Model) selectedIndex(vis []snapshot.Swarm) int {
	for i, sw := range vis {
		if sw.Digest == m.selected {
			return i
		}
	}
	return 0
}

// visibleHosts are the hosts that pass the filter: by address, or as members of a visible
// swarm (so filtering by digest shows that swarm's hosts). Origins first, then by address.
func (m Model) visibleHosts(vis []snapshot.Swarm) []snapshot.Host {
	return filterHosts(m.cluster.Hosts, m.filter, vis)
}

func filterHosts(all []snapshot.Host, f string, vis []snapshot.Swarm) []snapshot.Host {
	members := map[string]bool{}
	if f != "" {
		for _, sw := range vis {
			for _, p := range sw.Peers {
				members[p.Addr] = true
				if p.API != "" {
					members[p.API] = true
				}
			}
		}
	}
	var out []snapshot.Host
	for _, h := range all {
		if f == "" || matches(f, h.API) || matches(f, h.Addr) || members[h.API] || h.Addr != "" && members[h.Addr] {
			out = append(out, h)
		}
	}
	slices.SortStableFunc(out, func(a, b snapshot.Host) int {
		if a.Role != b.Role {
			if a.Role == "origin" {
				return -1
			}
			if b.Role == "origin" {
				return 1
			}
		}
		return strings.Compare(a.API, b.API)
	})
	return out
}
