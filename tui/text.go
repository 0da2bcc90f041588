package tui

import (
	"fmt"
	"strings"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// textGraphLines bounds each swarm's peer graph in RenderText, so a large swarm stays a page.
const textGraphLines = 24

// RenderText is the snapshot c as plain text of width columns (at least 40; 0 or less, as for
// a pipe, is 100), without escape
// codes: `top --once` for scripts and logs. It shows every swarm, the peer graph of each swarm
// in flight (of the first when none is), every host, the ring, the build-index, the newest
// notable events, and the sources that could not be read.
func RenderText(c snapshot.Cluster, width int) string {
	if width <= 0 {
		width = 100
	}
	width = max(width, 40)
	st := newStyles(nil, true)
	var lines []string
	lines = append(lines, clip(fmt.Sprintf("krakenctl top  %s  %d swarms · %d hosts · %d ring members",
		c.Time.UTC().Format("2006-01-02 15:04:05Z"), len(c.Swarms), len(c.Hosts), len(c.Ring)), width))
	for _, e := range c.Errors {
		lines = append(lines, clip(fmt.Sprintf("✗ unreachable: %s %s: %s", e.Role, e.Addr, e.Error), width))
	}

	sws := sortSwarms(c.Swarms, "rate", false)
	lines = append(lines, "", "swarms in flight")
	if len(sws) == 0 {
		lines = append(lines, "  no swarms in flight")
	} else {
		lines = append(lines, swarmTable(st, sws, "", "rate", false, len(sws), width)...)
	}

	graphs := filterInFlight(sws)
	if len(graphs) == 0 && len(sws) > 0 {
		graphs = sws[:1]
	}
	for _, sw := range graphs {
		lines = append(lines, "", graphTitle(sw))
		lines = append(lines, renderGraph(st, sw, width, textGraphLines, 0)...)
	}

	hosts := filterHosts(c.Hosts, "", nil)
	lines = append(lines, "", fmt.Sprintf("hosts (%d)", len(hosts)))
	lines = append(lines, hostTable(st, hosts, 0, max(len(hosts), 1), width)...)
	lines = append(lines, "", ringLine(st, c.Ring, width), buildIndexLine(st, c.BuildIndex, c.Time, width))

	var evs []snapshot.HostEvent
	for _, e := range c.Events {
		if notable(e.Kind) {
			evs = append(evs, e)
		}
	}
	lines = append(lines, "", fmt.Sprintf("events (%d)", len(evs)))
	lines = append(lines, eventLines(st, evs, 0, 20, width)...)
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return strings.Join(lines, "\n") + "\n"
}

// filterInFlight are the swarms of sws that are not done.
func filterInFlight(sws []snapshot.Swarm) []snapshot.Swarm {
	var out []snapshot.Swarm
	for _, sw := range sws {
		if !sw.Done {
			out = append(out, sw)
		}
	}
	return out
}
