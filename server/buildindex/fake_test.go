package buildindex

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/tagstore"
)

// fakeStore is an in-memory Store: one node that is the leader, or a follower that names
// another node as the leader. It keeps every change for its feed.
type fakeStore struct {
	mu       sync.Mutex
	id       string
	leader   bool
	other    tagstore.Member // the leader when this node is not; ID "" means none known
	index    uint64
	tags     map[[2]string]tagstore.Tag
	changes  []tagstore.Change
	floor    uint64 // subscribing from below it resyncs
	members  []tagstore.Member
	wake     chan struct{}
	closed   bool
	writes   int   // calls that changed state
	putErr   error // returned by Put when set
	subs     sync.WaitGroup
	imported int
	// quorumAtRisk makes Remove refuse (tagstore.ErrQuorum) unless forced.
	quorumAtRisk bool
}

func newFakeStore(id string) *fakeStore {
	return &fakeStore{id: id, leader: true, tags: map[[2]string]tagstore.Tag{}, wake: make(chan struct{}),
		members: []tagstore.Member{{ID: id, RaftAddr: "127.0.0.1:1", Suffrage: "voter"}}}
}

// followerOf makes the store a follower of the node with the given API address.
func (f *fakeStore) followerOf(id, apiAddr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leader = false
	f.other = tagstore.Member{ID: id, APIAddr: apiAddr, RaftAddr: "127.0.0.1:2", Leader: true}
}

func (f *fakeStore) notLeader() error {
	return &tagstore.NotLeaderError{LeaderID: f.other.ID, LeaderAPIAddr: f.other.APIAddr, LeaderRaftAddr: f.other.RaftAddr}
}

// publish records changes and wakes the feeds; f.mu is held.
func (f *fakeStore) publish(cs ...tagstore.Change) {
	f.changes = append(f.changes, cs...)
	close(f.wake)
	f.wake = make(chan struct{})
}

func (f *fakeStore) Put(ctx context.Context, repo, tag string, d digest.Digest) (tagstore.Tag, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.leader {
		return tagstore.Tag{}, f.notLeader()
	}
	if f.putErr != nil {
		return tagstore.Tag{}, f.putErr
	}
	f.index++
	f.writes++
	t := tagstore.Tag{Repo: repo, Name: tag, Digest: d, Index: f.index, Updated: time.Now().UTC()}
	f.tags[[2]string{repo, tag}] = t
	f.publish(tagstore.Change{Index: f.index, Op: tagstore.OpPut, Tag: t})
	return t, nil
}

func (f *fakeStore) Delete(ctx context.Context, repo, tag string) (tagstore.Tag, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.leader {
		return tagstore.Tag{}, f.notLeader()
	}
	f.index++
	old, ok := f.tags[[2]string{repo, tag}]
	if !ok {
		return tagstore.Tag{}, fmt.Errorf("delete tag %s:%s: %w", repo, tag, tagstore.ErrNotFound)
	}
	f.writes++
	delete(f.tags, [2]string{repo, tag})
	d := old
	d.Index, d.Updated = f.index, time.Now().UTC()
	f.publish(tagstore.Change{Index: f.index, Op: tagstore.OpDelete, Tag: d})
	return old, nil
}

func (f *fakeStore) ReadIndex(ctx context.Context) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.leader {
		return 0, f.notLeader()
	}
	return f.index, nil
}

// WaitApplied: a fake follower never replicates, so it reports that it lags unless it already
// has the index; the server then forwards the read.
func (f *fakeStore) WaitApplied(ctx context.Context, index uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.index >= index {
		return nil
	}
	return fmt.Errorf("fake follower at %d, asked for %d: %w", f.index, index, context.DeadlineExceeded)
}

func (f *fakeStore) read(c tagstore.Consistency) error {
	if c == tagstore.Linearizable && !f.leader {
		return f.notLeader()
	}
	return nil
}

func (f *fakeStore) Get(ctx context.Context, repo, tag string, c tagstore.Consistency) (tagstore.Tag, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read(c); err != nil {
		return tagstore.Tag{}, err
	}
	t, ok := f.tags[[2]string{repo, tag}]
	if !ok {
		return tagstore.Tag{}, fmt.Errorf("get tag %s:%s: %w", repo, tag, tagstore.ErrNotFound)
	}
	return t, nil
}

func (f *fakeStore) sorted() []tagstore.Tag {
	out := make([]tagstore.Tag, 0, len(f.tags))
	for _, t := range f.tags {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b tagstore.Tag) int { return cmp.Or(cmp.Compare(a.Repo, b.Repo), cmp.Compare(a.Name, b.Name)) })
	return out
}

func (f *fakeStore) Tags(ctx context.Context, repo, last string, n int, c tagstore.Consistency) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read(c); err != nil {
		return nil, err
	}
	var out []string
	found := false
	for _, t := range f.sorted() {
		if t.Repo != repo {
			continue
		}
		if t.IsLink() {
			continue
		}
		found = true
		if t.Name > last && (n <= 0 || len(out) < n) {
			out = append(out, t.Name)
		}
	}
	if !found {
		return nil, fmt.Errorf("list tags of %s: repository %w", repo, tagstore.ErrNotFound)
	}
	return out, nil
}

func (f *fakeStore) TagsOf(ctx context.Context, repo string, d digest.Digest, last string, n int, c tagstore.Consistency) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read(c); err != nil {
		return nil, err
	}
	out := []string{}
	for _, t := range f.sorted() {
		if t.Repo == repo && !t.IsLink() && t.Digest == d && t.Name > last && (n <= 0 || len(out) < n) {
			out = append(out, t.Name)
		}
	}
	return out, nil
}

func (f *fakeStore) Repositories(ctx context.Context, last string, n int, c tagstore.Consistency) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read(c); err != nil {
		return nil, err
	}
	var out []string
	for _, t := range f.sorted() {
		if t.Repo > last && (len(out) == 0 || out[len(out)-1] != t.Repo) && (n <= 0 || len(out) < n) {
			out = append(out, t.Repo)
		}
	}
	return out, nil
}

func (f *fakeStore) Export(ctx context.Context, c tagstore.Consistency) ([]tagstore.Tag, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read(c); err != nil {
		return nil, 0, err
	}
	return f.sorted(), f.index, nil
}

func (f *fakeStore) Import(ctx context.Context, tags []tagstore.Tag) (int, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.leader {
		return 0, 0, f.notLeader()
	}
	f.index++
	var imported, skipped int
	var cs []tagstore.Change
	for _, t := range tags {
		if cur, ok := f.tags[[2]string{t.Repo, t.Name}]; ok && !t.Updated.After(cur.Updated) {
			skipped++
			continue
		}
		t.Index = f.index
		f.tags[[2]string{t.Repo, t.Name}] = t
		cs = append(cs, tagstore.Change{Index: f.index, Op: tagstore.OpPut, Tag: t})
		imported++
	}
	f.imported += imported
	f.writes += imported
	f.publish(cs...)
	return imported, skipped, nil
}

func (f *fakeStore) Join(ctx context.Context, m tagstore.Member) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.leader {
		return f.notLeader()
	}
	for _, o := range f.members {
		if o.ID == m.ID || o.RaftAddr == m.RaftAddr {
			return fmt.Errorf("join %s: %w", m.ID, tagstore.ErrExists)
		}
	}
	f.members = append(f.members, m)
	return nil
}

func (f *fakeStore) Remove(ctx context.Context, id string, opts tagstore.RemoveOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.leader {
		return f.notLeader()
	}
	if f.quorumAtRisk && !opts.Force {
		return fmt.Errorf("remove %s: %w: the 2 voters left (a, b) need 2 live for a quorum, but only 1 answer (b do not)", id, tagstore.ErrQuorum)
	}
	i := slices.IndexFunc(f.members, func(m tagstore.Member) bool { return m.ID == id })
	if i < 0 {
		return fmt.Errorf("remove %s: member %w", id, tagstore.ErrNotFound)
	}
	f.members = slices.Delete(f.members, i, i+1)
	return nil
}

func (f *fakeStore) Status() tagstore.ClusterStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := tagstore.ClusterStatus{ID: f.id, State: "follower", AppliedIndex: f.index, CommitIndex: f.index, LastLogIndex: f.index,
		Members: slices.Clone(f.members)}
	if f.leader {
		st.State, st.LeaderID = "leader", f.id
	} else {
		st.LeaderID, st.LeaderAPIAddr = f.other.ID, f.other.APIAddr
	}
	return st
}

func (f *fakeStore) IsLeader() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader
}

func (f *fakeStore) Leader() (tagstore.Member, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.leader {
		return tagstore.Member{ID: f.id, Leader: true}, true
	}
	return f.other, f.other.ID != ""
}

func (f *fakeStore) AppliedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.index
}

func (f *fakeStore) WaitForLeader(ctx context.Context) error {
	if _, ok := f.Leader(); ok {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

// Changes serves the recorded changes after from, then new ones as they come.
func (f *fakeStore) Changes(from uint64) (<-chan tagstore.Change, func()) {
	ch := make(chan tagstore.Change, 4)
	done := make(chan struct{})
	var once sync.Once
	f.subs.Add(1)
	go func() {
		defer f.subs.Done()
		defer close(ch)
		f.mu.Lock()
		if from < f.floor {
			f.mu.Unlock()
			select {
			case ch <- tagstore.Change{Op: tagstore.OpResync}:
			case <-done:
			}
			return
		}
		next := 0
		for {
			for next < len(f.changes) && f.changes[next].Index <= from {
				next++
			}
			if f.closed {
				f.mu.Unlock()
				return
			}
			if next < len(f.changes) {
				c := f.changes[next]
				next++
				f.mu.Unlock()
				select {
				case ch <- c:
				case <-done:
					return
				}
				f.mu.Lock()
				continue
			}
			wake := f.wake
			f.mu.Unlock()
			select {
			case <-wake:
			case <-done:
				return
			}
			f.mu.Lock()
		}
	}()
	return ch, func() { once.Do(func() { close(done) }) }
}

// forget drops the retained changes: later subscribers from before now resync.
func (f *fakeStore) forget() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.floor = f.index
	f.changes = nil
}

// close ends every feed and waits for their goroutines.
func (f *fakeStore) close() {
	f.mu.Lock()
	f.closed = true
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
	f.subs.Wait()
}

func (f *fakeStore) writeCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

func (f *fakeStore) PutLink(ctx context.Context, repo, name string, d digest.Digest) (tagstore.Link, error) {
	t, err := f.Put(ctx, repo, tagstore.LinkKey(name), d)
	return t.AsLink(), err
}

func (f *fakeStore) DeleteLink(ctx context.Context, repo, name string) (tagstore.Link, error) {
	t, err := f.Delete(ctx, repo, tagstore.LinkKey(name))
	return t.AsLink(), err
}

func (f *fakeStore) GetLink(ctx context.Context, repo, name string, c tagstore.Consistency) (tagstore.Link, error) {
	t, err := f.Get(ctx, repo, tagstore.LinkKey(name), c)
	return t.AsLink(), err
}

func (f *fakeStore) Links(ctx context.Context, repo, prefix string, c tagstore.Consistency) ([]tagstore.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read(c); err != nil {
		return nil, err
	}
	out := []tagstore.Link{}
	for _, t := range f.sorted() {
		if t.Repo == repo && strings.HasPrefix(t.Name, tagstore.LinkKey(prefix)) {
			out = append(out, t.AsLink())
		}
	}
	return out, nil
}

// Interface guards
var _ Store = (*fakeStore)(nil)
