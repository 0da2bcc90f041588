package buildindex

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

const tagsNS = DefaultTagsNamespace

// object returns the backend's record of repo:tag, if any.
func object(t *testing.T, b *memory.Backend, repo, tag string) (Record, bool) {
	t.Helper()
	raw, ok := b.Peek(tagsNS, ObjectName(repo, tag))
	if !ok {
		return Record{}, false
	}
	var r Record
	require.NoError(t, json.Unmarshal(raw, &r))
	return r, true
}

// waitObject waits until the backend's record of repo:tag satisfies ok.
func waitObject(t *testing.T, b *memory.Backend, repo, tag string, ok func(Record) bool) Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, found := object(t, b, repo, tag)
		if found && ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("object of %s:%s never got as expected; last seen %+v (found %v)", repo, tag, r, found)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitIdle waits until the node queued every change up to index and ran every task.
func waitIdle(t *testing.T, n *node, index uint64) {
	t.Helper()
	require.Eventually(t, func() bool {
		tasks, err := n.srv.wb.q.All()
		require.NoError(t, err)
		return n.srv.wb.loadCursor()+1 >= index && len(tasks) == 0
	}, 20*time.Second, 5*time.Millisecond)
}

func withBackend(dir string) func(*Config) {
	return func(c *Config) { c.Dir = dir }
}

func TestObjectName(t *testing.T) {
	t.Parallel()
	name := ObjectName("library/ubuntu", "24.04")
	require.Regexp(t, `^t-[0-9a-f]{64}$`, name)
	require.NotEqual(t, name, ObjectName("library/ubuntu", "24.05"))
}

// TestWriteback: puts and deletes reach the backend, a newer object is never replaced by an
// older value, and storage that is down only delays the copies.
func TestWriteback(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	be := memory.New()
	store := newFakeStore("a")
	n := startFake(t, store, Deps{Backend: be}, nil)

	v1, err := n.cli.PutTag(ctx, "team/app", "v1", dig("1"))
	require.NoError(t, err)
	_, err = n.cli.PutTag(ctx, "team/app", "v2", dig("2"))
	require.NoError(t, err)
	r := waitObject(t, be, "team/app", "v1", func(r Record) bool { return r.Index == v1.Index })
	require.Equal(t, Record{Repo: "team/app", Tag: "v1", Digest: dig("1"), Index: v1.Index, Updated: v1.Updated}, r)

	_, err = n.cli.DeleteTag(ctx, "team/app", "v1")
	require.NoError(t, err)
	r = waitObject(t, be, "team/app", "v1", func(r Record) bool { return r.Deleted })
	require.Equal(t, uint64(3), r.Index, "the tombstone carries the delete's index")
	require.Empty(t, r.Digest)
	waitObject(t, be, "team/app", "v2", func(r Record) bool { return r.Digest == dig("2") })

	// An object with a higher index (a newer value written by another node) stays.
	newer := Record{Repo: "team/app", Tag: "v3", Digest: dig("newer"), Index: 1000, Updated: time.Now().UTC()}
	b, err := json.Marshal(newer)
	require.NoError(t, err)
	require.NoError(t, be.Upload(ctx, tagsNS, ObjectName("team/app", "v3"), bytes.NewReader(b), int64(len(b))))
	v3, err := n.cli.PutTag(ctx, "team/app", "v3", dig("older"))
	require.NoError(t, err)
	waitIdle(t, n, v3.Index)
	r, _ = object(t, be, "team/app", "v3")
	require.Equal(t, dig("newer"), r.Digest)

	// Storage down: writes are acknowledged, copies wait and land once it is back.
	be.SetFailure(errors.New("storage down"))
	v4, err := n.cli.PutTag(ctx, "team/app", "v4", dig("4"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		tasks, err := n.srv.wb.q.All()
		require.NoError(t, err)
		return len(tasks) > 0 && tasks[0].Attempts > 0
	}, 20*time.Second, 5*time.Millisecond, "the task failed and waits for a retry")
	be.SetFailure(nil)
	waitObject(t, be, "team/app", "v4", func(r Record) bool { return r.Index == v4.Index })
}

// TestWritebackSurvivesRestart: tasks queued while storage was down outlive the process, and
// changes made while the node was down (beyond what the feed retains) are found by a full
// reconciliation.
func TestWritebackSurvivesRestart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	be := memory.New()
	store := newFakeStore("a")
	dir := t.TempDir()
	n := startFake(t, store, Deps{Backend: be}, withBackend(dir))
	gone, err := n.cli.PutTag(ctx, "app", "gone", dig("g"))
	require.NoError(t, err)
	waitObject(t, be, "app", "gone", func(r Record) bool { return r.Index == gone.Index })

	be.SetFailure(errors.New("storage down"))
	v1, err := n.cli.PutTag(ctx, "app", "v1", dig("1"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		tasks, err := n.srv.wb.q.All()
		require.NoError(t, err)
		return len(tasks) == 1 && tasks[0].Attempts > 0
	}, 20*time.Second, 5*time.Millisecond)
	n.stop()

	// While the node is down: a delete, and the store forgets the changes (as after a
	// snapshot install), so the restarted node cannot follow the feed from its cursor.
	store.mu.Lock()
	store.leader = true
	store.mu.Unlock()
	_, err = store.Delete(ctx, "app", "gone")
	require.NoError(t, err)
	store.forget()
	be.SetFailure(nil)

	n2 := startFake(t, store, Deps{Backend: be}, withBackend(dir))
	waitObject(t, be, "app", "v1", func(r Record) bool { return r.Index == v1.Index })
	r := waitObject(t, be, "app", "gone", func(r Record) bool { return r.Deleted })
	require.Greater(t, r.Index, gone.Index)
	waitIdle(t, n2, store.AppliedIndex())
}

// TestRestore: a fresh cluster rebuilds its tags from the backend, and its own later changes
// then overwrite the restored objects (whose indexes came from the old cluster).
func TestRestore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	be := memory.New()
	old := startFake(t, newFakeStore("old"), Deps{Backend: be}, nil)
	want := map[string]string{}
	for _, tag := range []string{"a", "b", "c", "d"} {
		_, err := old.cli.PutTag(ctx, "team/app", tag, dig(tag))
		require.NoError(t, err)
		want[tag] = dig(tag).String()
	}
	_, err := old.cli.PutTag(ctx, "other", "x", dig("x"))
	require.NoError(t, err)
	_, err = old.cli.DeleteTag(ctx, "team/app", "d")
	require.NoError(t, err)
	delete(want, "d")
	for i := range 20 { // Push the old cluster's indexes well above the new one's.
		_, err = old.cli.PutTag(ctx, "other", "x", dig(string(rune('a'+i))))
		require.NoError(t, err)
	}
	waitIdle(t, old, old.store.AppliedIndex())
	old.stop()

	fresh := newFakeStore("new")
	n := startFake(t, fresh, Deps{Backend: be}, nil)
	res, err := n.cli.Restore(ctx)
	require.NoError(t, err)
	require.Equal(t, 4, res.Imported, "three tags of team/app and other:x; the deleted one stays deleted")
	require.Zero(t, res.Skipped)
	tags, _, err := n.cli.ListTags(ctx, "team/app", "", 0)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b", "c"}, tags)
	for tag, d := range want {
		got, err := n.cli.GetTag(ctx, "team/app", tag, false)
		require.NoError(t, err)
		require.Equal(t, d, got.Digest.String())
	}
	_, err = n.cli.GetTag(ctx, "team/app", "d", false)
	require.ErrorIs(t, err, client.ErrNotFound)
	// Every object now carries the new cluster's index.
	r, _ := object(t, be, "team/app", "a")
	require.Equal(t, fresh.AppliedIndex(), r.Index)

	// A change in the new cluster reaches the backend, although its index is lower than the
	// old cluster's were.
	moved, err := n.cli.PutTag(ctx, "other", "x", dig("moved"))
	require.NoError(t, err)
	waitObject(t, be, "other", "x", func(r Record) bool { return r.Digest == dig("moved") && r.Index == moved.Index })
	_, err = n.cli.PutTag(ctx, "team/app", "d", dig("reborn"))
	require.NoError(t, err)
	waitObject(t, be, "team/app", "d", func(r Record) bool { return !r.Deleted && r.Digest == dig("reborn") })

	// Again: everything is there already.
	res, err = n.cli.Restore(ctx)
	require.NoError(t, err)
	require.Zero(t, res.Imported)

	// A corrupt object refuses the restore before anything is imported.
	require.NoError(t, be.Upload(ctx, tagsNS, "t-0000", bytes.NewReader([]byte("{")), 1))
	empty := newFakeStore("empty")
	n3 := startFake(t, empty, Deps{Backend: be}, nil)
	_, err = n3.cli.Restore(ctx)
	re := apiErr(t, err, http.StatusInternalServerError, errcode.CodeUnknown)
	require.Contains(t, re.Message, "t-0000")
	require.Zero(t, empty.writeCount())
}

func TestCursorFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	wb := &writeback{s: &Server{log: slog.New(slog.DiscardHandler)}, dir: dir}
	require.Zero(t, wb.loadCursor())
	require.NoError(t, wb.saveCursor(42))
	require.Equal(t, uint64(42), wb.loadCursor())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cursor"), []byte("garbage"), 0o644))
	require.Zero(t, wb.loadCursor(), "a corrupt cursor starts over (queuing twice is harmless)")
}

// TestCursorAheadOfLog: a write-back cursor left from Raft state that is gone does not make
// the node skip the new state's changes.
func TestCursorAheadOfLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "writeback"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "writeback", "cursor"), []byte("1000\n"), 0o644))
	be := memory.New()
	n := startFake(t, newFakeStore("a"), Deps{Backend: be}, withBackend(dir))
	v1, err := n.cli.PutTag(t.Context(), "app", "v1", dig("1"))
	require.NoError(t, err)
	waitObject(t, be, "app", "v1", func(r Record) bool { return r.Index == v1.Index })
}
