package gc_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/gc"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/seed"
)

// fakeIndex is an in-memory build-index: repositories with tags and manifest links.
type fakeIndex struct {
	mu    sync.Mutex
	tags  map[string]map[string]digest.Digest // repo -> tag -> manifest
	links map[string]map[string]digest.Digest // repo -> link name -> value
	fail  error                               // every call fails with it when set
}

func newFakeIndex() *fakeIndex {
	return &fakeIndex{tags: map[string]map[string]digest.Digest{}, links: map[string]map[string]digest.Digest{}}
}

func (f *fakeIndex) tag(repo, tag string, d digest.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tags[repo] == nil {
		f.tags[repo] = map[string]digest.Digest{}
	}
	f.tags[repo][tag] = d
}

func (f *fakeIndex) link(repo, name string, d digest.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.links[repo] == nil {
		f.links[repo] = map[string]digest.Digest{}
	}
	f.links[repo][name] = d
}

func page(all []string, last string, n int) ([]string, string) {
	sort.Strings(all)
	i := sort.SearchStrings(all, last)
	if last != "" && i < len(all) && all[i] == last {
		i++
	}
	all = all[i:]
	if n > 0 && len(all) > n {
		return all[:n], all[n-1]
	}
	return all, ""
}

func (f *fakeIndex) ListRepositories(_ context.Context, last string, n int) ([]string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, "", f.fail
	}
	set := map[string]bool{}
	for r := range f.tags {
		set[r] = true
	}
	for r := range f.links {
		set[r] = true
	}
	var all []string
	for r := range set {
		all = append(all, r)
	}
	p, next := page(all, last, n)
	return p, next, nil
}

func (f *fakeIndex) ListTags(_ context.Context, repo, last string, n int) ([]string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []string
	for t := range f.tags[repo] {
		all = append(all, t)
	}
	p, next := page(all, last, n)
	return p, next, nil
}

func (f *fakeIndex) GetTag(_ context.Context, repo, tag string, _ bool) (api.Tag, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.tags[repo][tag]
	if !ok {
		return api.Tag{}, fmt.Errorf("tag %s: %w", tag, client.ErrNotFound)
	}
	return api.Tag{Repo: repo, Tag: tag, Digest: d}, nil
}

func (f *fakeIndex) ListLinks(_ context.Context, repo, prefix string, _ bool) ([]api.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.Link
	for name, d := range f.links[repo] {
		if strings.HasPrefix(name, prefix) {
			out = append(out, api.Link{Repo: repo, Name: name, Digest: d})
		}
	}
	slices.SortFunc(out, func(a, b api.Link) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (f *fakeIndex) GetLink(_ context.Context, repo, name string, _ bool) (api.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.links[repo][name]
	if !ok {
		return api.Link{}, fmt.Errorf("link %s: %w", name, client.ErrNotFound)
	}
	return api.Link{Repo: repo, Name: name, Digest: d}, nil
}

// fakeWalker knows manifest graphs: a manifest and the blobs it references. An unknown
// manifest reads as stored nowhere (a 404), as seed reports it.
type fakeWalker struct {
	mu     sync.Mutex
	graphs map[digest.Digest][]digest.Digest
	walks  int
	fail   error // the error of every manifest read, when set
}

func (w *fakeWalker) Walk(_ context.Context, ts []seed.Target) (*seed.Report, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.walks++
	rep := &seed.Report{}
	for _, t := range ts {
		m := &seed.Blob{Repo: t.Repo, Digest: t.Digest, Kind: seed.KindManifest}
		rep.Blobs = append(rep.Blobs, m)
		children, ok := w.graphs[t.Digest]
		switch {
		case w.fail != nil:
			m.Err = w.fail
		case !ok:
			m.Err = fmt.Errorf("read manifest: %w", client.ErrNotFound)
		}
		if m.Err != nil {
			m.Error = m.Err.Error()
			rep.Failed++
			continue
		}
		for _, c := range children {
			rep.Blobs = append(rep.Blobs, &seed.Blob{Repo: t.Repo, Digest: c, Kind: seed.KindLayer})
		}
	}
	return rep, nil
}

// fakeBlob is one blob of a fake origin.
type fakeBlob struct {
	size     int64
	lastUsed time.Time
	inUse    bool
	ns       []string
}

// fakeOrigin decides deletes as an origin does: unreferenced is the caller's business, idle
// since the cutoff and not in use is the origin's.
type fakeOrigin struct {
	addr string
	now  func() time.Time

	mu      sync.Mutex
	blobs   map[digest.Digest]*fakeBlob
	backend *fakeBackend // shared by every origin, as a real storage backend is
	deletes int
	sorted  []string // every digest put, sorted; nil after a put (deleted ones are skipped)
	// onDelete, when set, runs before each delete decision (tests cancel a run there).
	onDelete func()
}

// fakeBackend is storage: namespace -> digest -> when it was modified.
type fakeBackend struct {
	mu   sync.Mutex
	objs map[string]map[digest.Digest]time.Time
}

func (b *fakeBackend) has(ns string, d digest.Digest) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.objs[ns][d]
	return ok
}

func newFakeOrigin(addr string, now func() time.Time, be *fakeBackend) *fakeOrigin {
	return &fakeOrigin{addr: addr, now: now, blobs: map[digest.Digest]*fakeBlob{}, backend: be}
}

func (o *fakeOrigin) put(d digest.Digest, size int64, used time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.blobs[d] = &fakeBlob{size: size, lastUsed: used}
	o.sorted = nil
}

func (b *fakeBackend) put(ns string, d digest.Digest, mod time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.objs[ns] == nil {
		b.objs[ns] = map[digest.Digest]time.Time{}
	}
	b.objs[ns][d] = mod
}

// touch is what the proxy's touch does: the blob counts as used now.
func (o *fakeOrigin) touch(d digest.Digest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if b, ok := o.blobs[d]; ok {
		b.lastUsed = o.now()
	}
}

func (o *fakeOrigin) has(d digest.Digest) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.blobs[d]
	return ok
}

func (o *fakeOrigin) Addr() string { return o.addr }

func (o *fakeOrigin) GCBlobs(_ context.Context, after string, n int) (api.GCBlobPage, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := api.GCBlobPage{Now: o.now()}
	if n == 0 {
		return p, nil
	}
	if o.sorted == nil {
		for d := range o.blobs {
			o.sorted = append(o.sorted, d.String())
		}
		sort.Strings(o.sorted)
	}
	next := ""
	for i := sort.SearchStrings(o.sorted, after); i < len(o.sorted); i++ {
		d := digest.Digest(o.sorted[i])
		b, ok := o.blobs[d]
		if !ok || o.sorted[i] == after {
			continue
		}
		p.Blobs = append(p.Blobs, api.GCBlob{Digest: d, Size: b.size, LastUsed: b.lastUsed, Namespaces: b.ns})
		if len(p.Blobs) == n {
			next = d.String()
			break
		}
	}
	p.Next = next
	return p, nil
}

func (o *fakeOrigin) GCDelete(ctx context.Context, d digest.Digest, cutoff time.Time, dryRun bool) (api.GCDeleteResult, error) {
	if o.onDelete != nil {
		o.onDelete()
	}
	if err := ctx.Err(); err != nil {
		return api.GCDeleteResult{}, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	b, ok := o.blobs[d]
	switch {
	case !ok:
		return api.GCDeleteResult{Kept: api.GCKeptAbsent}, nil
	case b.inUse:
		return api.GCDeleteResult{Kept: api.GCKeptInUse}, nil
	case !b.lastUsed.Before(cutoff):
		return api.GCDeleteResult{Kept: api.GCKeptRecent}, nil
	}
	if !dryRun {
		delete(o.blobs, d)
		o.deletes++
	}
	return api.GCDeleteResult{Deleted: true, Bytes: b.size}, nil
}

func (o *fakeOrigin) GCBackendList(_ context.Context, ns, prefix string) ([]string, error) {
	o.backend.mu.Lock()
	defer o.backend.mu.Unlock()
	var out []string
	for d := range o.backend.objs[ns] {
		if strings.HasPrefix(d.Encoded(), prefix) {
			out = append(out, d.Encoded())
		}
	}
	sort.Strings(out)
	return out, nil
}

func (o *fakeOrigin) GCBackendDelete(_ context.Context, ns string, d digest.Digest, cutoff time.Time, members map[string]time.Time, dryRun bool) (api.GCDeleteResult, error) {
	if _, ok := members[o.addr]; !ok {
		// A real origin asks every member with its cutoff from members, and keeps the copy
		// when one is missing: the run must pass every origin's.
		return api.GCDeleteResult{Kept: api.GCKeptUnasked}, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if b, ok := o.blobs[d]; ok && (!dryRun || b.inUse || !b.lastUsed.Before(cutoff)) {
		return api.GCDeleteResult{Kept: api.GCKeptLocal}, nil
	}
	o.backend.mu.Lock()
	defer o.backend.mu.Unlock()
	mod, ok := o.backend.objs[ns][d]
	switch {
	case !ok:
		return api.GCDeleteResult{Kept: api.GCKeptAbsent}, nil
	case !mod.Before(cutoff):
		return api.GCDeleteResult{Kept: api.GCKeptRecent}, nil
	}
	if !dryRun {
		delete(o.backend.objs[ns], d)
	}
	return api.GCDeleteResult{Deleted: true, Bytes: 1}, nil
}

// blobDigest is a distinct digest per i.
func blobDigest(i int) digest.Digest { return digest.FromString(fmt.Sprintf("blob %d", i)) }

// world is a build-index, a walker and origins, with images of referenced blobs and
// unreferenced ones, all old.
type world struct {
	ix      *fakeIndex
	w       *fakeWalker
	be      *fakeBackend
	origins []*fakeOrigin
	now     time.Time
	// referenced and garbage are the digests of blobs stored on every origin.
	referenced, garbage []digest.Digest
}

// newWorld stores images images of layers layers each (plus the manifest) and garbage
// unreferenced blobs on every one of n origins, all last used two days ago.
func newWorld(n, images, layers, garbage int) *world {
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	wd := &world{ix: newFakeIndex(), w: &fakeWalker{graphs: map[digest.Digest][]digest.Digest{}}, now: now,
		be: &fakeBackend{objs: map[string]map[digest.Digest]time.Time{}}}
	clock := func() time.Time { return now }
	for i := range n {
		wd.origins = append(wd.origins, newFakeOrigin(fmt.Sprintf("origin-%d", i), clock, wd.be))
	}
	old := now.Add(-48 * time.Hour)
	k := 0
	for i := range images {
		repo := fmt.Sprintf("team/app%d", i%7)
		var children []digest.Digest
		for range layers {
			d := blobDigest(k)
			k++
			children = append(children, d)
			wd.referenced = append(wd.referenced, d)
		}
		m := digest.FromString(fmt.Sprintf("manifest %d", i))
		wd.w.graphs[m] = children
		wd.referenced = append(wd.referenced, m)
		wd.ix.link(repo, registry.ManifestLink(m), m)
		if i%2 == 0 {
			wd.ix.tag(repo, fmt.Sprintf("v%d", i), m)
		}
	}
	for range garbage {
		wd.garbage = append(wd.garbage, blobDigest(k))
		k++
	}
	for _, o := range wd.origins {
		for _, d := range append(slices.Clone(wd.referenced), wd.garbage...) {
			o.put(d, 10, old)
		}
	}
	return wd
}

func (wd *world) deps() gc.Deps {
	var os []gc.Origin
	for _, o := range wd.origins {
		os = append(os, o)
	}
	return gc.Deps{
		Index: wd.ix, Walker: wd.w, Origins: os,
		Owner: func(_ context.Context, d digest.Digest) (gc.Origin, error) {
			if len(wd.origins) == 0 {
				return nil, errors.New("no origins")
			}
			return wd.origins[int(d.Encoded()[0])%len(wd.origins)], nil
		},
	}
}
