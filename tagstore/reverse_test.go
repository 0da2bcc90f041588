package tagstore

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// bruteTagsOf is what the reverse index answers, found by reading every tag.
func bruteTagsOf(st *state, repo string, d digest.Digest) []string {
	names := []string{}
	for _, t := range st.all() {
		if t.Repo == repo && !t.IsLink() && t.Digest == d {
			names = append(names, t.Name)
		}
	}
	return names
}

// requireIndexMatches checks the reverse index against every tag of st, both ways: each tag is
// found under its digest, and the index holds nothing else.
func requireIndexMatches(t *testing.T, st *state, repos []string, digests []digest.Digest) {
	t.Helper()
	for _, r := range repos {
		for _, d := range digests {
			require.Equal(t, bruteTagsOf(st, r, d), st.tagsOf(r, d, "", 0), "%s %s", r, d)
		}
	}
	tags, _ := st.counts()
	require.Equal(t, tags, st.byDigest.Len(), "one entry per tag, none for links or removed tags")
}

// The reverse index follows every command that changes tags (put, move, delete, import, links
// beside them), is the same on replicas that apply the same log, and is rebuilt identically
// from a snapshot, which does not carry it.
func TestReverseIndexFollowsLog(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 1))
	repos := []string{"a", "b/c"}
	digests := []digest.Digest{digest.FromString("0"), digest.FromString("1"), digest.FromString("2")}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var logs []*raft.Log
	for i := range 400 {
		repo, tag, d := repos[rng.IntN(2)], fmt.Sprint(rng.IntN(12)), digests[rng.IntN(3)]
		var data []byte
		switch rng.IntN(4) {
		case 0, 1:
			data = mustEncode(t, cmdPut, putCmd{Repo: repo, Tag: tag, Digest: d, Time: at})
		case 2:
			data = mustEncode(t, cmdDelete, deleteCmd{Repo: repo, Tag: tag, Time: at})
		default:
			data = mustEncode(t, cmdImport, importCmd{Tags: []importTag{
				{Repo: repo, Tag: tag, Digest: d, Updated: at.Add(time.Duration(rng.IntN(3)-1) * time.Hour)},
				// A link shares the tags' tree but never the reverse index.
				{Repo: repo, Tag: LinkKey("manifest/" + tag), Digest: d, Updated: at},
			}})
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data})
	}
	s1, s2 := bareStore(t), bareStore(t)
	f1, f2 := fsm{s1}, fsm{s2}
	for _, l := range logs {
		f1.Apply(l)
		f2.Apply(l)
		requireIndexMatches(t, s1.st, repos, digests)
	}
	require.Equal(t, s1.st.byDigest.Len(), s2.st.byDigest.Len())
	for _, r := range repos {
		for _, d := range digests {
			require.Equal(t, s1.st.tagsOf(r, d, "", 0), s2.st.tagsOf(r, d, "", 0), "replicas agree")
		}
	}

	restored := bareStore(t)
	require.NoError(t, fsm{restored}.Restore(nopCloser{bytes.NewReader(snapshotBytes(t, s1))}))
	requireIndexMatches(t, restored.st, repos, digests)
	for _, r := range repos {
		for _, d := range digests {
			require.Equal(t, s1.st.tagsOf(r, d, "", 0), restored.st.tagsOf(r, d, "", 0), "restored from the snapshot")
		}
	}
}

// A snapshot as every version has written it (format 1: header, then one line per tag, no
// reverse index) restores into a state whose reverse index answers; pages follow last and n.
func TestReverseIndexFromSnapshotWithoutIt(t *testing.T) {
	one, two := digest.FromString("one"), digest.FromString("two")
	snap := strings.Join([]string{
		`{"format":1,"index":7,"tags":5,"members":{"n1":"n1:80"}}`,
		`{"r":"app","t":"a","d":"` + one.String() + `","i":3,"u":"2026-01-01T00:00:00Z"}`,
		`{"r":"app","t":"b","d":"` + two.String() + `","i":4,"u":"2026-01-01T00:00:00Z"}`,
		`{"r":"app","t":"c","d":"` + one.String() + `","i":5,"u":"2026-01-01T00:00:00Z"}`,
		`{"r":"app","t":"d","d":"` + one.String() + `","i":6,"u":"2026-01-01T00:00:00Z"}`,
		`{"r":"other","t":"a","d":"` + one.String() + `","i":7,"u":"2026-01-01T00:00:00Z"}`,
	}, "\n") + "\n"
	s := bareStore(t)
	require.NoError(t, fsm{s}.Restore(nopCloser{strings.NewReader(snap)}))

	got, err := s.TagsOf(t.Context(), "app", one, "", 0, Stale)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "c", "d"}, got)
	got, err = s.TagsOf(t.Context(), "app", one, "a", 1, Stale)
	require.NoError(t, err)
	require.Equal(t, []string{"c"}, got, "after last, at most n")
	got, err = s.TagsOf(t.Context(), "app", one, "d", 0, Stale)
	require.NoError(t, err)
	require.Empty(t, got)
	got, err = s.TagsOf(t.Context(), "nothing", one, "", 0, Stale)
	require.NoError(t, err)
	require.Empty(t, got, "a repository without such tags has none")
	_, err = s.TagsOf(t.Context(), "Bad Repo", one, "", 0, Stale)
	require.Error(t, err)
}

// BenchmarkUntagLookup finds the tags of one repository that point at one manifest, as a
// manifest delete must, in a repository of n tags of which 3 point at it: through the reverse
// index, and by the scan it replaces (list every tag, read each, compare; in process, without
// the HTTP round trips the proxy paid per page and per tag).
func BenchmarkUntagLookup(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		s := bareStore(b)
		target := digest.FromString("target")
		s.mu.Lock()
		for i := range n {
			d := digest.FromString(fmt.Sprint(i))
			if i%(n/3) == 1 {
				d = target
			}
			s.st.put(Tag{Repo: "bench", Name: fmt.Sprintf("t%06d", i), Digest: d})
		}
		s.mu.Unlock()
		want := bruteTagsOf(s.st, "bench", target)
		b.Run(fmt.Sprintf("scan/tags=%d", n), func(b *testing.B) {
			for b.Loop() {
				var got []string
				last := ""
				for {
					page, err := s.Tags(b.Context(), "bench", last, 1000, Stale)
					if err != nil {
						b.Fatal(err)
					}
					for _, name := range page {
						t, err := s.Get(b.Context(), "bench", name, Stale)
						if err != nil {
							b.Fatal(err)
						}
						if t.Digest == target {
							got = append(got, name)
						}
					}
					if len(page) < 1000 {
						break
					}
					last = page[len(page)-1]
				}
				if !slices.Equal(got, want) {
					b.Fatalf("found %v, want %v", got, want)
				}
			}
		})
		b.Run(fmt.Sprintf("index/tags=%d", n), func(b *testing.B) {
			for b.Loop() {
				got, err := s.TagsOf(b.Context(), "bench", target, "", 1000, Stale)
				if err != nil || !slices.Equal(got, want) {
					b.Fatalf("found %v, want %v (%v)", got, want, err)
				}
			}
		})
	}
}
