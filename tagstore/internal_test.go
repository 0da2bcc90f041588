package tagstore

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// bareStore is a Store with no Raft, for driving the FSM directly.
func bareStore(t testing.TB) *Store {
	t.Helper()
	m, err := newMetrics(nil)
	require.NoError(t, err)
	return &Store{log: slog.New(slog.DiscardHandler), m: m, st: newState(), feed: newFeed(16, func() {})}
}

func mustEncode(t testing.TB, ct cmdType, v any) []byte {
	t.Helper()
	b, err := encodeCommand(ct, v)
	require.NoError(t, err)
	return b
}

// testLog is a sequence of commands as Raft would apply them.
func testLog(t testing.TB) []*raft.Log {
	t.Helper()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	cmds := [][]byte{
		mustEncode(t, cmdMemberMeta, memberMetaCmd{ID: "n1", APIAddr: "n1:80"}),
		mustEncode(t, cmdPut, putCmd{Repo: "a", Tag: "1", Digest: digest.FromString("1"), Time: at}),
		mustEncode(t, cmdPut, putCmd{Repo: "b/c", Tag: "x", Digest: digest.FromString("x"), Time: at}),
		mustEncode(t, cmdImport, importCmd{Tags: []importTag{
			{Repo: "a", Tag: "1", Digest: digest.FromString("old"), Updated: at.Add(-time.Hour)},
			{Repo: "a", Tag: "2", Digest: digest.FromString("2"), Updated: at},
		}}),
		append([]byte{byte(ignoreUnknown | 0x55)}, `{"future":true}`...),
		mustEncode(t, cmdDelete, deleteCmd{Repo: "b/c", Tag: "x", Time: at}),
		mustEncode(t, cmdMemberMeta, memberMetaCmd{ID: "gone", APIAddr: "g:1"}),
		mustEncode(t, cmdMemberMeta, memberMetaCmd{ID: "gone", Remove: true}),
	}
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		logs[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: c}
	}
	return logs
}

func applyAll(t testing.TB, s *Store, logs []*raft.Log) []any {
	t.Helper()
	f := fsm{s}
	var res []any
	for _, l := range logs {
		res = append(res, f.Apply(l))
	}
	return res
}

func snapshotBytes(t testing.TB, s *Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	s.mu.RLock()
	defer s.mu.RUnlock()
	require.NoError(t, writeSnapshot(&buf, s.st, s.applied.Load()))
	return buf.Bytes()
}

func TestFSMAppliesDeterministically(t *testing.T) {
	logs := testLog(t)
	s1, s2 := bareStore(t), bareStore(t)
	res := applyAll(t, s1, logs)
	applyAll(t, s2, logs)
	require.Equal(t, snapshotBytes(t, s1), snapshotBytes(t, s2), "replicas applying the same log agree")

	require.Equal(t, uint64(len(logs)), s1.applied.Load())
	require.Equal(t, uint64(1), s1.appliedTerm.Load())
	imp := res[3].(*applyResult)
	require.Equal(t, 1, imp.imported)
	require.Equal(t, 1, imp.skipped, "the older imported value is skipped")
	del := res[5].(*applyResult)
	require.True(t, del.found)
	require.Equal(t, "x", del.tag.Name)

	st := s1.st
	require.Equal(t, []string{"1", "2"}, must(st.tagNames("a", "", 0)))
	require.Equal(t, []string{"a"}, st.repoNames("", 0), "b/c lost its only tag")
	one, _ := st.get("a", "1")
	require.Equal(t, digest.FromString("1"), one.Digest)
	require.Equal(t, uint64(2), one.Index)
	require.Equal(t, map[string]string{"n1": "n1:80"}, st.members)
}

// counterValue reads a counter's current value.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}

func must[T any](v T, ok bool) T {
	if !ok {
		panic("missing")
	}
	return v
}

func TestFSMUnknownCommands(t *testing.T) {
	s := bareStore(t)
	f := fsm{s}
	applyAll(t, s, testLog(t)[:3])
	before := s.st.all()

	// An unknown type without the ignore bit, an empty entry and a garbled payload are skipped
	// with an error result and counted; nothing panics and the state is unchanged.
	for i, data := range [][]byte{{0x55, '{', '}'}, nil, {byte(cmdPut), '{'}, {byte(cmdImport), 'n', 'o'}} {
		index := uint64(10 + i)
		res := f.Apply(&raft.Log{Index: index, Term: 2, Data: data})
		require.ErrorIs(t, res.(*applyResult).err, ErrUnknownCommand, "entry %d", i)
		require.ErrorContains(t, res.(*applyResult).err, fmt.Sprintf("at index %d", index))
		require.Equal(t, index, s.applied.Load(), "the entry counts as applied, so reads do not wait for it")
	}
	require.Equal(t, before, s.st.all())
	require.Equal(t, 4.0, counterValue(t, s.m.applyErrors))

	// The ignore-unknown bit lets an old node skip a new command and carry on.
	res := f.Apply(&raft.Log{Index: 20, Term: 2, Data: []byte{byte(ignoreUnknown | 0x55), '{', '}'}})
	require.Equal(t, &applyResult{}, res)
	require.Equal(t, uint64(20), s.applied.Load())
	require.Equal(t, 4.0, counterValue(t, s.m.applyErrors))
}

func TestSnapshotRoundTripAndCorruption(t *testing.T) {
	s := bareStore(t)
	applyAll(t, s, testLog(t))
	data := snapshotBytes(t, s)

	st, index, err := readSnapshot(bytes.NewReader(data))
	require.NoError(t, err)
	require.Equal(t, s.applied.Load(), index)
	require.Equal(t, s.st.all(), st.all())
	require.Equal(t, s.st.members, st.members)
	require.Equal(t, s.st.repoNames("", 0), st.repoNames("", 0))

	lines := strings.SplitAfter(string(data), "\n")
	for name, bad := range map[string]string{
		"empty":     "",
		"truncated": strings.Join(lines[:len(lines)-2], ""),
		"format":    strings.Replace(string(data), `"format":1`, `"format":9`, 1),
		"trailing":  string(data) + lines[1],
		"reordered": lines[0] + lines[2] + lines[1],
		"garbled":   lines[0] + "{nope\n",
	} {
		_, _, err := readSnapshot(strings.NewReader(bad))
		require.Error(t, err, name)
	}

	// Restore swaps the state wholesale and resets the change feed.
	fresh := bareStore(t)
	ch, cancel := fresh.feed.subscribe(0)
	defer cancel()
	require.NoError(t, fsm{fresh}.Restore(nopCloser{bytes.NewReader(data)}))
	require.Equal(t, s.st.all(), fresh.st.all())
	require.Equal(t, s.applied.Load(), fresh.applied.Load())
	require.Equal(t, Change{Op: OpResync}, <-ch)
	require.Error(t, fsm{fresh}.Restore(nopCloser{strings.NewReader("{}")}))
	require.Equal(t, s.st.all(), fresh.st.all(), "a failed restore keeps the state")
}

type nopCloser struct{ io.Reader }

func (nopCloser) Close() error { return nil }

func TestHclogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newHclogAdapter(l, "raft")

	h.Info("hello", "peer", "n2", "error", fmt.Errorf("boom"))
	require.Contains(t, buf.String(), `level=INFO msg=hello logger=raft peer=n2 error=boom`)
	buf.Reset()

	h.Named("snapshot").With("id", 7).Warn("slow")
	require.Contains(t, buf.String(), `level=WARN msg=slow logger=raft.snapshot id=7`)
	buf.Reset()

	h.Trace("hidden")
	require.Empty(t, buf.String(), "trace is below the handler's level")
	require.False(t, h.IsTrace())
	require.True(t, h.IsDebug())

	h.SetLevel(hclog.Warn)
	h.Info("filtered")
	require.Empty(t, buf.String())
	require.False(t, h.IsInfo())
	require.Equal(t, hclog.Warn, h.Named("x").GetLevel(), "the level is shared with derived loggers")
	h.SetLevel(hclog.Trace)

	h.Error("formatted", hclog.Format{"%d items", 3})
	require.Contains(t, buf.String(), `msg="formatted 3 items"`)
	buf.Reset()

	h.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("std")
	require.Contains(t, buf.String(), `level=ERROR msg=std`)
	require.Equal(t, "raft", h.Name())
	require.Equal(t, "other", h.ResetNamed("other").Name())
	require.Equal(t, []any{"k", 1}, h.With("k", 1).ImpliedArgs())
}

func TestConfigValidate(t *testing.T) {
	var empty Config
	empty.Defaults()
	err := empty.Validate()
	require.ErrorContains(t, err, "node_id: required")
	require.ErrorContains(t, err, "dir: required")

	ok := Config{NodeID: "n1", Dir: "/tmp/x"}
	ok.Defaults()
	require.NoError(t, ok.Validate())
	require.Equal(t, DefaultHeartbeatTimeout, ok.HeartbeatTimeout)

	for key, mut := range map[string]func(*Config){
		"node_id":              func(c *Config) { c.NodeID = "bad id" },
		"advertise":            func(c *Config) { c.Advertise = "0.0.0.0:7000" },
		"api_addr":             func(c *Config) { c.APIAddr = "http://x:1" },
		"heartbeat_timeout":    func(c *Config) { c.HeartbeatTimeout = time.Millisecond },
		"leader_lease_timeout": func(c *Config) { c.LeaderLeaseTimeout = 2 * time.Second },
		"election_timeout":     func(c *Config) { c.ElectionTimeout = 500 * time.Millisecond },
		"max_append_entries":   func(c *Config) { c.MaxAppendEntries = 5000 },
		"snapshot_retain":      func(c *Config) { c.SnapshotRetain = -1 },
		"change_feed_retain":   func(c *Config) { c.ChangeFeedRetain = -1 },
		"apply_timeout":        func(c *Config) { c.ApplyTimeout = -1 },
		"snapshot_interval":    func(c *Config) { c.SnapshotInterval = time.Microsecond },
	} {
		c := ok
		mut(&c)
		err := c.Validate()
		require.ErrorContains(t, err, key, key)
	}
}

// TestLinksInStateAndSnapshot: links sit in the tag tree after their repository's tags, are
// counted apart, keep a repository in the catalog, and survive a snapshot round trip.
func TestLinksInStateAndSnapshot(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	d := digest.FromString("d")
	blob, ref := LinkKey("blob/"+d.String()), LinkKey("referrer/"+d.String()+"/"+d.String())
	cmds := [][]byte{
		mustEncode(t, cmdPut, putCmd{Repo: "a", Tag: "zz", Digest: d, Time: at}),
		mustEncode(t, cmdPut, putCmd{Repo: "a", Tag: blob, Digest: d, Time: at}),
		mustEncode(t, cmdPut, putCmd{Repo: "a", Tag: ref, Digest: d, Time: at}),
		mustEncode(t, cmdPut, putCmd{Repo: "b", Tag: blob, Digest: d, Time: at}),
		mustEncode(t, cmdPut, putCmd{Repo: "c", Tag: "t", Digest: d, Time: at}),
		mustEncode(t, cmdDelete, deleteCmd{Repo: "a", Tag: ref, Time: at}),
	}
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		logs[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: c}
	}
	s := bareStore(t)
	applyAll(t, s, logs)
	st := s.st
	require.Equal(t, []string{"zz"}, must(st.tagNames("a", "", 0)))
	_, ok := st.tagNames("b", "", 0)
	require.False(t, ok, "b has links but no tags")
	require.Equal(t, []string{"a", "b", "c"}, st.repoNames("", 0))
	tags, links := st.counts()
	require.Equal(t, 2, tags)
	require.Equal(t, 2, links)
	require.Equal(t, []Link{{Repo: "a", Name: "blob/" + d.String(), Digest: d, Index: 2, Updated: at}}, st.links("a", "blob/"))
	require.Empty(t, st.links("a", "referrer/"))

	data := snapshotBytes(t, s)
	back, index, err := readSnapshot(bytes.NewReader(data))
	require.NoError(t, err)
	require.Equal(t, uint64(len(logs)), index)
	require.Equal(t, st.all(), back.all())
	require.Equal(t, st.repoNames("", 0), back.repoNames("", 0))
	tags, links = back.counts()
	require.Equal(t, 2, tags)
	require.Equal(t, 2, links)

	// Removing the last link of a repository takes it out of the catalog.
	_, ok = back.remove("b", blob)
	require.True(t, ok)
	require.Equal(t, []string{"a", "c"}, back.repoNames("", 0))
}
