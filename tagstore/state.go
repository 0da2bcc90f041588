package tagstore

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"time"

	"github.com/google/btree"
	"github.com/opencontainers/go-digest"
)

// btreeDegree is the B-tree fan-out: wide nodes keep listings of 100,000 tags cache friendly.
const btreeDegree = 32

// lessTag orders tags by repository, then name, so one repository's tags are one range.
func lessTag(a, b Tag) bool {
	if a.Repo != b.Repo {
		return a.Repo < b.Repo
	}
	return a.Name < b.Name
}

// repoEntry counts the tags and links of one repository; a repository exists while it has
// either.
type repoEntry struct {
	name  string
	tags  int
	links int
}

func lessRepo(a, b repoEntry) bool { return a.name < b.name }

// digestRef is one entry of the reverse index: tag name of repo points at digest.
type digestRef struct {
	repo   string
	digest digest.Digest
	name   string
}

// lessRef orders the reverse index by repository, digest, then tag name, so the tags of one
// repository that point at one digest are one range.
func lessRef(a, b digestRef) bool {
	if a.repo != b.repo {
		return a.repo < b.repo
	}
	if a.digest != b.digest {
		return a.digest < b.digest
	}
	return a.name < b.name
}

// state is the replicated state machine's data. It is not safe for concurrent mutation: the
// Store guards it with its RWMutex (the FSM goroutine writes, readers share). clone is O(1)
// thanks to the B-trees' copy-on-write, which makes Snapshot cheap.
type state struct {
	// tags holds tags and links (a link under its stored name, LinkKey): a repository's tags
	// are one range, and its links the range right after them.
	tags  *btree.BTreeG[Tag]
	repos *btree.BTreeG[repoEntry]
	// byDigest is the reverse index of tags (links are not in it): derived from tags, kept
	// in step by put and remove, never written to a snapshot (readSnapshot rebuilds it), so it
	// is the same on every node that applied the same log.
	byDigest *btree.BTreeG[digestRef]
	// nlinks is how many entries of tags are links.
	nlinks int
	// members maps a node ID to its recorded API address.
	members map[string]string
}

func newState() *state {
	return &state{
		tags:     btree.NewG(btreeDegree, lessTag),
		repos:    btree.NewG(btreeDegree, lessRepo),
		byDigest: btree.NewG(btreeDegree, lessRef),
		members:  map[string]string{},
	}
}

// clone returns a copy that shares nodes with st until either side writes.
func (st *state) clone() *state {
	return &state{tags: st.tags.Clone(), repos: st.repos.Clone(), byDigest: st.byDigest.Clone(), nlinks: st.nlinks,
		members: maps.Clone(st.members)}
}

func (st *state) get(repo, name string) (Tag, bool) {
	return st.tags.Get(Tag{Repo: repo, Name: name})
}

// put stores t (a tag or a stored link), replacing any value of the same name.
func (st *state) put(t Tag) {
	old, replaced := st.tags.ReplaceOrInsert(t)
	if !t.IsLink() {
		if replaced {
			st.byDigest.Delete(digestRef{repo: old.Repo, digest: old.Digest, name: old.Name})
		}
		st.byDigest.ReplaceOrInsert(digestRef{repo: t.Repo, digest: t.Digest, name: t.Name})
	}
	if replaced {
		return
	}
	r, _ := st.repos.Get(repoEntry{name: t.Repo})
	r.name = t.Repo
	if t.IsLink() {
		r.links++
		st.nlinks++
	} else {
		r.tags++
	}
	st.repos.ReplaceOrInsert(r)
}

// remove deletes a tag (or a stored link) and returns its value.
func (st *state) remove(repo, name string) (Tag, bool) {
	old, ok := st.tags.Delete(Tag{Repo: repo, Name: name})
	if !ok {
		return Tag{}, false
	}
	if !old.IsLink() {
		st.byDigest.Delete(digestRef{repo: old.Repo, digest: old.Digest, name: old.Name})
	}
	r, _ := st.repos.Get(repoEntry{name: repo})
	if old.IsLink() {
		r.links--
		st.nlinks--
	} else {
		r.tags--
	}
	if r.tags <= 0 && r.links <= 0 {
		st.repos.Delete(r)
	} else {
		st.repos.ReplaceOrInsert(r)
	}
	return old, true
}

// tagNames lists the tag names of repo greater than last, at most n (n <= 0: all), and
// whether the repository has tags. Links are never listed: the walk stops at the first.
func (st *state) tagNames(repo, last string, n int) ([]string, bool) {
	r, ok := st.repos.Get(repoEntry{name: repo})
	if !ok || r.tags == 0 {
		return nil, false
	}
	size := r.tags
	if n > 0 && n < size {
		size = n
	}
	names := make([]string, 0, size)
	st.tags.AscendGreaterOrEqual(Tag{Repo: repo, Name: last}, func(t Tag) bool {
		if t.Repo != repo || t.IsLink() {
			return false
		}
		if t.Name == last {
			return true
		}
		names = append(names, t.Name)
		return n <= 0 || len(names) < n
	})
	return names, true
}

// tagsOf lists the names of repo's tags that point at d and are greater than last, at most n
// (n <= 0: all), in order of name. It reads only those tags, through the reverse index.
func (st *state) tagsOf(repo string, d digest.Digest, last string, n int) []string {
	names := []string{}
	st.byDigest.AscendGreaterOrEqual(digestRef{repo: repo, digest: d, name: last}, func(r digestRef) bool {
		if r.repo != repo || r.digest != d {
			return false
		}
		if r.name == last {
			return true
		}
		names = append(names, r.name)
		return n <= 0 || len(names) < n
	})
	return names
}

// links returns the links of repo whose names start with prefix, in order of name.
func (st *state) links(repo, prefix string) []Link {
	var out []Link
	from := Tag{Repo: repo, Name: LinkKey(prefix)}
	st.tags.AscendGreaterOrEqual(from, func(t Tag) bool {
		if t.Repo != repo || !strings.HasPrefix(t.Name, from.Name) {
			return false
		}
		out = append(out, t.AsLink())
		return true
	})
	if out == nil {
		out = []Link{}
	}
	return out
}

// counts returns how many tags and links the state holds.
func (st *state) counts() (tags, links int) { return st.tags.Len() - st.nlinks, st.nlinks }

// repoNames lists repository names (with tags or links) greater than last, at most n (n <= 0: all).
func (st *state) repoNames(last string, n int) []string {
	var names []string
	if n > 0 {
		names = make([]string, 0, min(n, st.repos.Len()))
	}
	st.repos.AscendGreaterOrEqual(repoEntry{name: last}, func(r repoEntry) bool {
		if r.name == last {
			return true
		}
		names = append(names, r.name)
		return n <= 0 || len(names) < n
	})
	return names
}

// all returns every tag and stored link in (repository, name) order.
func (st *state) all() []Tag {
	tags := make([]Tag, 0, st.tags.Len())
	st.tags.Ascend(func(t Tag) bool {
		tags = append(tags, t)
		return true
	})
	return tags
}

// Snapshot format: a header line, then one line per entry (tag or stored link) in (repository,
// name) order; the header's Tags counts both. JSON
// keeps it readable with standard tools and lets later versions add fields; the header's
// format number changes only for an incompatible layout.
const snapshotFormat = 1

type snapshotHeader struct {
	Format int `json:"format"`
	// Index is the last log index applied to the state (the change feed resumes after it).
	Index   uint64            `json:"index"`
	Tags    int               `json:"tags"`
	Members map[string]string `json:"members"`
}

type snapshotTag struct {
	Repo    string        `json:"r"`
	Name    string        `json:"t"`
	Digest  digest.Digest `json:"d"`
	Index   uint64        `json:"i"`
	Updated time.Time     `json:"u"`
}

// writeSnapshot streams st to w.
func writeSnapshot(w io.Writer, st *state, index uint64) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(snapshotHeader{Format: snapshotFormat, Index: index, Tags: st.tags.Len(), Members: st.members}); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}
	var err error
	st.tags.Ascend(func(t Tag) bool {
		err = enc.Encode(snapshotTag(t))
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("write snapshot tag: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

// readSnapshot decodes a snapshot written by writeSnapshot into a new state. It checks the
// format, the count and the order of tags, so a truncated or garbled snapshot is an error
// rather than a silently smaller state.
func readSnapshot(r io.Reader) (*state, uint64, error) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 256<<10))
	var h snapshotHeader
	if err := dec.Decode(&h); err != nil {
		return nil, 0, fmt.Errorf("read snapshot header: %w", err)
	}
	if h.Format != snapshotFormat {
		return nil, 0, fmt.Errorf("read snapshot: format %d is not supported (want %d)", h.Format, snapshotFormat)
	}
	if h.Tags < 0 {
		return nil, 0, fmt.Errorf("read snapshot: negative tag count %d", h.Tags)
	}
	st := newState()
	if h.Members != nil {
		st.members = h.Members
	}
	var prev Tag
	for i := range h.Tags {
		var t snapshotTag
		if err := dec.Decode(&t); err != nil {
			return nil, 0, fmt.Errorf("read snapshot tag %d of %d: %w", i+1, h.Tags, err)
		}
		tag := Tag(t)
		if i > 0 && !lessTag(prev, tag) {
			return nil, 0, fmt.Errorf("read snapshot tag %d: %s:%s is out of order", i+1, t.Repo, t.Name)
		}
		st.put(tag)
		prev = tag
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("read snapshot: data after the %d tags it announced", h.Tags)
	}
	return st, h.Index, nil
}
