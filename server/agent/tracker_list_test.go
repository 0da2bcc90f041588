package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// TestTrackerListAndFailover: an agent announces its progress and API address, which the
// tracker's swarm list shows; when the first tracker of a blob is down, the agent's
// /swarm/events reports the failover (tracker_failover, naming it) and the pull goes on
// through the next.
func TestTrackerListAndFailover(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	const repo = "library/list"
	warm, blob := randomBlob(t, 64<<10), randomBlob(t, 512<<10)
	dWarm := s.push(t, repo, warm, registry.BlobLink)
	d := s.push(t, repo, blob, registry.BlobLink)
	// A dead tracker (nothing listens on a low port of loopback) that ranks after the live one
	// for the warm-up blob and before it for the blob.
	dead := ""
	for port := 1; port < 1000 && dead == ""; port++ {
		cand := fmt.Sprintf("127.0.0.1:%d", port)
		both := []string{s.tracker, cand}
		if ring.Rank(dWarm.String(), both)[0] == s.tracker && ring.Rank(d.String(), both)[0] == cand {
			dead = cand
		}
	}
	require.NotEmpty(t, dead)
	a := s.agent(t, func(c *agent.Config) { c.Trackers = []string{s.tracker, dead} })
	apiAddr := s.c.Addr(cluster.Agent, a.i)

	ctx, cancel := context.WithCancel(t.Context())
	var mu sync.Mutex
	var events []snapshot.Event
	warmSeen := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- a.cl.Events(ctx, "", func(e snapshot.Event) error {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
			if e.Digest == dWarm {
				once.Do(func() { close(warmSeen) })
			}
			return nil
		})
	}()
	defer func() { cancel(); require.NoError(t, <-done) }()
	// The warm-up pull proves the event stream is open before the blob's first announce.
	require.Eventually(t, func() bool {
		_, err := a.cl.Pull(t.Context(), repo, dWarm, io.Discard, nil)
		return err == nil
	}, 30*time.Second, 50*time.Millisecond)
	select {
	case <-warmSeen:
	case <-time.After(time.Minute):
		t.Fatal("no event of the warm-up pull")
	}
	_, err := a.cl.Pull(t.Context(), repo, d, io.Discard, nil)
	require.NoError(t, err)

	var failover *snapshot.Event
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i, e := range events {
			if e.Kind == snapshot.EventTrackerFailover && e.Digest == d {
				failover = &events[i]
				return true
			}
		}
		return false
	}, time.Minute, 10*time.Millisecond)
	require.Equal(t, dead, failover.Addr)
	require.NotEmpty(t, failover.Err)
	mu.Lock()
	for _, e := range events {
		require.False(t, e.Kind == snapshot.EventTrackerFailover && e.Digest == dWarm, "the warm-up blob's first tracker works")
	}
	mu.Unlock()

	// The tracker lists the agent with its API address, and its progress once complete.
	tc := client.NewTracker(s.tracker, s.hc)
	require.Eventually(t, func() bool {
		sw, err := tc.Swarm(t.Context(), d)
		if errors.Is(err, client.ErrNotFound) {
			return false
		}
		require.NoError(t, err)
		for _, m := range sw.Members {
			if m.Role == "agent" && m.Addr == s.c.Agent(a.i).PeerAddr() {
				require.Equal(t, apiAddr, m.API)
				return m.Complete && m.Pieces > 0 && m.Have == m.Pieces
			}
		}
		return false
	}, time.Minute, 20*time.Millisecond)
	list, err := tc.Swarms(t.Context(), 0)
	require.NoError(t, err)
	var listed []digest.Digest
	for _, sw := range list {
		listed = append(listed, sw.Digest)
	}
	require.ElementsMatch(t, []digest.Digest{d, dWarm}, listed)
}
