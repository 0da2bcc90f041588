package tagstore_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/tagstore"
	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

// A cluster of three that lost two nodes for good has no quorum: nothing is written, no
// leader is elected. Recover on the survivor's stopped state makes it a cluster of one that
// holds every acknowledged tag.
func TestRecoverTheLastSurvivor(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.TCP})
	acked := putAll(t, c, "before", 20)
	deleteTag(t, c, "before-3")
	delete(acked, "before-3")
	c.WaitConverged()
	survivor := c.Followers()[0]
	for _, n := range c.Nodes() {
		if n != survivor {
			c.Kill(n)
		}
	}
	require.Eventually(t, func() bool { _, ok := survivor.Store().Leader(); return !ok }, 30*time.Second, 10*time.Millisecond,
		"without a quorum no leader is elected")

	// Recover needs the node stopped.
	cfg := tagstoretest.Config(survivor.ID, survivor.Dir)
	_, err := tagstore.Recover(cfg, tagstore.RecoverOptions{Members: []tagstore.Member{survivor.Member()}}, nil)
	require.ErrorContains(t, err, "is locked: stop the node first")
	c.Kill(survivor)

	for name, opts := range map[string]tagstore.RecoverOptions{
		"neither":          {},
		"both":             {Members: []tagstore.Member{survivor.Member()}, Drop: []string{"node9"}},
		"without this one": {Members: []tagstore.Member{{ID: "node7", RaftAddr: "127.0.0.1:9"}}},
		"twice":            {Members: []tagstore.Member{survivor.Member(), {ID: "node7", RaftAddr: survivor.RaftAddr}}},
		"bad address":      {Members: []tagstore.Member{{ID: survivor.ID, RaftAddr: "nowhere"}}},
		"drop a stranger":  {Drop: []string{"node9"}},
		"drop everyone":    {Drop: []string{"node0", "node1", "node2"}},
	} {
		_, err := tagstore.Recover(cfg, opts, nil)
		require.ErrorIs(t, err, tagstore.ErrInvalid, name)
	}
	_, err = tagstore.Recover(tagstoretest.Config("node5", t.TempDir()), tagstore.RecoverOptions{Drop: []string{"node1"}}, nil)
	require.ErrorIs(t, err, tagstore.ErrInvalid, "no state to recover")

	res, err := tagstore.Recover(cfg, tagstore.RecoverOptions{Members: []tagstore.Member{survivor.Member()}}, nil)
	require.NoError(t, err)
	require.Len(t, res.Before, 3)
	require.Equal(t, []tagstore.Member{{ID: survivor.ID, RaftAddr: survivor.RaftAddr, Suffrage: tagstore.SuffrageVoter}}, res.Members)
	require.Equal(t, len(acked), res.Tags)

	c.Restart(survivor)
	require.Equal(t, survivor, c.Leader())
	requireTags(t, c, acked)
	st := survivor.Store().Status()
	require.Len(t, st.Members, 1)
	for k, v := range putAll(t, c, "after", 5) {
		acked[k] = v
	}
	requireTags(t, c, acked)

	// It grows again the usual way.
	c.AddNode()
	requireTags(t, c, acked)
}

// Two survivors of three, recovered with the stored configuration minus the dead node, form
// a cluster of two again.
func TestRecoverTwoSurvivorsDroppingTheDead(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.TCP})
	acked := putAll(t, c, "before", 20)
	c.WaitConverged()
	nodes := c.Nodes()
	dead := nodes[2]
	c.Kill(dead)
	for k, v := range putAll(t, c, "two-left", 5) {
		acked[k] = v
	}
	c.WaitConverged()
	// The survivors are stopped, as for maintenance; the dead node is gone for good.
	for _, n := range nodes[:2] {
		c.Kill(n)
	}
	for _, n := range nodes[:2] {
		res, err := tagstore.Recover(tagstoretest.Config(n.ID, n.Dir), tagstore.RecoverOptions{Drop: []string{dead.ID}}, nil)
		require.NoError(t, err, n.ID)
		require.Len(t, res.Members, 2)
		require.Equal(t, []string{nodes[0].ID, nodes[1].ID}, []string{res.Members[0].ID, res.Members[1].ID})
	}
	for _, n := range nodes[:2] {
		c.Restart(n)
	}
	leader := c.Leader()
	require.Contains(t, nodes[:2], leader)
	require.Len(t, leader.Store().Status().Members, 2)
	requireTags(t, c, acked)
	for k, v := range putAll(t, c, "after", 5) {
		acked[k] = v
	}
	requireTags(t, c, acked)

	// Nothing of the dead node is left in the configuration.
	require.ErrorIs(t, leader.Store().Remove(t.Context(), dead.ID, tagstore.RemoveOptions{}), tagstore.ErrNotFound)
}
