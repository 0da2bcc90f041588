package tui

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// TestPeerGraph draws the graph of swarms of 3, 12 and 50 members into a fixed budget and
// checks the structure: the origins' line, every origin edge marked and with its rate, a
// receiver's senders under it, and at 50 members the aggregate that sums exactly the
// receivers left out.
func TestPeerGraph(t *testing.T) {
	st := newStyles(asciiRenderer(), false)
	for _, tc := range []struct {
		peers, lines int
	}{{3, 30}, {12, 30}, {50, 20}} {
		t.Run(fmt.Sprintf("%dpeers", tc.peers), func(t *testing.T) {
			sw := nPeerSwarm(tc.peers, tc.peers)
			lines := renderGraph(st, sw, 100, tc.lines, 0)
			golden(t, fmt.Sprintf("graph_%d", tc.peers), strings.Join(lines, "\n")+"\n")

			require.LessOrEqual(t, len(lines), tc.lines)
			for _, l := range lines {
				assert.LessOrEqual(t, len([]rune(l)), 100, "line wider than the terminal: %q", l)
			}
			assert.Contains(t, lines[0], "◆ origin "+originAddr(0))

			// Every head line names a receiver; the agents not named are summed at the end.
			heads := map[string]bool{}
			for _, l := range lines[1:] {
				if !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "+") {
					heads[strings.Fields(l)[0]] = true
				}
			}
			agents := 0
			var leftRate float64
			for _, p := range sw.Peers {
				if p.Role != "agent" {
					continue
				}
				agents++
				if !heads[p.Addr] {
					for _, e := range sw.Edges {
						if e.To == p.Addr {
							leftRate += e.Rate
						}
					}
				}
			}
			last := lines[len(lines)-1]
			if len(heads) < agents {
				assert.Equal(t, fmt.Sprintf("+ %d more peers, %s", agents-len(heads), FormatRate(leftRate)), last)
			} else {
				assert.NotContains(t, strings.Join(lines, "\n"), "more peers")
			}
			if tc.peers == 50 {
				assert.Less(t, len(heads), agents, "50 members do not fit 20 lines: the graph must aggregate")
			}
		})
	}
}

// TestPeerGraphEdges checks that each sender line sits under its receiver, shows the edge's
// rate and bytes, marks origins and closed connections.
func TestPeerGraphEdges(t *testing.T) {
	st := newStyles(asciiRenderer(), false)
	sw := nPeerSwarm(3, 3) // origin → a0 1 MiB/s, origin → a1 2 MiB/s, a0 → a1 3 MiB/s
	lines := renderGraph(st, sw, 120, 30, 0)
	text := strings.Join(lines, "\n")

	a1 := lineStarting(lines, agentAddr(1))
	require.GreaterOrEqual(t, a1, 0, text)
	assert.Contains(t, lines[a1], "◀ 5.00 MiB/s from 2")
	assert.Regexp(t, `├◀ `+regexp.QuoteMeta(agentAddr(0))+` +█+░* +3\.00 MiB/s +30\.0 MiB`, lines[a1+1])
	assert.Regexp(t, `└◀ ◆ origin `+regexp.QuoteMeta(originAddr(0))+` +█+░* +2\.00 MiB/s +20\.0 MiB`, lines[a1+2])
	a0 := lineStarting(lines, agentAddr(0)+" ")
	require.GreaterOrEqual(t, a0, 0, text)
	assert.Contains(t, lines[a0+1], "◆ origin "+originAddr(0))
	assert.Contains(t, lines[a0+1], "1.00 MiB/s")

	// A closed edge says so.
	sw = nPeerSwarm(5, 5)
	text = strings.Join(renderGraph(st, sw, 120, 40, 0), "\n")
	assert.Regexp(t, regexp.QuoteMeta(agentAddr(1))+` .*1\.50 MiB/s .*closed`, text)

	// What an origin receives (proofs for its challenges) does not make it a receiver row.
	sw = nPeerSwarm(3, 3)
	sw.Edges = append(sw.Edges, snapshot.Edge{From: agentAddr(0), To: originAddr(0), Bytes: 4096, Rate: 1024, Live: true})
	lines = renderGraph(st, sw, 120, 30, 0)
	assert.Equal(t, -1, lineStarting(lines, originAddr(0)), strings.Join(lines, "\n"))
	assert.Contains(t, lines[0], "◆ origin "+originAddr(0), "origins are on the first line, as senders")
}

// lineStarting is the index of the first line that starts with prefix, or -1.
func lineStarting(lines []string, prefix string) int {
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return i
		}
	}
	return -1
}

// TestPeerGraphTiny never panics and never exceeds its budget, whatever the budget and width.
func TestPeerGraphTiny(t *testing.T) {
	st := newStyles(asciiRenderer(), false)
	for _, n := range []int{0, 1, 3, 50} {
		var sw snapshot.Swarm
		if n >= 3 {
			sw = nPeerSwarm(n, n)
		} else if n == 1 {
			sw = snapshot.Swarm{Peers: []snapshot.SwarmPeer{{Addr: agentAddr(0), Role: "agent"}}}
		}
		for _, lines := range []int{0, 1, 2, 3, 5} {
			for _, w := range []int{0, 1, 10, 80} {
				for _, skip := range []int{0, 1, 100} {
					got := renderGraph(st, sw, w, lines, skip)
					assert.LessOrEqual(t, len(got), lines, "n=%d lines=%d w=%d", n, lines, w)
				}
			}
		}
	}
}
