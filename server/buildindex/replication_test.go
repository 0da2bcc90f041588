package buildindex

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/tagstore"
)

// applyPut records a put on a store that follows, as the Raft log would deliver it.
func applyPut(f *fakeStore, repo, tag string, d string) tagstore.Tag {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	t := tagstore.Tag{Repo: repo, Name: tag, Digest: dig(d), Index: f.index, Updated: time.Now().UTC()}
	f.tags[[2]string{repo, tag}] = t
	f.publish(tagstore.Change{Index: f.index, Op: tagstore.OpPut, Tag: t})
	return t
}

// A follower never sends: it keeps its item, saying why, until the remote holds the value the
// leader sent, and then lets it go. A superseded item finishes at once; a repository no rule
// matches is never queued.
func TestReplicationFollowerConfirmsOnly(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// The remote: a build-index (content checks off) and origins that count every request.
	remote := startFake(t, newFakeStore("remote"), Deps{}, nil)
	var originHits atomic.Int64
	origins := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		originHits.Add(1)
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	t.Cleanup(origins.Close)
	file := filepath.Join(t.TempDir(), "dc2.yaml")
	require.NoError(t, api.WriteEndpoints(file, api.Endpoints{Origins: []string{origins.Listener.Addr().String()}, BuildIndex: []string{remote.addr}}))

	store := newFakeStore("f")
	store.followerOf("leader", "127.0.0.1:1")
	local := startFake(t, store, Deps{}, func(c *Config) {
		c.Replication = []ReplicationRule{{Repository: "^team/", To: []string{file}}}
		c.ReplicationQueue.FollowerDelay = time.Millisecond
		c.ReplicationQueue.RetryInitial = 10 * time.Millisecond
		c.ReplicationQueue.RetryMax = 20 * time.Millisecond
	})
	status := func() api.RemoteStatus {
		st, err := local.cli.ReplicationStatus(ctx)
		require.NoError(t, err)
		require.False(t, st.Leader)
		require.Len(t, st.Remotes, 1)
		return st.Remotes[0]
	}

	old := applyPut(store, "team/app", "v1", "one")
	cur := applyPut(store, "team/app", "v1", "two")
	applyPut(store, "other/app", "v1", "three")
	require.Eventually(t, func() bool {
		r := status()
		return r.Pending == 1 && len(r.Items) == 1 && r.Items[0].Attempts >= 2
	}, 10*time.Second, 5*time.Millisecond, "the superseded item went, the current one waits: %+v", status())
	r := status()
	require.Equal(t, cur.Index, r.Items[0].Index)
	require.NotEqual(t, old.Index, r.Items[0].Index)
	require.Contains(t, r.Items[0].LastError, "waiting for the leader")
	require.Zero(t, originHits.Load(), "a follower sends nothing")

	// The leader's copy lands on the remote: the follower lets the item go.
	_, err := remote.cli.PutTag(ctx, "team/app", "v1", cur.Digest)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return status().Pending == 0 }, 10*time.Second, 5*time.Millisecond)
	require.Zero(t, originHits.Load())
	require.Zero(t, status().Parked)
	_, err = remote.cli.GetTag(context.Background(), "other/app", "v1", false)
	require.Error(t, err, "no rule matches other/")
}
