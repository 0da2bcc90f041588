package tagstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/tagstore"
	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

// next reads one change, failing the test if none comes within a bounded wait.
func next(t *testing.T, ch <-chan tagstore.Change) (tagstore.Change, bool) {
	t.Helper()
	select {
	case c, ok := <-ch:
		return c, ok
	case <-time.After(20 * time.Second):
		t.Fatal("no change arrived")
		return tagstore.Change{}, false
	}
}

func TestChangesInIndexOrder(t *testing.T) {
	t.Parallel()
	s := newSingle(t, nil).s
	ctx := t.Context()
	ch, cancel := s.Changes(0)
	defer cancel()

	a, err := s.Put(ctx, "app", "a", dg("a1"))
	require.NoError(t, err)
	b, err := s.Put(ctx, "app", "b", dg("b1"))
	require.NoError(t, err)
	a2, err := s.Put(ctx, "app", "a", dg("a2"))
	require.NoError(t, err)
	_, err = s.Delete(ctx, "app", "b")
	require.NoError(t, err)
	_, err = s.Delete(ctx, "app", "b") // not found: no change
	require.ErrorIs(t, err, tagstore.ErrNotFound)
	_, _, err = s.Import(ctx, []tagstore.Tag{
		{Repo: "imp", Name: "x", Digest: dg("x")},
		{Repo: "imp", Name: "y", Digest: dg("y")},
	})
	require.NoError(t, err)

	want := []struct {
		op, ref string
		d       string
	}{
		{tagstore.OpPut, "app:a", "a1"},
		{tagstore.OpPut, "app:b", "b1"},
		{tagstore.OpPut, "app:a", "a2"},
		{tagstore.OpDelete, "app:b", "b1"},
		{tagstore.OpPut, "imp:x", "x"},
		{tagstore.OpPut, "imp:y", "y"},
	}
	var got []tagstore.Change
	for range want {
		c, ok := next(t, ch)
		require.True(t, ok)
		got = append(got, c)
	}
	var last uint64
	for i, w := range want {
		c := got[i]
		require.Equal(t, w.op, c.Op, "change %d", i)
		require.Equal(t, w.ref, c.Tag.Repo+":"+c.Tag.Name, "change %d", i)
		require.Equal(t, dg(w.d), c.Tag.Digest, "change %d", i)
		require.GreaterOrEqual(t, c.Index, last, "changes arrive in index order")
		require.Equal(t, c.Index, c.Tag.Index)
		last = c.Index
	}
	require.Equal(t, a.Index, got[0].Index)
	require.Equal(t, b.Index, got[1].Index)
	require.Equal(t, a2, got[2].Tag)
	require.Greater(t, got[3].Index, a2.Index)
	require.Equal(t, got[4].Index, got[5].Index, "one import batch is one index")

	// Resuming from an index gives exactly the later changes.
	ch2, cancel2 := s.Changes(b.Index)
	defer cancel2()
	for _, w := range got[2:] {
		c, ok := next(t, ch2)
		require.True(t, ok)
		require.Equal(t, w, c)
	}

	// Export then Changes from its index continues exactly where the listing ends.
	tags, index, err := s.Export(ctx, tagstore.Linearizable)
	require.NoError(t, err)
	require.Len(t, tags, 3)
	ch3, cancel3 := s.Changes(index)
	defer cancel3()
	c, err := s.Put(ctx, "app", "c", dg("c"))
	require.NoError(t, err)
	first, ok := next(t, ch3)
	require.True(t, ok)
	require.Equal(t, c, first.Tag)

	cancel()
	for range ch {
	}
}

func TestChangesResyncWhenBehind(t *testing.T) {
	t.Parallel()
	s := newSingle(t, func(c *tagstore.Config) { c.ChangeFeedRetain = 8 }).s
	ctx := t.Context()
	slow, cancel := s.Changes(0)
	defer cancel()

	// The subscriber does not read while far more changes than are retained (and than its
	// channel buffers) are applied.
	tags := make([]tagstore.Tag, 0, 200)
	for i := range 200 {
		tags = append(tags, tagstore.Tag{Repo: "app", Name: fmt.Sprintf("t%03d", i), Digest: dg(fmt.Sprint(i))})
	}
	for i := range tags {
		_, err := s.Put(ctx, tags[i].Repo, tags[i].Name, tags[i].Digest)
		require.NoError(t, err)
	}
	var seen int
	var prev uint64
	for {
		c, ok := next(t, slow)
		require.True(t, ok, "the channel closes only after the resync marker")
		if c.Op == tagstore.OpResync {
			break
		}
		require.Greater(t, c.Index, prev, "no change is skipped or repeated before the marker")
		prev = c.Index
		seen++
	}
	require.Less(t, seen, 200, "a subscriber that fell behind must be told so")
	_, ok := next(t, slow)
	require.False(t, ok)

	// Asking for changes older than the retained window resyncs at once; recent ones work.
	old, cancelOld := s.Changes(1)
	defer cancelOld()
	c, ok := next(t, old)
	require.True(t, ok)
	require.Equal(t, tagstore.OpResync, c.Op)

	_, index, err := s.Export(ctx, tagstore.Linearizable)
	require.NoError(t, err)
	fresh, cancelFresh := s.Changes(index - 3)
	defer cancelFresh()
	for range 3 {
		c, ok := next(t, fresh)
		require.True(t, ok)
		require.Equal(t, tagstore.OpPut, c.Op)
	}
}

func TestChangesOnEveryNode(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.Inmem})
	f := c.Followers()[0].Store()
	ch, cancel := f.Changes(f.AppliedIndex())
	defer cancel()
	var put tagstore.Tag
	c.OnLeader("put", func(s *tagstore.Store) (err error) {
		put, err = s.Put(t.Context(), "app", "x", dg("x"))
		return err
	})
	got, ok := next(t, ch)
	require.True(t, ok)
	require.Equal(t, tagstore.Change{Index: put.Index, Op: tagstore.OpPut, Tag: put}, got)
}

func TestChangesFollowerInstallingSnapshotResyncs(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{
		Network: tagstoretest.Inmem,
		Configure: func(cfg *tagstore.Config) {
			cfg.TrailingLogs = 2
			cfg.SnapshotInterval = time.Hour
		},
	})
	ctx := t.Context()
	follower := c.Followers()[0]
	ch, cancel := follower.Store().Changes(follower.Store().AppliedIndex())
	defer cancel()
	c.Isolate(follower)
	for i := range 20 {
		c.OnLeader("put", func(s *tagstore.Store) error {
			_, err := s.Put(ctx, "app", fmt.Sprintf("t%d", i), dg(fmt.Sprint(i)))
			return err
		})
	}
	for _, n := range append(c.Followers(), c.Leader()) {
		require.NoError(t, n.Store().Snapshot(ctx))
	}
	c.Heal()
	c.WaitConverged()
	got, ok := next(t, ch)
	require.True(t, ok)
	require.Equal(t, tagstore.OpResync, got.Op, "a snapshot replaced the follower's state without individual changes")
}
