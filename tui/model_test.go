package tui

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// update applies msgs to m in order and returns the model and the last command.
func update(t *testing.T, m tea.Model, msgs ...tea.Msg) (Model, tea.Cmd) {
	t.Helper()
	var cmd tea.Cmd
	for _, msg := range msgs {
		m, cmd = m.Update(msg)
	}
	return m.(Model), cmd
}

func keys(s string) tea.KeyMsg { return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)} }

// loaded is a model of size w x h that has received testCluster.
func loaded(t *testing.T, w, h int, opts Options) Model {
	t.Helper()
	if opts.Renderer == nil {
		opts.Renderer = asciiRenderer()
	}
	m, _ := update(t, newModel(context.Background(), nil, opts), sizeMsg(w, h), snapshotMsg{testCluster()})
	return m
}

// rows are the digests of the swarm table's rows, in order.
func rows(v string) []string {
	var out []string
	for _, l := range strings.Split(v, "\n") {
		f := strings.Fields(strings.TrimPrefix(l, "▶"))
		if len(f) > 1 && len(f[0]) == 12 && strings.HasSuffix(f[2], "MiB") {
			out = append(out, f[0])
		}
	}
	return out
}

func short(i int) string { return ShortDigest(testDigest(i)) }

func TestViewGolden(t *testing.T) {
	for _, sz := range [][2]int{{80, 24}, {200, 60}} {
		m := loaded(t, sz[0], sz[1], Options{})
		v := m.View()
		golden(t, fmt.Sprintf("view_%dx%d", sz[0], sz[1]), v)

		lines := strings.Split(v, "\n")
		require.Len(t, lines, sz[1], "the view fills the terminal, status bar on the last line")
		for _, l := range lines {
			assert.LessOrEqual(t, ansi.StringWidth(l), sz[0], "%q", l)
		}
		assert.Contains(t, lines[0], "2026-12-07 16:00:00Z")
		assert.Contains(t, v, "swarms in flight (4 of 4)")
		// Sorted by rate: the 50-member swarm first and selected, its graph shown.
		assert.Equal(t, []string{short(3), short(2), short(1), short(4)}, rows(v))
		assert.Contains(t, v, "▶ "+short(3))
		assert.Contains(t, v, "peer graph "+short(3)+" · 50 peers (2 origins)")
		assert.Contains(t, v, "◆ origin "+originAddr(0))
		assert.Contains(t, v, "ring 1/2 healthy")
		assert.Contains(t, v, "◆ 127.0.1.2:9001 ✗ 3 failed checks")
		assert.Contains(t, v, "build-index leader 127.0.2.1:9100 · term 4 · 3 nodes")
		assert.Contains(t, lines[len(lines)-1], "✗ unreachable: tracker 127.0.0.1:5000")
		assert.Contains(t, lines[len(lines)-1], "? help")
		assert.Contains(t, v, "torrent_failed")
		assert.NotContains(t, v, "piece_received", "per-piece events stay out of the log")
		if sz[0] == 200 {
			assert.Regexp(t, `agent +127\.0\.0\.10:9000 +40\.0 MiB/s █+░* +80%`, v, "a host's rate against its cap")
			assert.Contains(t, v, "127.0.0.99:9000 ✗ DOWN: dial tcp 127.0.0.99:9000: connection refused")
			assert.Contains(t, v, "origin_fallback  127.0.0.11:9000 "+short(2)+" peers_lack_piece ×12 pieces")
			assert.Contains(t, v, "blacklist")
			assert.Regexp(t, `└◀ ◆ origin 127\.0\.1\.\d:7001 +█+░* +\d+\.\d+ MiB/s`, v, "origin edges show their rate")
		}
	}
}

func TestResize(t *testing.T) {
	for _, sz := range [][2]int{{0, 0}, {1, 1}, {20, 5}, {79, 24}, {80, 23}, {80, 24}, {200, 60}, {1000, 3}} {
		for _, help := range []bool{false, true} {
			m := loaded(t, 80, 24, Options{})
			if help {
				m, _ = update(t, m, keys("?"))
			}
			m, _ = update(t, m, sizeMsg(sz[0], sz[1]))
			v := m.View()
			if sz[0] == 0 {
				assert.Empty(t, v)
				continue
			}
			lines := strings.Split(v, "\n")
			assert.LessOrEqual(t, len(lines), sz[1], "%v help=%v", sz, help)
			for _, l := range lines {
				assert.LessOrEqual(t, ansi.StringWidth(l), sz[0], "%v help=%v: %q", sz, help, l)
			}
			if !help && (sz[0] < MinWidth || sz[1] < MinHeight) && sz[1] >= 2 && sz[0] >= 20 {
				flat := strings.Join(lines, " ")
				assert.Contains(t, flat, fmt.Sprintf("terminal too small (%dx%d),", sz[0], sz[1]))
				assert.Contains(t, flat, "need 80x24")
			}
		}
	}
	// The compact view still lists the swarms when there is room.
	m := loaded(t, 60, 10, Options{})
	assert.Contains(t, m.View(), short(3)+"  37% 398 MiB/s")
}

func TestSort(t *testing.T) {
	m := loaded(t, 120, 40, Options{})
	assert.Equal(t, []string{short(3), short(2), short(1), short(4)}, rows(m.View()), "by rate, fastest first")
	m, _ = update(t, m, keys("s"))
	assert.Equal(t, "progress", SortColumns[m.sortCol])
	assert.Equal(t, []string{short(1), short(2), short(3), short(4)}, rows(m.View()), "by progress, least done first")
	assert.Contains(t, m.View(), "PROGRESS▼")
	m, _ = update(t, m, keys("S"))
	assert.Equal(t, []string{short(4), short(3), short(2), short(1)}, rows(m.View()), "reversed")
	assert.Contains(t, m.View(), "PROGRESS▲")
	for range len(SortColumns) - 1 {
		m, _ = update(t, m, keys("s"))
	}
	assert.Equal(t, "rate", SortColumns[m.sortCol], "s cycles back to the first column")

	// The initial sort comes from the options.
	m = loaded(t, 120, 40, Options{Sort: "digest"})
	got := rows(m.View())
	want := append([]string(nil), got...)
	slices.Sort(want)
	assert.Equal(t, want, got)
}

func TestSelection(t *testing.T) {
	m := loaded(t, 120, 40, Options{})
	assert.Contains(t, m.View(), "peer graph "+short(3))
	m, _ = update(t, m, keys("j"))
	assert.Contains(t, m.View(), "▶ "+short(2))
	assert.Contains(t, m.View(), "peer graph "+short(2)+" · 12 peers")
	m, _ = update(t, m, tea.KeyMsg{Type: tea.KeyDown}, tea.KeyMsg{Type: tea.KeyDown}, tea.KeyMsg{Type: tea.KeyDown}, tea.KeyMsg{Type: tea.KeyDown})
	assert.Contains(t, m.View(), "▶ "+short(4), "down stops at the last row")
	m, _ = update(t, m, keys("k"))
	assert.Contains(t, m.View(), "▶ "+short(1))

	// The selection follows the swarm, not the row, when a new snapshot reorders them.
	c := testCluster()
	c.Swarms[0].RateIn = 1e12
	m, _ = update(t, m, snapshotMsg{c})
	assert.Equal(t, short(1), rows(m.View())[0])
	assert.Contains(t, m.View(), "▶ "+short(1))

	// tab moves the focus; up and down then scroll that panel instead.
	m, _ = update(t, m, tea.KeyMsg{Type: tea.KeyTab})
	assert.Equal(t, panelGraph, m.focus)
	assert.Contains(t, m.View(), "▶ peer graph")
	m, _ = update(t, m, keys("j"))
	assert.Equal(t, 1, m.graphScroll)
	assert.Contains(t, m.View(), "▶ "+short(1), "the selected swarm stays")
	m, _ = update(t, m, tea.KeyMsg{Type: tea.KeyTab}, tea.KeyMsg{Type: tea.KeyTab}, tea.KeyMsg{Type: tea.KeyTab})
	assert.Equal(t, panelSwarms, m.focus)
	m, _ = update(t, m, tea.KeyMsg{Type: tea.KeyShiftTab})
	assert.Equal(t, panelEvents, m.focus)
}

func TestFilter(t *testing.T) {
	m := loaded(t, 120, 40, Options{})
	m, _ = update(t, m, keys("/"))
	require.True(t, m.filtering)
	// While typing, q and s are text, not commands.
	m, cmd := update(t, m, keys(short(2)[:6]))
	assert.Nil(t, cmd)
	assert.Contains(t, m.View(), "/"+short(2)[:6]+"▏")
	assert.Equal(t, []string{short(2)}, rows(m.View()))
	assert.Contains(t, m.View(), "swarms in flight (1 of 4)")
	m, _ = update(t, m, tea.KeyMsg{Type: tea.KeyEnter})
	assert.False(t, m.filtering)
	assert.Contains(t, m.View(), "filter: "+short(2)[:6])
	assert.Equal(t, []string{short(2)}, rows(m.View()), "enter keeps the filter")
	m, _ = update(t, m, tea.KeyMsg{Type: tea.KeyEsc})
	assert.Len(t, rows(m.View()), 4, "esc clears it")

	// By a host's address: the swarms it is a member of, and that host's rows.
	m, _ = update(t, m, keys("/"), keys(agentAddr(20)), tea.KeyMsg{Type: tea.KeyEnter})
	assert.Equal(t, []string{short(3)}, rows(m.View()), "only the 50-member swarm has agent 20")
	m, _ = update(t, m, keys("/"), tea.KeyMsg{Type: tea.KeyBackspace}, tea.KeyMsg{Type: tea.KeyEsc})
	assert.Empty(t, m.filter)

	m, _ = update(t, m, keys("/"), keys("no-such-thing"), tea.KeyMsg{Type: tea.KeyEnter})
	assert.Empty(t, rows(m.View()))
	assert.Contains(t, m.View(), `no swarm matches "no-such-thing"`)

	// Filtering by a host's API address keeps that host only.
	m = loaded(t, 120, 40, Options{Filter: "127.0.0.99"})
	assert.Contains(t, m.View(), "hosts (1)")
	assert.Contains(t, m.View(), "✗ DOWN")
}

func TestPause(t *testing.T) {
	src := SourceFunc(func(ctx context.Context) (snapshot.Cluster, error) { return snapshot.Cluster{}, nil })
	m, _ := update(t, newModel(context.Background(), src, Options{Renderer: asciiRenderer()}), sizeMsg(120, 40), snapshotMsg{testCluster()})
	m, _ = update(t, m, keys("p"))
	require.True(t, m.paused)
	assert.Contains(t, m.View(), "PAUSED")

	next := testCluster()
	next.Time = t0.Add(time.Minute)
	next.Swarms = next.Swarms[:1]
	next.Events = []snapshot.HostEvent{{Host: "127.0.0.10:9000", Event: snapshot.Event{Time: next.Time, Kind: snapshot.EventDemoted, Err: "claimed piece 3"}}}
	m, cmd := update(t, m, snapshotMsg{next})
	assert.NotNil(t, cmd, "a paused model keeps fetching")
	v := m.View()
	assert.Contains(t, v, "swarms in flight (4 of 4)", "a paused view does not change")
	assert.Contains(t, v, "16:00:00Z")
	assert.Contains(t, v, "PAUSED (1 updates waiting)")
	assert.NotContains(t, v, "demoted")

	m, _ = update(t, m, keys(" "))
	assert.False(t, m.paused)
	v = m.View()
	assert.Contains(t, v, "swarms in flight (1 of 1)", "resuming applies the newest snapshot")
	assert.Contains(t, v, "16:01:00Z")
	assert.Contains(t, v, "demoted", "and the events received while paused")
	assert.Contains(t, v, "torrent_failed", "after the ones before")
	assert.NotContains(t, v, "PAUSED")
}

func TestHelp(t *testing.T) {
	m := loaded(t, 120, 40, Options{})
	m, _ = update(t, m, keys("?"))
	v := m.View()
	assert.Contains(t, v, "krakenctl top — keys")
	assert.Contains(t, v, "pause: stop applying new snapshots")
	assert.NotContains(t, v, "swarms in flight")
	m, cmd := update(t, m, keys("x"))
	assert.Nil(t, cmd)
	assert.False(t, m.help, "any key closes the help")
	assert.Contains(t, m.View(), "swarms in flight")
}

func TestQuit(t *testing.T) {
	for _, k := range []tea.KeyMsg{keys("q"), {Type: tea.KeyCtrlC}} {
		for _, state := range []string{"", "help", "filtering"} {
			m := loaded(t, 120, 40, Options{})
			switch state {
			case "help":
				m, _ = update(t, m, keys("?"))
			case "filtering":
				m, _ = update(t, m, keys("/"))
			}
			m, cmd := update(t, m, k)
			if state == "filtering" && k.Type != tea.KeyCtrlC {
				assert.Nil(t, cmd, "q is text in the filter")
				assert.Equal(t, "q", m.filter)
				continue
			}
			require.NotNil(t, cmd, "%s in %q", k, state)
			assert.Equal(t, tea.QuitMsg{}, cmd(), "%s in %q", k, state)
			require.ErrorIs(t, m.ctx.Err(), context.Canceled, "quitting ends the source's context")
		}
	}
}

// TestSourceErrors: a failing source leaves the last snapshot on screen and says why, and is
// retried; before any snapshot the view says it has none.
func TestSourceErrors(t *testing.T) {
	m, cmd := update(t, newModel(context.Background(), SourceFunc(func(context.Context) (snapshot.Cluster, error) {
		return snapshot.Cluster{}, errors.New("unused")
	}), Options{Renderer: asciiRenderer()}), sizeMsg(120, 40), errMsg{errors.New("dial tracker: connection refused")})
	require.NotNil(t, cmd, "a failed fetch is retried")
	v := m.View()
	assert.Contains(t, v, "no snapshot yet: dial tracker: connection refused")
	assert.Contains(t, v, "✗ source: dial tracker: connection refused (1 failures")

	m, _ = update(t, m, snapshotMsg{testCluster()}, errMsg{errors.New("timeout")}, errMsg{errors.New("timeout")})
	v = m.View()
	assert.Len(t, rows(v), 4, "the last snapshot stays")
	assert.Contains(t, v, "✗ source: timeout (2 failures, showing the last snapshot)")
	assert.Contains(t, v, "✗ unreachable: tracker 127.0.0.1:5000")

	m, _ = update(t, m, snapshotMsg{testCluster()})
	assert.NotContains(t, m.View(), "✗ source", "a success clears the error")
}

// TestFetch runs the model's commands against a Source: Init fetches, a snapshot is applied,
// an error is retried after a tick.
func TestFetch(t *testing.T) {
	calls := 0
	src := SourceFunc(func(ctx context.Context) (snapshot.Cluster, error) {
		calls++
		if calls == 2 {
			return snapshot.Cluster{}, errors.New("boom")
		}
		return testCluster(), ctx.Err()
	})
	m := newModel(context.Background(), src, Options{Renderer: asciiRenderer()})
	msg := m.Init()()
	require.IsType(t, snapshotMsg{}, msg)
	mm, cmd := update(t, m, msg)
	assert.True(t, mm.have)
	require.NotNil(t, cmd)
	msg = cmd()
	require.Equal(t, errMsg{errors.New("boom")}, msg)
	mm, cmd = update(t, mm, msg)
	require.NotNil(t, cmd)
	// The retry waits RetryAfter (a tick) and then fetches.
	mm, cmd = update(t, mm, fetchMsg{})
	require.IsType(t, snapshotMsg{}, cmd())
	assert.Equal(t, 3, calls)
	assert.Len(t, mm.cluster.Swarms, 4)
}

func TestEventLogBounded(t *testing.T) {
	m := newModel(context.Background(), nil, Options{EventLog: 5, Renderer: asciiRenderer()})
	for i := range 3 {
		c := testCluster()
		c.Events = nil
		for j := range 3 {
			c.Events = append(c.Events, snapshot.HostEvent{Host: "h", Event: snapshot.Event{Kind: snapshot.EventDemoted, Err: fmt.Sprintf("e%d", i*3+j)}})
		}
		m, _ = update(t, m, snapshotMsg{c})
	}
	require.Len(t, m.events, 5)
	assert.Equal(t, "e4", m.events[0].Err)
	assert.Equal(t, "e8", m.events[4].Err)
}

// TestNoColor: with NoColor the view has no escape code at all, even on a colour renderer;
// without it the same renderer colours the view.
func TestNoColor(t *testing.T) {
	c := loaded(t, 200, 60, Options{Renderer: colorRenderer()})
	assert.Contains(t, c.View(), "\x1b[", "a colour renderer colours the view")
	for _, help := range []bool{false, true} {
		m := loaded(t, 200, 60, Options{Renderer: colorRenderer(), NoColor: true})
		m, _ = update(t, m, keys("p"))
		if help {
			m, _ = update(t, m, keys("?"))
		}
		assert.NotContains(t, m.View(), "\x1b", "help=%v", help)
	}
	m := loaded(t, 30, 8, Options{Renderer: colorRenderer(), NoColor: true})
	assert.NotContains(t, m.View(), "\x1b")
}

// TestScrollBounded: scrolling a panel stops at its end, so the way back is as short.
func TestScrollBounded(t *testing.T) {
	m := loaded(t, 120, 40, Options{})
	m, _ = update(t, m, tea.KeyMsg{Type: tea.KeyTab}, keys("G"))
	assert.Equal(t, 47, m.graphScroll, "48 receivers in the 50-member swarm")
	m, _ = update(t, m, keys("j"), keys("g"))
	assert.Equal(t, 0, m.graphScroll)
	m, _ = update(t, m, tea.KeyMsg{Type: tea.KeyTab}, keys("G"))
	assert.Equal(t, 3, m.hostScroll)
	m, _ = update(t, m, tea.KeyMsg{Type: tea.KeyTab}, keys("k"), keys("k"), keys("k"), keys("k"), keys("k"), keys("k"))
	assert.Equal(t, 4, m.eventScroll, "5 notable events")
	assert.Contains(t, m.View(), "blacklist")
}

// TestUnreachableRoles: with a tracker, an agent, an origin and the build-index unreachable,
// the view still shows what it has and marks each missing part.
func TestUnreachableRoles(t *testing.T) {
	c := testCluster()
	c.Errors = []snapshot.SourceError{
		{Role: "tracker", Addr: "127.0.0.1:5000", Error: "connection refused"},
		{Role: "build-index", Addr: "127.0.2.1:9100", Error: "timeout"},
	}
	c.BuildIndex = &snapshot.BuildIndexState{Error: "no node answered"}
	c.Swarms[0].Peers[0].State, c.Swarms[0].Peers[0].Error = "unreachable", "connection refused"
	c.Swarms[0].Peers[1].Error = "timeout"
	c.Ring[0].Reachable = false
	m, _ := update(t, newModel(context.Background(), nil, Options{Renderer: asciiRenderer(), Filter: short(1)}), sizeMsg(140, 50), snapshotMsg{c})
	v := m.View()
	lines := strings.Split(v, "\n")
	assert.Contains(t, lines[len(lines)-1], "✗ unreachable: tracker 127.0.0.1:5000, build-index 127.0.2.1:9100")
	assert.Contains(t, v, "build-index ✗ no node answered")
	assert.Contains(t, v, "◆ origin "+originAddr(0)+" out 3.00 MiB/s ✗ unreachable")
	assert.Regexp(t, regexp.QuoteMeta(agentAddr(0))+` +downloading 0% +◀ 1\.00 MiB/s from 1 +✗ timeout`, v)
	assert.Contains(t, v, "◆ 127.0.1.1:9001 ok (not reachable from here)")
	assert.Equal(t, []string{short(1)}, rows(v), "the swarms are still listed")

	// No build-index in the cluster is not an error.
	c.BuildIndex = nil
	m, _ = update(t, m, snapshotMsg{c})
	assert.Contains(t, m.View(), "build-index none in this cluster")
}

// TestAdaptiveColours: the same view picks other colours on a light terminal than on a dark
// one, and the text is the same once the codes are stripped.
func TestAdaptiveColours(t *testing.T) {
	dark := loaded(t, 120, 40, Options{Renderer: colorRenderer()}).View()
	light := colorRenderer()
	light.SetHasDarkBackground(false)
	lv := loaded(t, 120, 40, Options{Renderer: light}).View()
	assert.NotEqual(t, dark, lv)
	assert.Contains(t, dark, "38;2;215;135;255m◆ origin", "the dark variant of the origin colour")
	assert.Contains(t, lv, "38;2;135;0;175m◆ origin", "the light variant of the origin colour")
	assert.Equal(t, ansi.Strip(dark), ansi.Strip(lv))
	assert.Equal(t, loaded(t, 120, 40, Options{}).View(), ansi.Strip(dark), "colour changes no cell")
}
