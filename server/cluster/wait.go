package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/tagstore"
)

// pollInterval is how often the waits look again.
const pollInterval = 20 * time.Millisecond

// WaitReady returns once every running server answers 200 on its data API's /readyz. It
// returns early with Err when a role fails, and with ctx's error, naming the server that was
// not ready and why, when ctx ends first.
func (c *Cluster) WaitReady(ctx context.Context) error {
	c.mu.Lock()
	var up []*member
	for _, m := range c.order {
		if m.state == running {
			up = append(up, m)
		}
	}
	c.mu.Unlock()
	for _, m := range up {
		if err := c.waitReady(ctx, m); err != nil {
			return err
		}
	}
	// A role that failed is not ready, even when it failed before this call looked (and the
	// cluster then stopped the others, leaving nothing running to wait for).
	return c.Err()
}

func (c *Cluster) waitReady(ctx context.Context, m *member) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		last := c.probe(ctx, m.addr)
		if last == nil {
			return nil
		}
		select {
		case <-c.failed:
			return c.Err()
		case <-ctx.Done():
			return fmt.Errorf("wait for %s at %s to be ready: %w (last: %w)", m, m.addr, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// probe GETs addr's /readyz and wants 200; otherwise the error says why.
func (c *Cluster) probe(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }() // read side
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var why struct{ Reason string }
	if json.Unmarshal(body, &why) == nil && why.Reason != "" {
		return fmt.Errorf("%s: %s", resp.Status, why.Reason)
	}
	return fmt.Errorf("%s", resp.Status)
}

// Leader returns the index of the build-index node that leads, as every running node sees it
// now. It returns ErrNoLeader when they name none, or different ones, or one that is stopped.
func (c *Cluster) Leader() (int, error) {
	i, _, err := c.leader()
	return i, err
}

// WaitLeader waits until the build-index cluster has formed: every running node names the
// same running leader and knows its API address, and lists every node of the cluster as a
// voter. It returns the leader's index; Err when a role fails first, and ctx's error (with
// what was missing) when ctx ends first.
func (c *Cluster) WaitLeader(ctx context.Context) (int, error) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		i, formed, err := c.leader()
		if err == nil && formed {
			return i, nil
		}
		if err == nil {
			err = fmt.Errorf("not every node is a voting member yet")
		}
		select {
		case <-c.failed:
			return 0, c.Err()
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for a build-index leader: %w (last: %w)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// leader returns the leader every running node names, and whether each of them also lists
// every node as a voter.
func (c *Cluster) leader() (int, bool, error) {
	c.mu.Lock()
	nodes := c.members[BuildIndex]
	var up []*member
	var servers []*buildindex.Server
	for _, m := range nodes {
		if m.state == running {
			up = append(up, m)
			servers = append(servers, m.srv.(*buildindex.Server))
		}
	}
	c.mu.Unlock()
	if len(up) == 0 {
		return 0, false, fmt.Errorf("%w: no build-index node runs", ErrNoLeader)
	}
	leaderID, formed := "", true
	for k, srv := range servers {
		st := srv.Status()
		if st.LeaderID == "" || (leaderID != "" && st.LeaderID != leaderID) {
			return 0, false, fmt.Errorf("%w: %s names %q, others %q", ErrNoLeader, up[k], st.LeaderID, leaderID)
		}
		leaderID = st.LeaderID
		if st.LeaderAPIAddr == "" || len(st.Members) != len(nodes) {
			formed = false
		}
		for _, mem := range st.Members {
			if mem.Suffrage != tagstore.SuffrageVoter {
				formed = false
			}
		}
	}
	for _, m := range up {
		if m.nodeID == leaderID {
			return m.index, formed, nil
		}
	}
	return 0, false, fmt.Errorf("%w: the leader %q is not a running node", ErrNoLeader, leaderID)
}
