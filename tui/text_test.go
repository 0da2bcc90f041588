package tui

import (
	"context"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

func TestRenderText(t *testing.T) {
	got := RenderText(testCluster(), 100)
	golden(t, "text_100", got)

	assert.NotContains(t, got, "\x1b", "plain text has no escape codes")
	assert.Contains(t, got, "✗ unreachable: tracker 127.0.0.1:5000: connection refused")
	// Every swarm in the table, a graph for each one in flight but not the done one.
	assert.Equal(t, []string{short(3), short(2), short(1), short(4)}, rows(got))
	for _, i := range []int{1, 2, 3} {
		assert.Contains(t, got, "peer graph "+short(i))
	}
	assert.NotContains(t, got, "peer graph "+short(4))
	assert.Contains(t, got, "+ ", "the 50-member graph is summed beyond its page")
	assert.Regexp(t, `more peers, \d+ MiB/s`, got)
	assert.Regexp(t, `└◀ ◆ origin 127\.0\.1\.1:7001 +█+░* +1\.00 MiB/s +10\.0 MiB`, got, "an origin edge with its rate")
	assert.Contains(t, got, "127.0.0.99:9000 ✗ DOWN: dial tcp 127.0.0.99:9000: connection refused")
	assert.Regexp(t, `agent +127\.0\.0\.10:9000 .* 127\.0\.0\.10:8000\n`, got, "a host row ends with the swarm address the graph names it by")
	assert.Contains(t, got, "build-index leader 127.0.2.1:9100 · term 4 · 3 nodes")
	assert.Contains(t, got, "origin_fallback  127.0.0.11:9000 "+short(2)+" peers_lack_piece ×12 pieces")
	for _, l := range strings.Split(got, "\n") {
		assert.Equal(t, strings.TrimRight(l, " "), l, "no trailing blanks")
	}

	// Replication queues follow the build-index: a remote in sync, one behind with a
	// parked item and an error newer than its last success.
	c := testCluster()
	c.BuildIndex.Replication = []snapshot.RemoteQueue{
		{Name: "dc2", LastSuccess: t0.Add(-time.Minute)},
		{Name: "dc3", Pending: 3, Parked: 1, OldestPending: t0.Add(-125 * time.Second),
			LastError: "remote dc3: connection refused", LastErrorAt: t0.Add(-time.Second), LastSuccess: t0.Add(-time.Hour)},
	}
	repl := RenderText(c, 200)
	assert.Contains(t, repl, "build-index leader 127.0.2.1:9100 · term 4 · 3 nodes · → dc2 in sync · → dc3 3 pending (oldest 2m05s) 1 parked ✗ remote dc3: connection refused")
	c.BuildIndex.Replication[1].LastSuccess = t0
	assert.NotContains(t, RenderText(c, 200), "✗ remote dc3", "an error older than the last success is not shown as current")

	// An empty cluster and a narrow width still render.
	empty := RenderText(snapshot.Cluster{Time: t0}, 1)
	assert.Contains(t, empty, "no swarms in flight")
	assert.Contains(t, empty, "no hosts known")
	assert.Contains(t, empty, "build-index none")
}

// blockingSource hands out one snapshot, then blocks until the model's context ends, as the
// lead's polling source does between polls.
type blockingSource struct {
	c    snapshot.Cluster
	sent bool
}

func (s *blockingSource) Next(ctx context.Context) (snapshot.Cluster, error) {
	if !s.sent {
		s.sent = true
		return s.c, nil
	}
	<-ctx.Done()
	return snapshot.Cluster{}, ctx.Err()
}

// TestProgram runs the model in a real bubbletea program: it draws the first snapshot, and q
// ends the program even while the source is blocked in Next.
func TestProgram(t *testing.T) {
	m := New(context.Background(), &blockingSource{c: testCluster()}, Options{Renderer: asciiRenderer(), NoColor: true})
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(120, 40))
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		return strings.Contains(string(b), "peer graph "+short(3))
	}, teatest.WithDuration(30*time.Second))
	tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
	tm.WaitFinished(t, teatest.WithFinalTimeout(30*time.Second))
	final, ok := tm.FinalModel(t).(Model)
	require.True(t, ok)
	assert.Len(t, final.cluster.Swarms, 4)
	require.Error(t, final.ctx.Err(), "the source's context ended with the program")
}
