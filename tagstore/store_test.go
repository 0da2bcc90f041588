package tagstore_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/tagstore"
	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

// single is a one-node cluster on a real TCP listener, reopenable on the same directory and
// address.
type single struct {
	t    *testing.T
	dir  string
	addr string
	cfg  func(*tagstore.Config)
	s    *tagstore.Store
	reg  *prometheus.Registry
}

func newSingle(t *testing.T, cfg func(*tagstore.Config)) *single {
	t.Helper()
	sn := &single{t: t, dir: filepath.Join(t.TempDir(), "solo"), addr: "127.0.0.1:0", cfg: cfg}
	sn.open()
	t.Cleanup(func() {
		if sn.s != nil {
			require.NoError(t, sn.s.Close())
		}
	})
	return sn
}

func (sn *single) open() {
	t := sn.t
	t.Helper()
	ln, err := net.Listen("tcp", sn.addr)
	require.NoError(t, err)
	sn.addr = ln.Addr().String()
	cfg := tagstoretest.Config("solo", sn.dir)
	cfg.Bootstrap = true
	if sn.cfg != nil {
		sn.cfg(&cfg)
	}
	if sn.reg == nil {
		sn.reg = prometheus.NewRegistry()
	}
	s, err := tagstore.Open(cfg, tagstore.Deps{Listener: ln, Registerer: sn.reg})
	require.NoError(t, err)
	sn.s = s
	require.Eventually(t, s.IsLeader, 20*time.Second, 10*time.Millisecond, "single node never became leader")
	// A new leader records its API address through the log, from a goroutine of its own: wait
	// for that entry, so that tests counting log entries do not count it as theirs.
	require.Eventually(t, func() bool {
		l, ok := s.Leader()
		return ok && l.APIAddr == cfg.APIAddr
	}, 20*time.Second, 10*time.Millisecond, "the leader never recorded its API address")
}

func (sn *single) restart() {
	sn.t.Helper()
	require.NoError(sn.t, sn.s.Close())
	sn.s = nil
	sn.open()
}

func dg(s string) digest.Digest { return digest.FromString(s) }

func TestPutGetDelete(t *testing.T) {
	t.Parallel()
	s := newSingle(t, nil).s
	ctx := t.Context()

	_, err := s.Get(ctx, "app", "prod", tagstore.Linearizable)
	require.ErrorIs(t, err, tagstore.ErrNotFound)

	t1, err := s.Put(ctx, "app", "prod", dg("v1"))
	require.NoError(t, err)
	require.Equal(t, "app", t1.Repo)
	require.Equal(t, "prod", t1.Name)
	require.Equal(t, dg("v1"), t1.Digest)
	require.NotZero(t, t1.Index)
	require.False(t, t1.Updated.IsZero())

	for _, c := range []tagstore.Consistency{tagstore.Linearizable, tagstore.Stale} {
		got, err := s.Get(ctx, "app", "prod", c)
		require.NoError(t, err, c.String())
		require.Equal(t, t1, got, c.String())
	}

	t2, err := s.Put(ctx, "app", "prod", dg("v2"))
	require.NoError(t, err)
	require.Greater(t, t2.Index, t1.Index, "a tag's index only grows")
	got, err := s.Get(ctx, "app", "prod", tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, dg("v2"), got.Digest)

	old, err := s.Delete(ctx, "app", "prod")
	require.NoError(t, err)
	require.Equal(t, t2, old, "delete returns the deleted value")
	_, err = s.Get(ctx, "app", "prod", tagstore.Linearizable)
	require.ErrorIs(t, err, tagstore.ErrNotFound)
	_, err = s.Delete(ctx, "app", "prod")
	require.ErrorIs(t, err, tagstore.ErrNotFound)

	// A repository exists while it has tags.
	_, err = s.Tags(ctx, "app", "", 0, tagstore.Linearizable)
	require.ErrorIs(t, err, tagstore.ErrNotFound)
	repos, err := s.Repositories(ctx, "", 0, tagstore.Linearizable)
	require.NoError(t, err)
	require.Empty(t, repos)

	st := s.Status()
	require.Equal(t, "leader", st.State)
	require.Equal(t, "solo", st.LeaderID)
	require.Equal(t, "solo.api.test:8080", st.LeaderAPIAddr)
	require.Len(t, st.Members, 1)
	require.Equal(t, tagstore.Member{ID: "solo", RaftAddr: s.RaftAddr(), APIAddr: "solo.api.test:8080", Suffrage: "voter", Leader: true}, st.Members[0])
	require.GreaterOrEqual(t, st.CommitIndex, st.AppliedIndex)
	require.Equal(t, s.AppliedIndex(), st.AppliedIndex)
}

func TestListPagination(t *testing.T) {
	t.Parallel()
	s := newSingle(t, nil).s
	ctx := t.Context()

	var batch []tagstore.Tag
	var want []string
	for i := range 250 {
		name := fmt.Sprintf("v%03d", i)
		want = append(want, name)
		batch = append(batch, tagstore.Tag{Repo: "team/app", Name: name, Digest: dg(name)})
	}
	// Neighbouring repositories must not leak into team/app's listing.
	batch = append(batch,
		tagstore.Tag{Repo: "team", Name: "zzz", Digest: dg("a")},
		tagstore.Tag{Repo: "team/app-b", Name: "aaa", Digest: dg("b")},
		tagstore.Tag{Repo: "team/app/sub", Name: "aaa", Digest: dg("c")},
		tagstore.Tag{Repo: "alpha", Name: "1", Digest: dg("d")},
	)
	imported, skipped, err := s.Import(ctx, batch)
	require.NoError(t, err)
	require.Equal(t, len(batch), imported)
	require.Zero(t, skipped)

	all, err := s.Tags(ctx, "team/app", "", 0, tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, want, all)

	var paged []string
	last := ""
	for {
		page, err := s.Tags(ctx, "team/app", last, 40, tagstore.Linearizable)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), 40)
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		last = page[len(page)-1]
	}
	require.Equal(t, want, paged)

	page, err := s.Tags(ctx, "team/app", "v100x", 2, tagstore.Stale)
	require.NoError(t, err)
	require.Equal(t, []string{"v101", "v102"}, page, "last need not be an existing tag")
	page, err = s.Tags(ctx, "team/app", "zzz", 10, tagstore.Stale)
	require.NoError(t, err)
	require.Empty(t, page)

	repos, err := s.Repositories(ctx, "", 0, tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, []string{"alpha", "team", "team/app", "team/app-b", "team/app/sub"}, repos)
	repos, err = s.Repositories(ctx, "team", 2, tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, []string{"team/app", "team/app-b"}, repos)
	repos, err = s.Repositories(ctx, "team/app-b", 0, tagstore.Stale)
	require.NoError(t, err)
	require.Equal(t, []string{"team/app/sub"}, repos)

	_, err = s.Tags(ctx, "nope", "", 0, tagstore.Linearizable)
	require.ErrorIs(t, err, tagstore.ErrNotFound)
}

func TestInvalidInputChangesNothing(t *testing.T) {
	t.Parallel()
	s := newSingle(t, nil).s
	ctx := t.Context()
	good := dg("x")
	_, err := s.Put(ctx, "ok", "keep", good)
	require.NoError(t, err)
	before := s.AppliedIndex()

	cases := []struct {
		repo, tag string
		d         digest.Digest
		mention   string
	}{
		{"", "t", good, "empty"},
		{"Upper", "t", good, `"Upper"`},
		{"a//b", "t", good, `component 2 ("")`},
		{"a/-b", "t", good, `component 2 ("-b")`},
		{"a_", "t", good, `"a_"`},
		{"a___b", "t", good, `"a___b"`},
		{"a..b", "t", good, `"a..b"`},
		{strings.Repeat("a", 256), "t", good, "256 characters"},
		{"ok", "", good, "tag: empty"},
		{"ok", ".hidden", good, `".hidden"`},
		{"ok", "-x", good, `"-x"`},
		{"ok", "a/b", good, `"a/b"`},
		{"ok", "a:b", good, `"a:b"`},
		{"ok", strings.Repeat("t", 129), good, "129 characters"},
		{"ok", "t", "", "digest: empty"},
		{"ok", "t", "sha256:abc", `"sha256:abc"`},
		{"ok", "t", "sha256:" + digest.Digest(strings.ToUpper(good.Encoded())), "sha256:"},
		{"ok", "t", "md5:d41d8cd98f00b204e9800998ecf8427e", `algorithm "md5"`},
		{"ok", "t", digest.SHA384.FromString("x"), `algorithm "sha384"`},
		{"ok", "t", "nocolon", "algorithm:hex"},
	}
	for _, tc := range cases {
		_, err := s.Put(ctx, tc.repo, tc.tag, tc.d)
		require.ErrorIs(t, err, tagstore.ErrInvalid, "put %q %q %q", tc.repo, tc.tag, tc.d)
		require.Contains(t, err.Error(), tc.mention, "put %q %q %q", tc.repo, tc.tag, tc.d)
		if tc.d == good {
			_, err = s.Delete(ctx, tc.repo, tc.tag)
			require.ErrorIs(t, err, tagstore.ErrInvalid)
			_, err = s.Get(ctx, tc.repo, tc.tag, tagstore.Linearizable)
			require.ErrorIs(t, err, tagstore.ErrInvalid)
		}
	}
	_, err = s.Tags(ctx, "Bad", "", 0, tagstore.Linearizable)
	require.ErrorIs(t, err, tagstore.ErrInvalid)

	// One bad entry fails the whole import before anything is written.
	_, _, err = s.Import(ctx, []tagstore.Tag{
		{Repo: "ok", Name: "fine", Digest: good},
		{Repo: "ok", Name: "bad!", Digest: good},
	})
	require.ErrorIs(t, err, tagstore.ErrInvalid)
	require.Contains(t, err.Error(), "entry 1")

	require.Equal(t, before, s.AppliedIndex(), "invalid input must not reach the log")
	repos, err := s.Repositories(ctx, "", 0, tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, []string{"ok"}, repos)
	tags, err := s.Tags(ctx, "ok", "", 0, tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, []string{"keep"}, tags)

	// The longest valid names are accepted.
	long := strings.Repeat("a", 127) + "/" + strings.Repeat("b", 127)
	_, err = s.Put(ctx, long, strings.Repeat("T", 128), digest.SHA512.FromString("x"))
	require.NoError(t, err)
}

func TestImportSkipsNewer(t *testing.T) {
	t.Parallel()
	s := newSingle(t, nil).s
	ctx := t.Context()
	now := time.Now().UTC()

	cur, err := s.Put(ctx, "app", "live", dg("live"))
	require.NoError(t, err)

	old := cur.Updated.Add(-time.Hour)
	newer := cur.Updated.Add(time.Hour)
	in := []tagstore.Tag{
		{Repo: "app", Name: "live", Digest: dg("stale backup"), Updated: old},
		{Repo: "app", Name: "fresh", Digest: dg("fresh"), Updated: now},
	}
	imported, skipped, err := s.Import(ctx, in)
	require.NoError(t, err)
	require.Equal(t, 1, imported)
	require.Equal(t, 1, skipped)
	got, err := s.Get(ctx, "app", "live", tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, dg("live"), got.Digest, "an older imported value must not replace a newer one")
	fresh, err := s.Get(ctx, "app", "fresh", tagstore.Linearizable)
	require.NoError(t, err)
	require.True(t, fresh.Updated.Equal(now), "imported tags keep their time")

	// The same import again changes nothing; a newer value replaces.
	imported, skipped, err = s.Import(ctx, in)
	require.NoError(t, err)
	require.Equal(t, 0, imported)
	require.Equal(t, 2, skipped)
	imported, _, err = s.Import(ctx, []tagstore.Tag{{Repo: "app", Name: "live", Digest: dg("newer"), Updated: newer}})
	require.NoError(t, err)
	require.Equal(t, 1, imported)
	got, err = s.Get(ctx, "app", "live", tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, dg("newer"), got.Digest)

	// Large imports go in several log entries.
	var many []tagstore.Tag
	for i := range 1300 {
		many = append(many, tagstore.Tag{Repo: "bulk", Name: fmt.Sprintf("t%d", i), Digest: dg("b"), Updated: now})
	}
	before := s.AppliedIndex()
	imported, skipped, err = s.Import(ctx, many)
	require.NoError(t, err)
	require.Equal(t, 1300, imported)
	require.Zero(t, skipped)
	require.Equal(t, before+3, s.AppliedIndex(), "1300 tags in batches of 512 are three log entries")
	tags, err := s.Tags(ctx, "bulk", "", 0, tagstore.Linearizable)
	require.NoError(t, err)
	require.Len(t, tags, 1300)
}

func TestRestartKeepsStateAcrossSnapshot(t *testing.T) {
	t.Parallel()
	sn := newSingle(t, func(c *tagstore.Config) { c.TrailingLogs = 2 })
	ctx := t.Context()
	for i := range 20 {
		_, err := sn.s.Put(ctx, "app", fmt.Sprintf("t%02d", i), dg(fmt.Sprint(i)))
		require.NoError(t, err)
	}
	_, err := sn.s.Delete(ctx, "app", "t00")
	require.NoError(t, err)
	require.NoError(t, sn.s.Snapshot(ctx))
	snapIndex := sn.s.Status().LastSnapshotIndex
	require.NotZero(t, snapIndex)
	// Entries after the snapshot are replayed from the log on restart.
	for i := 20; i < 25; i++ {
		_, err := sn.s.Put(ctx, "app", fmt.Sprintf("t%02d", i), dg(fmt.Sprint(i)))
		require.NoError(t, err)
	}
	want, wantIndex, err := sn.s.Export(ctx, tagstore.Linearizable)
	require.NoError(t, err)
	require.Len(t, want, 24)

	sn.restart()
	got, gotIndex, err := sn.s.Export(ctx, tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.GreaterOrEqual(t, gotIndex, wantIndex)
	require.Equal(t, snapIndex, sn.s.Status().LastSnapshotIndex)

	// The state was rebuilt from a snapshot: the change feed cannot go back before it.
	ch, cancel := sn.s.Changes(0)
	defer cancel()
	c := <-ch
	require.Equal(t, tagstore.OpResync, c.Op)
	_, open := <-ch
	require.False(t, open, "the channel closes after the resync marker")
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	_, err := tagstore.Open(tagstore.Config{Dir: dir}, tagstore.Deps{})
	require.ErrorIs(t, err, tagstore.ErrInvalid)
	require.ErrorContains(t, err, "node_id: required")

	cfg := tagstoretest.Config("a", dir)
	_, err = tagstore.Open(cfg, tagstore.Deps{})
	require.ErrorIs(t, err, tagstore.ErrInvalid)
	require.ErrorContains(t, err, "Listener or Deps.Transport")

	// An unspecified listener address cannot be advertised.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	wild, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", port))
	if err == nil {
		_, err = tagstore.Open(cfg, tagstore.Deps{Listener: wild})
		require.ErrorContains(t, err, "advertise")
		_, acceptErr := wild.Accept()
		require.ErrorIs(t, acceptErr, net.ErrClosed, "Open closes the listener it was given when it fails")
	}

	// A directory in use by another Store is refused.
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	first, err := tagstore.Open(cfg, tagstore.Deps{Listener: ln1})
	require.NoError(t, err)
	defer func() { require.NoError(t, first.Close()) }()
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	_, err = tagstore.Open(cfg, tagstore.Deps{Listener: ln2})
	require.ErrorContains(t, err, "locked")
}

func TestClosedStore(t *testing.T) {
	t.Parallel()
	sn := newSingle(t, nil)
	s := sn.s
	ctx := t.Context()
	_, err := s.Put(ctx, "app", "a", dg("a"))
	require.NoError(t, err)
	ch, _ := s.Changes(0)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")
	sn.s = nil

	_, err = s.Put(ctx, "app", "b", dg("b"))
	require.ErrorIs(t, err, tagstore.ErrClosed)
	_, err = s.Get(ctx, "app", "a", tagstore.Linearizable)
	require.ErrorIs(t, err, tagstore.ErrClosed)
	require.ErrorIs(t, s.WaitForLeader(ctx), tagstore.ErrClosed)
	for range ch {
	}
	closed, cancel := s.Changes(0)
	defer cancel()
	_, open := <-closed
	require.False(t, open)
}

func TestContextEnds(t *testing.T) {
	t.Parallel()
	s := newSingle(t, nil).s
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Put(ctx, "app", "a", dg("a"))
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, tagstore.ErrIndeterminate, "nothing was handed to raft")
	_, err = s.Get(ctx, "app", "a", tagstore.Linearizable)
	require.ErrorIs(t, err, context.Canceled)
}

func TestJoinUnreachableChangesNothing(t *testing.T) {
	t.Parallel()
	s := newSingle(t, nil).s
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	err = s.Join(t.Context(), tagstore.Member{ID: "ghost", RaftAddr: addr, APIAddr: "ghost.test:80"})
	require.ErrorIs(t, err, tagstore.ErrUnavailable)
	require.ErrorContains(t, err, addr)
	require.Len(t, s.Status().Members, 1, "a one-node cluster must not gain a voter it cannot reach")
	_, err = s.Put(t.Context(), "app", "still", dg("writable"))
	require.NoError(t, err)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	sn := newSingle(t, nil)
	s := sn.s
	ctx := t.Context()
	_, err := s.Put(ctx, "app", "a", dg("a"))
	require.NoError(t, err)

	const readers, each = 16, 20
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			for range each {
				_, err := s.Get(ctx, "app", "a", tagstore.Linearizable)
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()

	families, err := sn.reg.Gather()
	require.NoError(t, err)
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	value := func(name string) float64 {
		f, ok := byName[name]
		require.True(t, ok, "metric %s", name)
		m := f.GetMetric()[0]
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		default:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	require.Equal(t, 1.0, value("krakenctl_tagstore_leader"))
	require.Equal(t, 1.0, value("krakenctl_tagstore_tags"))
	require.Equal(t, float64(s.AppliedIndex()), value("krakenctl_tagstore_applied_index"))
	batches := value("krakenctl_tagstore_read_batches_total")
	require.Positive(t, batches)
	require.LessOrEqual(t, batches, float64(readers*each), "a round serves one or more reads")
	size := byName["krakenctl_tagstore_read_batch_size"].GetMetric()[0].GetHistogram()
	require.Equal(t, float64(readers*each), size.GetSampleSum(), "every linearizable read was served by a round")
	require.Contains(t, byName, "krakenctl_tagstore_apply_duration_seconds")

	// Close unregisters, so the same registry can serve a reopened store.
	sn.restart()
	_, err = sn.reg.Gather()
	require.NoError(t, err)
}
