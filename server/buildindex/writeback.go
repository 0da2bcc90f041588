package buildindex

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/queue"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

const (
	// kindTags is the queue task kind: write the current value of some tags to the backend.
	kindTags = "tags"
	// kindResync writes every tag, and tombstones for tags that are gone, after the change
	// feed lost changes.
	kindResync = "resync"
	// objectPrefix starts the backend name of every tag object.
	objectPrefix = "t-"
	// maxBatch bounds the tags of one write-back task.
	maxBatch = 256
	// syncParallelism bounds the concurrent backend round trips of one task.
	syncParallelism = 8
	// restoreParallelism bounds the concurrent downloads of a restore.
	restoreParallelism = 16
	// maxObjectSize bounds a tag object read back from the backend.
	maxObjectSize = 64 << 10
)

// ObjectName is the backend object name of repo:tag: "t-" and the hex SHA-256 of
// "<repo>:<tag>" (backend names allow only [A-Za-z0-9._-]). Links are written back as tags
// are, under their stored name (tagstore.LinkKey), which no tag can equal.
func ObjectName(repo, tag string) string {
	h := sha256.Sum256([]byte(repo + ":" + tag))
	return objectPrefix + hex.EncodeToString(h[:])
}

// Record is a tag's backend object: its latest value as of Index, or a tombstone (Deleted)
// for a tag deleted at or before Index. A link's record is the same, with Tag its stored name
// (tagstore.LinkKey of the link's name).
type Record struct {
	Repo    string        `json:"repo"`
	Tag     string        `json:"tag"`
	Digest  digest.Digest `json:"digest,omitempty"`
	Index   uint64        `json:"index"`
	Updated time.Time     `json:"updated"`
	Deleted bool          `json:"deleted,omitempty"`
}

// taskKey is one tag of a write-back task, with the index of the newest change to it that the
// task was created for.
type taskKey struct {
	Repo    string    `json:"repo"`
	Tag     string    `json:"tag"`
	Index   uint64    `json:"index"`
	Updated time.Time `json:"updated"`
}

type tagsTask struct {
	Keys []taskKey `json:"keys"`
}

// resyncTask reconciles the whole backend with a state at least as new as Index.
type resyncTask struct {
	Index uint64 `json:"index"`
}

// writeback keeps the backend's copy of the tags up to date; see the package documentation for
// why no acknowledged change is lost.
type writeback struct {
	s      *Server
	ns     string
	dir    string
	q      *queue.Queue
	runner *queue.Runner
	locks  [64]sync.Mutex

	objects *prometheus.CounterVec
	cursorG prometheus.Gauge
}

func newWriteback(s *Server, dir string, reg prometheus.Registerer) (*writeback, error) {
	if r, ok := s.backend.(*backend.Router); ok {
		if _, err := r.Route(s.cfg.TagsNamespace); err != nil {
			return nil, fmt.Errorf("backends: no route matches tags_namespace %q", s.cfg.TagsNamespace)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create write-back dir: %w", err)
	}
	q, err := queue.Open(filepath.Join(dir, "queue.db"))
	if err != nil {
		return nil, err
	}
	wb := &writeback{s: s, ns: s.cfg.TagsNamespace, dir: dir, q: q,
		objects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_buildindex_writeback_objects_total",
			Help: "Tag objects the write-back wrote to the backend, or skipped because the backend held a value as new.",
		}, []string{"result"}),
		cursorG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_buildindex_writeback_queued_index",
			Help: "Raft index of the last tag change queued for write-back.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{wb.objects, wb.cursorG} {
			if err := reg.Register(c); err != nil {
				_ = q.Close() // the registration error is the one to report
				return nil, err
			}
		}
	}
	w := s.cfg.Writeback
	wb.runner, err = queue.NewRunner(q, queue.RunnerConfig{
		Workers: w.Workers, RetryInitial: w.RetryInitial, RetryMax: w.RetryMax, Timeout: w.Timeout,
	}, wb.execute, queue.RunnerDeps{Logger: s.log, Registerer: reg, Subsystem: "buildindex"})
	if err != nil {
		_ = q.Close() // the runner's error is the one to report
		return nil, err
	}
	return wb, nil
}

func (wb *writeback) close() error { return wb.q.Close() }

// run executes queued tasks and queues the changes the store applies, until ctx ends.
func (wb *writeback) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return wb.runner.Run(ctx) })
	g.Go(func() error { wb.follow(ctx); return nil })
	return g.Wait()
}

// follow queues every change from the cursor on, resubscribing when the feed ends.
func (wb *writeback) follow(ctx context.Context) {
	followFeed(ctx, wb.s.store, wb.cursor(), wb.consume)
}

func (wb *writeback) cursor() feedCursor {
	return feedCursor{dir: wb.dir, what: "write-back", log: wb.s.log}
}

// consume queues changes from ch in batches until ctx ends or ch closes, and returns the index
// up to which every change is queued.
func (wb *writeback) consume(ctx context.Context, ch <-chan tagstore.Change, from uint64) uint64 {
	for {
		var c tagstore.Change
		var ok bool
		select {
		case <-ctx.Done():
			return from
		case c, ok = <-ch:
			if !ok {
				return from
			}
		}
		if c.Op == tagstore.OpResync {
			return wb.resync(ctx, from)
		}
		batch := map[string]taskKey{}
		var lo, hi uint64
		add := func(c tagstore.Change) {
			k := c.Tag.Repo + ":" + c.Tag.Name
			if old, ok := batch[k]; !ok || c.Index > old.Index {
				batch[k] = taskKey{Repo: c.Tag.Repo, Tag: c.Tag.Name, Index: c.Index, Updated: c.Tag.Updated}
			}
			if lo == 0 || c.Index < lo {
				lo = c.Index
			}
			hi = max(hi, c.Index)
		}
		add(c)
		resync := false
	drain:
		for len(batch) < maxBatch {
			select {
			case c, ok = <-ch:
				if !ok {
					break drain
				}
				if c.Op == tagstore.OpResync {
					resync = true
					break drain
				}
				add(c)
			default:
				break drain
			}
		}
		// Several changes may share an index (an import batch): the cursor may only pass an
		// index once every change of it is queued, so it stays below hi until the next
		// change shows a higher index. (Queuing a change twice is harmless.)
		if !wb.enqueue(ctx, kindTags, fmt.Sprintf("%020d-%020d", lo, hi), tagsTask{Keys: sortedKeys(batch)}) {
			return from // ctx ended before the batch was stored: the cursor stays before it.
		}
		from = hi - 1
		wb.advance(from)
		if resync {
			return wb.resync(ctx, from)
		}
		if !ok {
			return from
		}
	}
}

// resync queues a full reconciliation of the backend with the store, after the feed lost the
// changes since from (this node fell behind or installed a snapshot). It returns the index to
// subscribe from next.
func (wb *writeback) resync(ctx context.Context, from uint64) uint64 {
	at := wb.s.store.AppliedIndex()
	wb.s.log.Info("change feed lost its place; queuing a full write-back", "from_index", from, "applied_index", at)
	if !wb.enqueue(ctx, kindResync, fmt.Sprintf("%020d", at), resyncTask{Index: at}) {
		return from
	}
	wb.advance(at)
	return at
}

func (wb *writeback) advance(index uint64) {
	wb.cursorG.Set(float64(index))
	if err := wb.saveCursor(index); err != nil {
		wb.s.log.Warn("save write-back cursor", "err", err)
	}
}

func sortedKeys(batch map[string]taskKey) []taskKey {
	keys := make([]taskKey, 0, len(batch))
	for _, k := range batch {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b taskKey) int { return strings.Compare(a.Repo+":"+a.Tag, b.Repo+":"+b.Tag) })
	return keys
}

// enqueue stores one task, retrying until it is stored or ctx ends. Tasks queued by a follower
// wait a moment, so the leader's copy usually lands first and the follower only confirms it.
func (wb *writeback) enqueue(ctx context.Context, kind, key string, payload any) bool {
	p, err := json.Marshal(payload)
	if err != nil {
		wb.s.log.Error("encode write-back task", "err", err)
		return false
	}
	t := queue.Task{Kind: kind, Key: key, Payload: p}
	if !wb.s.store.IsLeader() {
		t.NotBefore = time.Now().Add(wb.s.cfg.Writeback.FollowerDelay)
	}
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		_, err := wb.q.Add(t)
		if err == nil {
			return true
		}
		wb.s.log.Error("queue tag write-back; retrying", "kind", kind, "key", key, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
	}
}

// loadCursor returns the index of the last change known to be queued, 0 when unknown.
func (wb *writeback) loadCursor() uint64 { return wb.cursor().load() }

// saveCursor records that every change up to index is queued.
func (wb *writeback) saveCursor(index uint64) error { return wb.cursor().save(index) }

// execute runs one write-back task.
func (wb *writeback) execute(ctx context.Context, t queue.Task) error {
	switch t.Kind {
	case kindTags:
		var p tagsTask
		if err := json.Unmarshal(t.Payload, &p); err != nil {
			return fmt.Errorf("%w: decode %s task: %w", queue.ErrPermanent, t.Kind, err)
		}
		var need uint64
		for _, k := range p.Keys {
			need = max(need, k.Index)
		}
		if err := wb.caughtUp(need); err != nil {
			return err
		}
		return wb.syncAll(ctx, p.Keys)
	case kindResync:
		var p resyncTask
		if err := json.Unmarshal(t.Payload, &p); err != nil {
			return fmt.Errorf("%w: decode %s task: %w", queue.ErrPermanent, t.Kind, err)
		}
		if err := wb.caughtUp(p.Index); err != nil {
			return err
		}
		return wb.reconcile(ctx)
	default:
		return fmt.Errorf("%w: unknown task kind %q", queue.ErrPermanent, t.Kind)
	}
}

// caughtUp fails (to be retried) until this node's state reflects index. After a restart the
// store replays its log; reading before it caught up with the changes a task is about would
// write an older value and drop the task.
func (wb *writeback) caughtUp(index uint64) error {
	if applied := wb.s.store.AppliedIndex(); applied < index {
		return fmt.Errorf("tag store applied index %d is behind the task's %d; waiting", applied, index)
	}
	return nil
}

func (wb *writeback) syncAll(ctx context.Context, keys []taskKey) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(syncParallelism)
	for _, k := range keys {
		g.Go(func() error { return wb.sync(gctx, k) })
	}
	return g.Wait()
}

// reconcile makes the backend match this node's whole state: every live tag is synced, and
// every object of a tag that no longer exists gets a tombstone.
func (wb *writeback) reconcile(ctx context.Context) error {
	tags, at, err := wb.s.store.Export(ctx, tagstore.Stale)
	if err != nil {
		return fmt.Errorf("export tags: %w", err)
	}
	live := make(map[string]bool, len(tags))
	keys := make([]taskKey, len(tags))
	for i, t := range tags {
		live[ObjectName(t.Repo, t.Name)] = true
		keys[i] = taskKey{Repo: t.Repo, Tag: t.Name, Index: t.Index, Updated: t.Updated}
	}
	if err := wb.syncAll(ctx, keys); err != nil {
		return err
	}
	names, err := wb.s.backend.List(ctx, wb.ns, objectPrefix)
	if err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			return fmt.Errorf("%w: list tag objects to find deleted tags: %w", queue.ErrPermanent, err)
		}
		return fmt.Errorf("list tag objects: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(syncParallelism)
	for _, name := range names {
		if live[name] {
			continue
		}
		g.Go(func() error {
			rec, err := wb.download(gctx, name)
			switch {
			case errors.Is(err, backend.ErrNotFound) || err == nil && rec.Deleted:
				return nil
			case errors.Is(err, errCorrupt):
				wb.s.log.Warn("skipping corrupt tag object", "object", name, "err", err)
				return nil
			case err != nil:
				return err
			}
			// Absent from the export at index at: a tombstone there, unless the tag came back.
			return wb.sync(gctx, taskKey{Repo: rec.Repo, Tag: rec.Tag, Index: at, Updated: time.Now().UTC()})
		})
	}
	return g.Wait()
}

func (wb *writeback) lock(name string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return &wb.locks[h.Sum32()%uint32(len(wb.locks))]
}

// sync makes the backend's object for k at least as new as this node's current value of the
// tag: read the local value, read the object, write only when the local value is newer.
func (wb *writeback) sync(ctx context.Context, k taskKey) error {
	name := ObjectName(k.Repo, k.Tag)
	mu := wb.lock(name)
	mu.Lock()
	defer mu.Unlock()
	rec, err := wb.current(ctx, k.Repo, k.Tag, k.Index, k.Updated)
	if err != nil {
		return err
	}
	old, err := wb.download(ctx, name)
	switch {
	case err == nil && old.Index >= rec.Index:
		wb.objects.WithLabelValues("skipped").Inc()
		return nil
	case errors.Is(err, errCorrupt):
		wb.s.log.Warn("overwriting corrupt tag object", "object", name, "err", err)
	case err != nil && !errors.Is(err, backend.ErrNotFound):
		return err
	}
	return wb.upload(ctx, name, rec)
}

// current returns this node's value of repo:tag as a record: the tag, or a tombstone at
// index. The caller holds the tag's lock.
//
// A tombstone at index is safe when the state read reflects at least index (the task's
// change, or the export it came from): the tag was deleted at or before the state read, so
// the tombstone is newer than any put it hides, and any later put gets a higher index.
func (wb *writeback) current(ctx context.Context, repo, tag string, index uint64, updated time.Time) (Record, error) {
	rec := Record{Repo: repo, Tag: tag}
	var t tagstore.Tag
	var err error
	if name, ok := tagstore.LinkName(tag); ok {
		var l tagstore.Link
		l, err = wb.s.store.GetLink(ctx, repo, name, tagstore.Stale)
		t = tagstore.Tag{Repo: l.Repo, Name: tag, Digest: l.Digest, Index: l.Index, Updated: l.Updated}
	} else {
		t, err = wb.s.store.Get(ctx, repo, tag, tagstore.Stale)
	}
	switch {
	case err == nil:
		rec.Digest, rec.Index, rec.Updated = t.Digest, t.Index, t.Updated
	case errors.Is(err, tagstore.ErrNotFound):
		rec.Deleted, rec.Index, rec.Updated = true, index, updated
	default:
		return Record{}, fmt.Errorf("read tag %s:%s: %w", repo, tag, err)
	}
	return rec, nil
}

func (wb *writeback) upload(ctx context.Context, name string, rec Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("%w: encode tag object: %w", queue.ErrPermanent, err)
	}
	if err := wb.s.backend.Upload(ctx, wb.ns, name, bytes.NewReader(b), int64(len(b))); err != nil {
		if errors.Is(err, backend.ErrReadOnly) || errors.Is(err, backend.ErrNoRoute) || errors.Is(err, backend.ErrInvalidKey) {
			return fmt.Errorf("%w: write tag %s:%s: %w", queue.ErrPermanent, rec.Repo, rec.Tag, err)
		}
		return fmt.Errorf("write tag %s:%s: %w", rec.Repo, rec.Tag, err)
	}
	wb.objects.WithLabelValues("written").Inc()
	return nil
}

// errCorrupt marks a backend object that is not a valid tag record.
var errCorrupt = errors.New("corrupt tag object")

// download reads and checks one tag object.
func (wb *writeback) download(ctx context.Context, name string) (Record, error) {
	var buf limitedBuffer
	buf.max = maxObjectSize
	if err := wb.s.backend.Download(ctx, wb.ns, name, &buf); err != nil {
		if errors.Is(err, backend.ErrNotFound) {
			return Record{}, err
		}
		if buf.Len() >= maxObjectSize {
			return Record{}, fmt.Errorf("read tag object %s: %w: larger than %d bytes", name, errCorrupt, maxObjectSize)
		}
		return Record{}, fmt.Errorf("read tag object %s: %w", name, err)
	}
	var rec Record
	dec := json.NewDecoder(&buf)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return Record{}, fmt.Errorf("read tag object %s: %w: %w", name, errCorrupt, err)
	}
	if err := checkRecord(name, rec); err != nil {
		return Record{}, fmt.Errorf("read tag object %s: %w: %w", name, errCorrupt, err)
	}
	return rec, nil
}

func checkRecord(name string, rec Record) error {
	if link, ok := tagstore.LinkName(rec.Tag); ok {
		if err := checkRepo(rec.Repo); err != nil {
			return err
		}
		if _, err := checkLinkName(link); err != nil {
			return err
		}
	} else if err := checkRepoTag(rec.Repo, rec.Tag); err != nil {
		return err
	}
	if ObjectName(rec.Repo, rec.Tag) != name {
		return fmt.Errorf("it holds %s:%s, whose object is %s", rec.Repo, rec.Tag, ObjectName(rec.Repo, rec.Tag))
	}
	if rec.Index == 0 {
		return errors.New("index 0")
	}
	if !rec.Deleted {
		if err := rec.Digest.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// restore imports every live tag object of the backend into the store, then rewrites every
// object from the store's state.
//
// It reads and checks every object before importing any, so a corrupt object fails the
// restore with nothing changed. The rewrite ("rebase") matters: the objects carry the log
// indexes of the cluster that wrote them, and a restored cluster's log starts again from 1, so
// until the objects are rewritten with this cluster's indexes the write-back would take them
// for newer than this cluster's changes and skip those. A restore that fails midway can be run
// again: tags already present are skipped, and the rewrite starts over.
func (wb *writeback) restore(ctx context.Context) (api.RestoreResult, error) {
	names, err := wb.s.backend.List(ctx, wb.ns, objectPrefix)
	if err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			return api.RestoreResult{}, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeUnsupported,
				Message: "the storage backend of the tags cannot list objects", Err: err}
		}
		return api.RestoreResult{}, fmt.Errorf("list tag objects: %w", err)
	}
	recs := make([]Record, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(restoreParallelism)
	for i, name := range names {
		g.Go(func() error {
			rec, err := wb.download(gctx, name)
			if errors.Is(err, backend.ErrNotFound) {
				return nil // Listed, then removed: nothing to restore.
			}
			recs[i] = rec
			return err
		})
	}
	if err := g.Wait(); err != nil {
		if errors.Is(err, errCorrupt) {
			return api.RestoreResult{}, &errcode.Error{Status: http.StatusInternalServerError, Code: errcode.CodeUnknown,
				Message: "restore refused, nothing imported: " + err.Error(), Err: err}
		}
		return api.RestoreResult{}, fmt.Errorf("restore tags: %w", err)
	}
	var tags []tagstore.Tag
	for _, r := range recs {
		if r.Repo != "" && !r.Deleted {
			tags = append(tags, tagstore.Tag{Repo: r.Repo, Name: r.Tag, Digest: r.Digest, Index: r.Index, Updated: r.Updated})
		}
	}
	var res api.RestoreResult
	res.Imported, res.Skipped, err = wb.s.store.Import(ctx, tags)
	if err != nil {
		return res, fmt.Errorf("restore tags (imported %d before the error; run restore again): %w", res.Imported, err)
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(restoreParallelism)
	for i, rec := range recs {
		if rec.Repo == "" {
			continue
		}
		g.Go(func() error { return wb.rebase(gctx, names[i], rec) })
	}
	if err := g.Wait(); err != nil {
		return res, fmt.Errorf("restore tags: imported %d, but rewriting the backend copies failed (run restore again): %w", res.Imported, err)
	}
	return res, nil
}

// rebase rewrites one object from this node's current state, whatever index it holds.
func (wb *writeback) rebase(ctx context.Context, name string, old Record) error {
	mu := wb.lock(name)
	mu.Lock()
	defer mu.Unlock()
	at := wb.s.store.AppliedIndex() // before the read: a tombstone at it hides no later put
	updated := old.Updated
	if !old.Deleted {
		updated = time.Now().UTC()
	}
	rec, err := wb.current(ctx, old.Repo, old.Tag, at, updated)
	if err != nil {
		return err
	}
	return wb.upload(ctx, name, rec)
}
