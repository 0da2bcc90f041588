// Package gc is garbage collection of blobs: `krakenctl gc` marks every blob reachable from
// the build-index (every repository's tags and manifest links, each manifest's graph walked by
// server/seed: index, platform manifests, configs, layers and referrers), then sweeps the
// origins' stores and the storage backends behind them of the blobs nothing marked that were
// last used before the run's cutoff (the run's start, on each origin's own clock, minus a grace
// period).
//
// Safety against a concurrent push rests on the origins (docs/gc.md): every delete is
// conditional, decided by the origin under its own lock (a local copy goes only if nothing
// committed, read or touched it at or after the cutoff; a backend copy only while no ring
// member holds a copy or touched the blob since its own cutoff, every member answered, and the
// object is older than the cutoff), and the proxy touches
// every blob a manifest references before it links the manifest. So a blob pushed, mounted or
// newly referenced during the run is kept, or the push that references it fails before it links
// anything; nothing acknowledged is lost. A run can stop at any point (each delete is atomic on
// its own) and the next run finishes the job.
//
// Memory is bounded by the referenced set (32 bytes a digest) plus one page of listings and one
// manifest graph at a time: nothing is held per unreferenced blob, and manifests are not kept.
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/seed"
)

// Defaults of Config.
const (
	DefaultGrace    = 24 * time.Hour
	DefaultPageSize = 1000
	DefaultParallel = 4
	// listPage is how many repositories or tags one build-index page asks for.
	listPage = 1000
)

// ErrIncompleteMark means the mark could not read part of the build-index or a manifest graph
// (other than a manifest that no origin or backend has at all): sweeping then could collect a
// blob that is referenced, so the run stops before deleting anything.
var ErrIncompleteMark = errors.New("mark incomplete; nothing was deleted")

// Index is what the mark reads of the build-index (client.BuildIndexes implements it).
type Index interface {
	ListRepositories(ctx context.Context, last string, n int) ([]string, string, error)
	ListTags(ctx context.Context, repo, last string, n int) ([]string, string, error)
	GetTag(ctx context.Context, repo, tag string, stale bool) (api.Tag, error)
	ListLinks(ctx context.Context, repo, prefix string, stale bool) ([]api.Link, error)
	GetLink(ctx context.Context, repo, name string, stale bool) (api.Link, error)
}

// Walker walks manifest graphs without warming anything (*seed.Seeder implements it; build one
// with NewWalker).
type Walker interface {
	Walk(ctx context.Context, targets []seed.Target) (*seed.Report, error)
}

// Origin is one origin's GC API (*client.Origin implements it). Every delete is conditional
// and decided by the origin: see the package documentation.
type Origin interface {
	Addr() string
	GCBlobs(ctx context.Context, after string, n int) (api.GCBlobPage, error)
	GCDelete(ctx context.Context, d digest.Digest, cutoff time.Time, dryRun bool) (api.GCDeleteResult, error)
	GCBackendList(ctx context.Context, ns, prefix string) ([]string, error)
	// GCBackendDelete has the origin decide about d's backend copy with its own cutoff,
	// asking every other ring member with the member's cutoff from members.
	GCBackendDelete(ctx context.Context, ns string, d digest.Digest, cutoff time.Time, members map[string]time.Time, dryRun bool) (api.GCDeleteResult, error)
}

// Config tunes a run.
type Config struct {
	// Grace keeps blobs used less than this long before the run started (and so pushes under
	// way when it starts). Zero is allowed (tests); operators want hours.
	Grace time.Duration
	// DryRun asks every origin whether it would delete, and deletes nothing.
	DryRun bool
	// Backends sweeps the storage backends too (through the origins).
	Backends bool
	// PageSize is how many blobs one origin listing page holds; DefaultPageSize when zero.
	PageSize int
	// Parallel bounds the deletes in flight per origin; DefaultParallel when zero.
	Parallel int
}

// Deps are a run's collaborators.
type Deps struct {
	Index   Index
	Walker  Walker
	Origins []Origin
	// Owner returns the origin that decides about the backend copies of d: its first healthy
	// owner on the ring, the one a proxy's touch reaches first (it asks every other member, so
	// a touch that failed over to another origin counts too). Required with Config.Backends.
	Owner func(ctx context.Context, d digest.Digest) (Origin, error)
	// Progress, when set, is told about each phase and blob; called from several goroutines.
	Progress func(Progress)
	// AfterMark, when set, runs between the mark and the sweep (tests pause a run there).
	AfterMark func(ctx context.Context) error
	Log       *slog.Logger
}

// Phase names a step of a run.
type Phase string

// Phases, in order.
const (
	PhaseMark    Phase = "mark"
	PhaseSweep   Phase = "sweep"
	PhaseBackend Phase = "backend"
)

// Progress is one step: a manifest walked (mark), a blob decided (sweeps).
type Progress struct {
	Phase Phase
	// Where is the repository (mark), origin address (sweep) or namespace (backend).
	Where string
	// Marked is how many distinct blobs are marked so far; Scanned how many this phase looked at.
	Marked, Scanned int
}

// Row is what one origin's store (or the backends) held and what the run did to it.
type Row struct {
	// Name is the origin address, or "backend" for the storage backends.
	Name       string `json:"name"`
	Scanned    int    `json:"scanned"`
	Referenced int    `json:"referenced"`
	// Collected are the unreferenced blobs deleted (with DryRun: that would be).
	Collected int   `json:"collected"`
	Bytes     int64 `json:"bytes_freed"`
	// Kept counts unreferenced blobs kept, by reason (api.GCKept*).
	Kept   map[string]int `json:"kept,omitempty"`
	Errors int            `json:"errors"`
	// Error is the first error, when any.
	Error string `json:"error,omitempty"`
}

func (r *Row) keep(why string) {
	if r.Kept == nil {
		r.Kept = map[string]int{}
	}
	r.Kept[why]++
}

// record counts the outcome of one delete of what: collected, kept (and why) or failed.
func (r *Row) record(what string, res api.GCDeleteResult, err error) {
	switch {
	case err != nil:
		r.fail(fmt.Errorf("delete %s: %w", what, err))
	case res.Deleted:
		r.Collected++
		r.Bytes += res.Bytes
	default:
		r.keep(res.Kept)
	}
}

func (r *Row) fail(err error) {
	r.Errors++
	if r.Error == "" {
		r.Error = err.Error()
	}
}

// Report is the outcome of a run.
type Report struct {
	DryRun bool          `json:"dry_run"`
	Grace  time.Duration `json:"grace_ns"`
	// Started is the run's start on the local clock; each origin's cutoff is its own clock then
	// minus Grace.
	Started time.Time `json:"started"`
	// Repositories and Manifests the mark walked; Marked distinct blobs it reached; Dangling
	// manifests linked or tagged whose bytes no origin or backend has.
	Repositories int   `json:"repositories"`
	Manifests    int   `json:"manifests"`
	Marked       int   `json:"marked"`
	Dangling     int   `json:"dangling"`
	Rows         []Row `json:"rows"`
	// Duration is how long the run took; MarkDuration the mark's part.
	Duration     time.Duration `json:"duration_ns"`
	MarkDuration time.Duration `json:"mark_duration_ns"`
}

// Totals sums the rows.
func (r *Report) Totals() Row {
	t := Row{Name: "total"}
	for _, row := range r.Rows {
		t.Scanned += row.Scanned
		t.Referenced += row.Referenced
		t.Collected += row.Collected
		t.Bytes += row.Bytes
		t.Errors += row.Errors
		for k, v := range row.Kept {
			if t.Kept == nil {
				t.Kept = map[string]int{}
			}
			t.Kept[k] += v
		}
	}
	return t
}

// Collector runs garbage collection.
type Collector struct {
	cfg  Config
	deps Deps
}

// New checks deps and returns a Collector.
func New(cfg Config, deps Deps) (*Collector, error) {
	switch {
	case deps.Index == nil || deps.Walker == nil:
		return nil, errors.New("new gc: a build-index and a manifest walker are required")
	case len(deps.Origins) == 0:
		return nil, errors.New("new gc: no origins")
	case cfg.Backends && deps.Owner == nil:
		return nil, errors.New("new gc: sweeping backends needs the ring's owners")
	case cfg.Grace < 0 || cfg.PageSize < 0 || cfg.Parallel < 0:
		return nil, errors.New("new gc: grace, page size and parallel must not be negative")
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = DefaultParallel
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	return &Collector{cfg: cfg, deps: deps}, nil
}

// NewWalker returns the manifest walker the mark uses: server/seed's, with referrers, reading
// manifests from the origins and links from the build-index.
func NewWalker(origins *client.Cluster, index *client.BuildIndexes, log *slog.Logger) (*seed.Seeder, error) {
	return seed.New(seed.Config{Referrers: true}, seed.Deps{Origins: origins, BuildIndex: index, Log: log})
}

// ClusterDeps builds a run's collaborators from the clients of a cluster: every origin of the
// cluster's list, and as the owner of a digest the first healthy owner the ring names (the
// origin a proxy's touch reaches first).
func ClusterDeps(cluster *client.Cluster, index *client.BuildIndexes, walker Walker) Deps {
	byAddr := map[string]Origin{}
	var list []Origin
	for _, a := range cluster.Addrs() {
		o := cluster.Origin(a)
		byAddr[a] = o
		list = append(list, o)
	}
	return Deps{
		Index: index, Walker: walker, Origins: list,
		Owner: func(ctx context.Context, d digest.Digest) (Origin, error) {
			st, err := cluster.Ring(ctx, d)
			if err != nil {
				return nil, err
			}
			if len(st.Owners) == 0 {
				return nil, fmt.Errorf("no healthy origin owns %s", d)
			}
			o, ok := byAddr[st.Owners[0]]
			if !ok {
				return nil, fmt.Errorf("the ring names %s, which is not among the origins given (%s)", st.Owners[0], strings.Join(cluster.Addrs(), ","))
			}
			return o, nil
		},
	}
}

// Run collects garbage (or, with DryRun, says what it would collect). The report is returned
// even when the run fails part-way, with what was done until then. A cancelled ctx stops the
// run between deletes; everything deleted stays deleted, nothing else is touched, and the
// next run finishes the job.
func (c *Collector) Run(ctx context.Context) (*Report, error) {
	start := time.Now()
	rep := &Report{DryRun: c.cfg.DryRun, Grace: c.cfg.Grace, Started: start}
	defer func() { rep.Duration = time.Since(start) }()

	// The cutoffs come first, before the mark reads anything: whatever is linked after the
	// mark's read was touched after this moment, so it is newer than the cutoff.
	cutoffs := make([]time.Time, len(c.deps.Origins))
	for i, o := range c.deps.Origins {
		p, err := o.GCBlobs(ctx, "", 0)
		if err != nil {
			return rep, fmt.Errorf("gc: read the clock of origin %s: %w", o.Addr(), err)
		}
		cutoffs[i] = p.Now.Add(-c.cfg.Grace)
	}

	m := &marker{c: c, set: newDigestSet(), rep: rep}
	if err := m.run(ctx); err != nil {
		return rep, err
	}
	rep.Marked = m.set.len()
	rep.MarkDuration = time.Since(start)
	if c.deps.AfterMark != nil {
		if err := c.deps.AfterMark(ctx); err != nil {
			return rep, fmt.Errorf("gc: %w", err)
		}
	}

	rep.Rows = make([]Row, len(c.deps.Origins))
	seen := &namespaces{set: map[string]struct{}{}}
	g, gctx := errgroup.WithContext(ctx)
	for i, o := range c.deps.Origins {
		rep.Rows[i].Name = o.Addr()
		g.Go(func() error { return c.sweepOrigin(gctx, o, cutoffs[i], m.set, seen, &rep.Rows[i]) })
	}
	err := g.Wait()
	if err == nil && c.cfg.Backends {
		cutoffOf := map[string]time.Time{}
		for i, o := range c.deps.Origins {
			cutoffOf[o.Addr()] = cutoffs[i]
		}
		row := Row{Name: "backend"}
		err = c.sweepBackends(ctx, m.set, seen, cutoffOf, &row)
		rep.Rows = append(rep.Rows, row)
	}
	if err != nil {
		if ctx.Err() != nil {
			return rep, fmt.Errorf("gc: interrupted: %w", ctx.Err())
		}
		return rep, fmt.Errorf("gc: %w", err)
	}
	return rep, nil
}

func (c *Collector) progress(p Progress) {
	if c.deps.Progress != nil {
		c.deps.Progress(p)
	}
}

// marker is the state of one mark.
type marker struct {
	c   *Collector
	set *digestSet
	rep *Report
}

func (m *marker) run(ctx context.Context) error {
	last := ""
	for {
		repos, next, err := m.c.deps.Index.ListRepositories(ctx, last, listPage)
		if err != nil {
			return fmt.Errorf("gc: list repositories: %w: %w", ErrIncompleteMark, err)
		}
		for _, repo := range repos {
			if err := m.repo(ctx, repo); err != nil {
				return fmt.Errorf("gc: mark %s: %w", repo, err)
			}
			m.rep.Repositories++
		}
		if next == "" || len(repos) == 0 {
			return nil
		}
		last = next
	}
}

// repo marks every manifest linked or tagged in repo, and its graph.
func (m *marker) repo(ctx context.Context, repo string) error {
	walked := map[digest.Digest]bool{} // roots of this repository walked already
	links, err := m.c.deps.Index.ListLinks(ctx, repo, registry.LinkManifest+"/", false)
	if err != nil && !client.IsNotFound(err) {
		return fmt.Errorf("list manifest links: %w: %w", ErrIncompleteMark, err)
	}
	for _, l := range links {
		d, err := digest.Parse(strings.TrimPrefix(l.Name, registry.LinkManifest+"/"))
		if err != nil {
			return fmt.Errorf("manifest link %q: %w: %w", l.Name, ErrIncompleteMark, err)
		}
		m.mark(l.Digest)
		if err := m.walk(ctx, repo, d, walked); err != nil {
			return err
		}
	}
	last := ""
	for {
		tags, next, err := m.c.deps.Index.ListTags(ctx, repo, last, listPage)
		if client.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list tags: %w: %w", ErrIncompleteMark, err)
		}
		for _, tag := range tags {
			t, err := m.c.deps.Index.GetTag(ctx, repo, tag, false)
			if client.IsNotFound(err) {
				continue // deleted since the listing
			}
			if err != nil {
				return fmt.Errorf("read tag %s: %w: %w", tag, ErrIncompleteMark, err)
			}
			if err := m.walk(ctx, repo, t.Digest, walked); err != nil {
				return err
			}
		}
		if next == "" || len(tags) == 0 {
			return nil
		}
		last = next
	}
}

// walk marks the graph of manifest d of repo once per repository.
func (m *marker) walk(ctx context.Context, repo string, d digest.Digest, walked map[digest.Digest]bool) error {
	if walked[d] {
		return nil
	}
	walked[d] = true
	r, err := m.c.deps.Walker.Walk(ctx, []seed.Target{{Repo: repo, Digest: d}})
	if err != nil {
		return fmt.Errorf("walk %s: %w: %w", d, ErrIncompleteMark, err)
	}
	for _, b := range r.Blobs {
		if b.Kind == seed.KindIndex || b.Kind == seed.KindManifest {
			walked[b.Digest] = true
			m.rep.Manifests++
		}
		if b.Error != "" {
			if client.IsNotFound(b.Err) {
				// Linked but stored nowhere: nothing can pull it, so nothing is reachable
				// through it. Its own digest is still marked below.
				m.rep.Dangling++
				m.c.deps.Log.Warn("gc: manifest stored nowhere; its graph is not marked", "repo", repo, "digest", b.Digest)
			} else {
				return fmt.Errorf("read %s %s: %w: %s", b.Kind, b.Digest, ErrIncompleteMark, b.Error)
			}
		}
		stored, err := m.stored(ctx, b)
		if err != nil {
			return err
		}
		m.mark(stored)
	}
	m.c.progress(Progress{Phase: PhaseMark, Where: repo, Marked: m.set.len()})
	return nil
}

// stored is the sha256 digest b is stored under on the origins.
func (m *marker) stored(ctx context.Context, b *seed.Blob) (digest.Digest, error) {
	switch {
	case b.Digest.Algorithm() == digest.SHA256:
		return b.Digest, nil
	case b.Stored != "":
		return b.Stored, nil
	}
	name := registry.BlobLink(b.Digest)
	if b.Kind == seed.KindIndex || b.Kind == seed.KindManifest {
		name = registry.ManifestLink(b.Digest)
	}
	l, err := m.c.deps.Index.GetLink(ctx, b.Repo, name, false)
	if client.IsNotFound(err) {
		return "", nil // not in the repository: nothing stored to keep
	}
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w: %w", b.Digest, ErrIncompleteMark, err)
	}
	return l.Digest, nil
}

func (m *marker) mark(d digest.Digest) {
	if d != "" {
		m.set.add(d)
	}
}

// sweepOrigin lists one origin's store page by page and asks it to delete every unreferenced
// blob last used before its cutoff.
func (c *Collector) sweepOrigin(ctx context.Context, o Origin, cutoff time.Time, marked *digestSet, seen *namespaces, row *Row) error {
	var mu sync.Mutex // row, from the delete goroutines
	after := ""
	for {
		p, err := o.GCBlobs(ctx, after, c.cfg.PageSize)
		if err != nil {
			mu.Lock()
			row.fail(err)
			mu.Unlock()
			return fmt.Errorf("list blobs of origin %s: %w", o.Addr(), err)
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(c.cfg.Parallel)
		for _, b := range p.Blobs {
			seen.add(b.Namespaces)
			mu.Lock()
			row.Scanned++
			switch {
			case marked.has(b.Digest):
				row.Referenced++
				mu.Unlock()
				continue
			case !b.LastUsed.Before(cutoff):
				// A later use only makes it newer, so the origin would refuse too.
				row.keep(api.GCKeptRecent)
				mu.Unlock()
				continue
			}
			mu.Unlock()
			g.Go(func() error {
				res, err := o.GCDelete(gctx, b.Digest, cutoff, c.cfg.DryRun)
				mu.Lock()
				defer mu.Unlock()
				row.record(b.Digest.String(), res, err)
				return gctx.Err()
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		mu.Lock()
		c.progress(Progress{Phase: PhaseSweep, Where: o.Addr(), Marked: marked.len(), Scanned: row.Scanned})
		mu.Unlock()
		if p.Next == "" || len(p.Blobs) == 0 {
			return nil
		}
		after = p.Next
	}
}

// hexPrefixes shard a namespace's backend listing, so one answer holds a sixteenth of it.
var hexPrefixes = strings.Split("0123456789abcdef", "")

// namespaces collects the namespaces the origins' listings name (safe for concurrent use).
type namespaces struct {
	mu  sync.Mutex
	set map[string]struct{}
}

func (n *namespaces) add(nss []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ns := range nss {
		n.set[ns] = struct{}{}
	}
}

// sweepBackends lists the backend objects of every namespace it knows of (through the first
// origin that answers) and has each unreferenced blob's owner delete it, conditionally. A
// backend cannot list its namespaces, so those are the build-index's repositories and the
// namespaces the origins recorded for the blobs they listed (blobs pushed outside any
// repository, `krakenctl push`).
func (c *Collector) sweepBackends(ctx context.Context, marked *digestSet, seen *namespaces, cutoffOf map[string]time.Time, row *Row) error {
	last := ""
	for {
		repos, next, err := c.deps.Index.ListRepositories(ctx, last, listPage)
		if err != nil {
			row.fail(err)
			return fmt.Errorf("list repositories: %w", err)
		}
		for _, ns := range repos {
			seen.mu.Lock()
			delete(seen.set, ns) // swept here, not again below
			seen.mu.Unlock()
			if err := c.sweepNamespace(ctx, ns, marked, cutoffOf, row); err != nil {
				return err
			}
		}
		if next == "" || len(repos) == 0 {
			break
		}
		last = next
	}
	rest := make([]string, 0, len(seen.set))
	for ns := range seen.set {
		rest = append(rest, ns)
	}
	slices.Sort(rest)
	for _, ns := range rest {
		if err := c.sweepNamespace(ctx, ns, marked, cutoffOf, row); err != nil {
			return err
		}
	}
	return nil
}

func (c *Collector) sweepNamespace(ctx context.Context, ns string, marked *digestSet, cutoffOf map[string]time.Time, row *Row) error {
	var mu sync.Mutex
	for _, prefix := range hexPrefixes {
		names, err := c.backendList(ctx, ns, prefix)
		if err != nil {
			row.fail(err)
			return err
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(c.cfg.Parallel)
		for _, name := range names {
			d := digest.NewDigestFromEncoded(digest.SHA256, name)
			if d.Validate() != nil {
				continue // not a blob (the build-index's tag copies live elsewhere)
			}
			mu.Lock()
			row.Scanned++
			if marked.has(d) {
				row.Referenced++
				mu.Unlock()
				continue
			}
			mu.Unlock()
			g.Go(func() error {
				res, err := c.backendDelete(gctx, ns, d, cutoffOf)
				mu.Lock()
				defer mu.Unlock()
				row.record(ns+"/"+d.String(), res, err)
				return gctx.Err()
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		mu.Lock()
		c.progress(Progress{Phase: PhaseBackend, Where: ns, Marked: marked.len(), Scanned: row.Scanned})
		mu.Unlock()
	}
	return nil
}

// backendList asks the origins in turn for a namespace's backend listing.
func (c *Collector) backendList(ctx context.Context, ns, prefix string) ([]string, error) {
	var errs []error
	for _, o := range c.deps.Origins {
		names, err := o.GCBackendList(ctx, ns, prefix)
		if err == nil {
			return names, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s: %w", o.Addr(), err))
	}
	return nil, fmt.Errorf("list backend objects of %s: %w", ns, errors.Join(errs...))
}

// backendDelete has d's deciding owner delete its backend object in ns, with that owner's
// cutoff; the owner asks every other ring member about d with theirs.
func (c *Collector) backendDelete(ctx context.Context, ns string, d digest.Digest, cutoffOf map[string]time.Time) (api.GCDeleteResult, error) {
	o, err := c.deps.Owner(ctx, d)
	if err != nil {
		return api.GCDeleteResult{}, fmt.Errorf("find the owner: %w", err)
	}
	cutoff, ok := cutoffOf[o.Addr()]
	if !ok {
		// An owner the run did not start on has no cutoff taken before the mark.
		return api.GCDeleteResult{}, fmt.Errorf("owner %s is not among the origins of this run", o.Addr())
	}
	res, err := o.GCBackendDelete(ctx, ns, d, cutoff, cutoffOf, c.cfg.DryRun)
	if err == nil && res.Error != "" {
		// Deleted, but a member that fetched the blob meanwhile may hold the only copy.
		return res, fmt.Errorf("deleted, then: %s", res.Error)
	}
	return res, err
}
