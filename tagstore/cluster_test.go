package tagstore_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/tagstore"
	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

// putAll writes n tags named prefix-i through the current leader and returns what was
// acknowledged. A put whose leader changes under it is repeated (a put of the same digest is
// safe to repeat) until it is acknowledged.
func putAll(t *testing.T, c *tagstoretest.Cluster, prefix string, n int) map[string]tagstore.Tag {
	t.Helper()
	acked := map[string]tagstore.Tag{}
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		c.OnLeader("put "+name, func(s *tagstore.Store) error {
			tag, err := s.Put(t.Context(), "app", name, dg(name))
			acked[name] = tag
			return err
		})
	}
	return acked
}

// deleteTag deletes a tag through the current leader; a retry after an unknown outcome may
// find it already gone.
func deleteTag(t *testing.T, c *tagstoretest.Cluster, name string) {
	t.Helper()
	tries := 0
	c.OnLeader("delete "+name, func(s *tagstore.Store) error {
		tries++
		_, err := s.Delete(t.Context(), "app", name)
		if tries > 1 && errors.Is(err, tagstore.ErrNotFound) {
			return nil
		}
		return err
	})
}

// requireTags checks that every acknowledged tag is on every reachable node.
func requireTags(t *testing.T, c *tagstoretest.Cluster, acked map[string]tagstore.Tag) {
	t.Helper()
	c.WaitConverged()
	leader := c.Leader()
	for _, n := range append(c.Followers(), leader) {
		for name, want := range acked {
			c := tagstore.Stale
			if n == leader {
				c = tagstore.Linearizable
			}
			got, err := n.Store().Get(t.Context(), "app", name, c)
			require.NoError(t, err, "%s on %s", name, n)
			require.Equal(t, want, got, "%s on %s", name, n)
		}
	}
}

func TestFollowersRedirect(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.Inmem})
	ctx := t.Context()
	leader := c.Leader()
	put, err := leader.Store().Put(ctx, "app", "prod", dg("1"))
	require.NoError(t, err)
	c.WaitConverged()

	for _, f := range c.Followers() {
		_, err := f.Store().Put(ctx, "app", "prod", dg("2"))
		var nl *tagstore.NotLeaderError
		require.ErrorAs(t, err, &nl)
		require.ErrorIs(t, err, tagstore.ErrNotLeader)
		require.Equal(t, tagstore.NotLeaderError{LeaderID: leader.ID, LeaderAPIAddr: leader.APIAddr, LeaderRaftAddr: leader.RaftAddr}, *nl)

		_, err = f.Store().Get(ctx, "app", "prod", tagstore.Linearizable)
		require.ErrorAs(t, err, &nl, "a follower does not serve linearizable reads")
		_, err = f.Store().Delete(ctx, "app", "prod")
		require.ErrorIs(t, err, tagstore.ErrNotLeader)

		got, err := f.Store().Get(ctx, "app", "prod", tagstore.Stale)
		require.NoError(t, err)
		require.Equal(t, put, got)

		st := f.Store().Status()
		require.Equal(t, "follower", st.State)
		require.Equal(t, leader.ID, st.LeaderID)
		require.Equal(t, leader.APIAddr, st.LeaderAPIAddr)
		require.Len(t, st.Members, 3)
	}
	got, err := leader.Store().Get(ctx, "app", "prod", tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, dg("1"), got.Digest, "writes refused by followers changed nothing")
}

func TestLeaderKilledThenAllRestarted(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.TCP})
	acked := putAll(t, c, "before", 20)

	old := c.Leader()
	c.Kill(old)
	leader := c.Leader() // bounded wait for a new leader among the survivors
	require.NotEqual(t, old, leader)
	for k, v := range putAll(t, c, "after", 20) {
		acked[k] = v
	}
	requireTags(t, c, acked)

	// The old leader comes back as a follower and catches up.
	c.Restart(old)
	requireTags(t, c, acked)
	require.Equal(t, "follower", old.Store().Status().State)

	// Everything stops, then starts again on the same directories.
	for _, n := range c.Nodes() {
		c.Kill(n)
	}
	for _, n := range c.Nodes() {
		c.Restart(n)
	}
	requireTags(t, c, acked)
	for k, v := range putAll(t, c, "restarted", 5) {
		acked[k] = v
	}
	requireTags(t, c, acked)
}

func TestLeaderIsolated(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.Inmem})
	ctx := t.Context()
	acked := putAll(t, c, "before", 5)
	c.WaitConverged()

	old := c.Leader()
	c.Isolate(old)

	// The cut-off leader cannot commit: a write either is refused (it already stepped down) or
	// fails without an outcome once its lease runs out. Either way it must not be
	// acknowledged.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err := old.Store().Put(wctx, "app", "lost", dg("lost"))
	require.Error(t, err)
	require.True(t, errors.Is(err, tagstore.ErrNotLeader) || errors.Is(err, tagstore.ErrIndeterminate), "got %v", err)
	require.Eventually(t, func() bool { return !old.Store().IsLeader() }, 20*time.Second, 10*time.Millisecond,
		"an isolated leader steps down")
	_, err = old.Store().Put(ctx, "app", "refused", dg("refused"))
	require.ErrorIs(t, err, tagstore.ErrNotLeader)

	leader := c.Leader() // the majority elects a new leader
	require.NotEqual(t, old, leader)
	for k, v := range putAll(t, c, "after", 5) {
		acked[k] = v
	}

	c.Heal()
	requireTags(t, c, acked)
	// The write the old leader could not commit was discarded everywhere.
	for _, n := range c.Nodes() {
		_, err := n.Store().Get(ctx, "app", "lost", tagstore.Stale)
		require.ErrorIs(t, err, tagstore.ErrNotFound, "on %s", n)
	}
	_, err = old.Store().Get(ctx, "app", "before-0", tagstore.Linearizable)
	var nl *tagstore.NotLeaderError
	require.ErrorAs(t, err, &nl)
	require.Equal(t, c.Leader().ID, nl.LeaderID)
}

func TestSnapshotInstallCatchesUpFollower(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{
		Network: tagstoretest.TCP,
		Configure: func(cfg *tagstore.Config) {
			cfg.TrailingLogs = 5
			cfg.SnapshotInterval = time.Hour // snapshots only when the test asks
		},
	})
	ctx := t.Context()
	acked := putAll(t, c, "early", 10)
	c.WaitConverged()

	lagging := c.Followers()[0]
	c.Kill(lagging)
	for k, v := range putAll(t, c, "missed", 100) {
		acked[k] = v
	}
	// Both running nodes snapshot, so whichever leads has compacted its log.
	snap := uint64(math.MaxUint64)
	for _, n := range append(c.Followers(), c.Leader()) {
		require.NoError(t, n.Store().Snapshot(ctx))
		snap = min(snap, n.Store().Status().LastSnapshotIndex)
	}
	require.NotZero(t, snap)
	for k, v := range putAll(t, c, "late", 5) {
		acked[k] = v
	}
	deleteTag(t, c, "early-0")
	delete(acked, "early-0")

	// The entries the lagging node missed were compacted away, so it can only catch up by
	// installing the leader's snapshot, then replaying the log after it.
	c.Restart(lagging)
	requireTags(t, c, acked)
	require.GreaterOrEqual(t, lagging.Store().Status().LastSnapshotIndex, snap,
		"the follower installed the leader's snapshot")
	_, err := lagging.Store().Get(ctx, "app", "early-0", tagstore.Stale)
	require.ErrorIs(t, err, tagstore.ErrNotFound)
	want, _, err := c.Leader().Store().Export(ctx, tagstore.Linearizable)
	require.NoError(t, err)
	got, _, err := lagging.Store().Export(ctx, tagstore.Stale)
	require.NoError(t, err)
	require.Equal(t, want, got)

	// It restarts from its own copy of that snapshot too.
	c.Kill(lagging)
	c.Restart(lagging)
	requireTags(t, c, acked)
}

func TestMembership(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.Inmem})
	ctx := t.Context()
	leader := c.Leader()
	s := leader.Store()
	before := s.Status().Members
	require.Len(t, before, 3)
	other := c.Followers()[0]

	// Joining again with identical details is a no-op.
	require.NoError(t, s.Join(ctx, other.Member()))

	// A join that collides with an existing member changes nothing.
	for name, m := range map[string]tagstore.Member{
		"address taken": {ID: "intruder", RaftAddr: other.RaftAddr, APIAddr: "x.test:1"},
		"id taken":      {ID: other.ID, RaftAddr: "elsewhere.inmem:7000", APIAddr: other.APIAddr},
		"api differs":   {ID: other.ID, RaftAddr: other.RaftAddr, APIAddr: "moved.test:9"},
		"suffrage":      {ID: other.ID, RaftAddr: other.RaftAddr, Suffrage: tagstore.SuffrageNonvoter},
	} {
		err := s.Join(ctx, m)
		require.ErrorIs(t, err, tagstore.ErrExists, name)
		require.Equal(t, before, s.Status().Members, name)
	}
	for name, m := range map[string]tagstore.Member{
		"bad id":       {ID: "", RaftAddr: "a.test:1"},
		"bad address":  {ID: "n9", RaftAddr: "no-port"},
		"wildcard":     {ID: "n9", RaftAddr: "0.0.0.0:7000"},
		"bad api":      {ID: "n9", RaftAddr: "a.test:1", APIAddr: "http://x"},
		"bad suffrage": {ID: "n9", RaftAddr: "a.test:1", Suffrage: "king"},
	} {
		require.ErrorIs(t, s.Join(ctx, m), tagstore.ErrInvalid, name)
	}
	require.Equal(t, before, s.Status().Members)

	// Only the leader changes membership.
	err := other.Store().Join(ctx, tagstore.Member{ID: "n9", RaftAddr: "n9.inmem:7000"})
	require.ErrorIs(t, err, tagstore.ErrNotLeader)
	require.ErrorIs(t, other.Store().Remove(ctx, leader.ID, tagstore.RemoveOptions{}), tagstore.ErrNotLeader)
	require.ErrorIs(t, s.Remove(ctx, "ghost", tagstore.RemoveOptions{}), tagstore.ErrNotFound)

	// Remove a follower; the cluster keeps working with two.
	require.NoError(t, s.Remove(ctx, other.ID, tagstore.RemoveOptions{}))
	members := s.Status().Members
	require.Len(t, members, 2)
	for _, m := range members {
		require.NotEqual(t, other.ID, m.ID)
	}
	_, err = s.Put(ctx, "app", "two", dg("2"))
	require.NoError(t, err)

	// It can be added back and catches up.
	require.NoError(t, s.Join(ctx, other.Member()))
	c.WaitConverged()
	got, err := other.Store().Get(ctx, "app", "two", tagstore.Stale)
	require.NoError(t, err)
	require.Equal(t, dg("2"), got.Digest)
	after := c.Leader().Store().Status().Members
	require.Len(t, after, 3)
	for _, m := range after {
		require.Equal(t, m.ID+".api.test:8080", m.APIAddr, "API address of %s recorded", m.ID)
		require.Equal(t, tagstore.SuffrageVoter, m.Suffrage)
	}

	// A fourth node joins through the helper; a non-voter can join too.
	fourth := c.AddNode()
	c.WaitConverged()
	got, err = fourth.Store().Get(ctx, "app", "two", tagstore.Stale)
	require.NoError(t, err)
	require.Equal(t, dg("2"), got.Digest)
	require.Len(t, c.Leader().Store().Status().Members, 4)
}
