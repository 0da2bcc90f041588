package buildindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/queue"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/replicate"
	"github.com/krakenctl/krakenctl/tagstore"
)

const (
	// kindReplicateTag is the replication task kind: send one tag's value (as of Index) to one
	// remote. Its key is "<repo>:<tag>@<index>": every change is its own item, and an item
	// whose tag has moved on since finishes at once (the newer change has its own item), so
	// the remote ends on the last value whatever order retries run in.
	kindReplicateTag = "tag"
	// maxStatusItems bounds the items one remote lists in a status answer.
	maxStatusItems = 100
)

// replItem is a replication task's payload.
type replItem struct {
	Repo  string `json:"repo"`
	Tag   string `json:"tag"`
	Index uint64 `json:"index"`
}

// replicator follows the tag store's changes and sends those its rules match to remote
// clusters, through a durable queue per remote (parking what cannot succeed until an operator
// retries it). Every node runs one: the leader sends at once, followers after
// replication_queue.follower_delay, so a leader that dies mid-copy loses nothing.
type replicator struct {
	s       *Server
	dir     string
	rules   []replRule
	remotes []*remoteQueue // in config order
	copier  *replicate.Copier
	src     replicate.Cluster
}

type replRule struct {
	re      *regexp.Regexp
	pattern string
	to      []*remoteQueue
}

// remoteQueue is one remote cluster's queue and counters.
type remoteQueue struct {
	r      *replicator
	name   string
	file   string
	rules  []string
	q      *queue.Queue
	runner *queue.Runner
	locks  tagLocks // serialize the items of one tag

	mu          sync.Mutex
	cached      *remoteClients
	lastErr     string
	lastErrAt   time.Time
	lastSuccess time.Time
	replicated  int64
	blobs       int64
	bytes       int64
	busy        time.Duration
	attempts    map[string]int64 // by result
}

// remoteClients are the clients of a remote, built from its endpoints file as it was at stamp.
type remoteClients struct {
	stamp   string
	cluster replicate.Cluster
	hc      *http.Client
}

func newReplicator(s *Server, dir string, reg prometheus.Registerer) (*replicator, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create replication dir: %w", err)
	}
	cfg := s.cfg.ReplicationQueue
	copier, err := replicate.New(replicate.Config{Parallel: cfg.Parallel}, replicate.Deps{Log: s.log})
	if err != nil {
		return nil, err
	}
	r := &replicator{s: s, dir: dir, copier: copier, src: replicate.Cluster{
		Name:       "local",
		Origins:    s.origins,
		BuildIndex: client.NewBuildIndexes([]string{s.cfg.Advertise}, s.hc, client.BuildIndexesOptions{}),
	}}
	byName := map[string]*remoteQueue{}
	for _, rule := range s.cfg.Replication {
		rr := replRule{re: regexp.MustCompile(rule.Repository), pattern: rule.Repository} // Validate compiled it
		for _, f := range rule.To {
			name := RemoteName(f)
			rm, ok := byName[name]
			if !ok {
				rm = &remoteQueue{r: r, name: name, file: filepath.Clean(f), attempts: map[string]int64{}}
				byName[name] = rm
				r.remotes = append(r.remotes, rm)
			}
			if !slices.Contains(rm.rules, rule.Repository) {
				rm.rules = append(rm.rules, rule.Repository)
			}
			rr.to = append(rr.to, rm)
		}
		r.rules = append(r.rules, rr)
	}
	for _, rm := range r.remotes {
		rm.q, err = queue.Open(filepath.Join(dir, rm.name+".db"))
		if err == nil {
			rm.runner, err = queue.NewRunner(rm.q, queue.RunnerConfig{
				Workers: cfg.Workers, RetryInitial: cfg.RetryInitial, RetryMax: cfg.RetryMax, Timeout: cfg.Timeout, Park: true,
			}, rm.execute, queue.RunnerDeps{Logger: s.log.With("remote", rm.name)})
		}
		if err != nil {
			_ = r.close() // the open error is the one to report
			return nil, err
		}
	}
	if reg != nil {
		if err := reg.Register(r); err != nil {
			_ = r.close()
			return nil, err
		}
	}
	return r, nil
}

func (r *replicator) close() error {
	var errs []error
	for _, rm := range r.remotes {
		if rm.q != nil {
			errs = append(errs, rm.q.Close())
		}
		rm.mu.Lock()
		if rm.cached != nil {
			rm.cached.hc.CloseIdleConnections()
		}
		rm.mu.Unlock()
	}
	return errors.Join(errs...)
}

// run sends queued items and queues the changes the rules match, until ctx ends.
func (r *replicator) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, rm := range r.remotes {
		g.Go(func() error { return rm.runner.Run(ctx) })
	}
	g.Go(func() error { r.follow(ctx); return nil })
	return g.Wait()
}

// follow queues every matching change from the cursor on, resubscribing when the feed ends.
func (r *replicator) follow(ctx context.Context) {
	followFeed(ctx, r.s.store, r.cursor(), r.consume)
}

func (r *replicator) cursor() feedCursor {
	return feedCursor{dir: r.dir, what: "replication", log: r.s.log}
}

// consume queues matching changes from ch until ctx ends or ch closes, and returns the index
// up to which every change is queued. Deletes are not replicated: a remote keeps what it was
// sent (removing images from other clusters is a decision for their operators).
func (r *replicator) consume(ctx context.Context, ch <-chan tagstore.Change, from uint64) uint64 {
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
			return r.resync(ctx, from)
		}
		if c.Op == tagstore.OpPut {
			if _, link := tagstore.LinkName(c.Tag.Name); !link {
				if !r.enqueue(ctx, c.Tag.Repo, c.Tag.Name, c.Index) {
					return from
				}
			}
		}
		// Changes of one import batch share an index: the cursor passes an index only once the
		// next one shows up (queuing a change twice keeps one item).
		if c.Index > 0 && c.Index-1 > from {
			from = c.Index - 1
			if len(ch) == 0 {
				r.saveCursor(from)
			}
		}
	}
}

// resync queues every live tag the rules match, after the feed lost changes (this node fell
// behind or installed a snapshot); a remote that has a tag already costs one read.
func (r *replicator) resync(ctx context.Context, from uint64) uint64 {
	tags, at, err := r.s.store.Export(ctx, tagstore.Stale)
	if err != nil {
		r.s.log.Error("export tags for replication; retrying", "err", err)
		return from
	}
	r.s.log.Info("change feed lost its place; queuing every matching tag for replication", "from_index", from, "tags", len(tags))
	for _, t := range tags {
		if t.IsLink() {
			continue
		}
		if !r.enqueue(ctx, t.Repo, t.Name, t.Index) {
			return from
		}
	}
	r.saveCursor(at)
	return at
}

// enqueue queues repo:tag at index for every remote a rule names, retrying until stored or ctx
// ends.
func (r *replicator) enqueue(ctx context.Context, repo, tag string, index uint64) bool {
	var targets []*remoteQueue
	for _, rule := range r.rules {
		if !rule.re.MatchString(repo) {
			continue
		}
		for _, rm := range rule.to {
			if !slices.Contains(targets, rm) {
				targets = append(targets, rm)
			}
		}
	}
	if len(targets) == 0 {
		return true
	}
	p, _ := json.Marshal(replItem{Repo: repo, Tag: tag, Index: index}) // strings and a number
	t := queue.Task{Kind: kindReplicateTag, Key: fmt.Sprintf("%s:%s@%020d", repo, tag, index), Payload: p}
	if !r.s.store.IsLeader() {
		t.NotBefore = time.Now().Add(r.s.cfg.ReplicationQueue.FollowerDelay)
	}
	for _, rm := range targets {
		for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
			_, err := rm.q.Add(t)
			if err == nil {
				break
			}
			r.s.log.Error("queue replication; retrying", "remote", rm.name, "tag", repo+":"+tag, "err", err)
			select {
			case <-ctx.Done():
				return false
			case <-time.After(delay):
			}
		}
	}
	return true
}

// saveCursor records that every change up to index is queued; a failure is logged (a cursor
// that lags only queues some changes again).
func (r *replicator) saveCursor(index uint64) {
	if err := r.cursor().save(index); err != nil {
		r.s.log.Warn("save replication cursor", "err", err)
	}
}

// tagLocks serializes the items of one tag: an older value sent after a newer one would move
// the remote back. A newer item that comes to wait cancels an older one in flight, whose value
// is stale by then, rather than wait out its copy.
type tagLocks struct {
	mu sync.Mutex
	m  map[string]*tagLock
}

type tagLock struct {
	held  chan struct{} // capacity 1: full while an item holds the tag
	users int           // the holder and the waiters
	index uint64        // the holder's change
	stop  context.CancelFunc
}

// acquire waits for key and returns the context the holder works under (cancelled when a newer
// item of the tag comes to wait) and the release.
func (l *tagLocks) acquire(ctx context.Context, key string, index uint64) (context.Context, func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*tagLock{}
	}
	e := l.m[key]
	if e == nil {
		e = &tagLock{held: make(chan struct{}, 1)}
		l.m[key] = e
	}
	e.users++
	if e.stop != nil && e.index < index {
		e.stop()
	}
	l.mu.Unlock()
	done := func() {
		l.mu.Lock()
		e.users--
		if e.users == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
	select {
	case e.held <- struct{}{}:
	case <-ctx.Done():
		done()
		return nil, nil, ctx.Err()
	}
	hctx, stop := context.WithCancel(ctx)
	l.mu.Lock()
	e.index, e.stop = index, stop
	l.mu.Unlock()
	return hctx, func() {
		stop()
		l.mu.Lock()
		e.stop = nil
		l.mu.Unlock()
		<-e.held
		done()
	}, nil
}

// execute sends one item: the tag's current value, if the item is still the tag's latest.
// Only the leader sends; a follower confirms that the remote holds the value (the leader sent
// it) and keeps the item until it does, so that it can send it itself once it leads.
func (rm *remoteQueue) execute(ctx context.Context, t queue.Task) error {
	var it replItem
	if err := json.Unmarshal(t.Payload, &it); err != nil {
		return fmt.Errorf("%w: decode replication item: %w", queue.ErrPermanent, err)
	}
	if applied := rm.r.s.store.AppliedIndex(); applied < it.Index {
		return fmt.Errorf("tag store applied index %d is behind the item's %d; waiting", applied, it.Index)
	}
	cur, done, err := rm.current(ctx, it)
	if done || err != nil {
		return err
	}
	if !rm.r.s.store.IsLeader() {
		return rm.confirm(ctx, it, cur)
	}
	hctx, release, err := rm.locks.acquire(ctx, it.Repo+":"+it.Tag, it.Index)
	if err != nil {
		return err
	}
	defer release()
	if cur, done, err = rm.current(ctx, it); done || err != nil {
		return err // moved on while this item waited
	}
	dst, err := rm.clients()
	if err != nil {
		rm.record(nil, 0, err)
		return err
	}
	began := time.Now()
	rep, err := rm.r.copier.Copy(hctx, rm.r.src, dst, replicate.Target{Repo: it.Repo, Tag: it.Tag, Digest: cur.Digest,
		StillCurrent: func(ctx context.Context) error {
			// A linearizable read (through the leader): this node may have lost the lead
			// and the tag moved on while the blobs went.
			now, err := rm.r.src.BuildIndex.GetTag(ctx, it.Repo, it.Tag, false)
			switch {
			case client.IsNotFound(err):
				return fmt.Errorf("%w: deleted", replicate.ErrSuperseded)
			case err != nil:
				return err
			case now.Digest != cur.Digest:
				return fmt.Errorf("%w: now %s", replicate.ErrSuperseded, now.Digest)
			}
			return nil
		}})
	switch {
	case errors.Is(err, replicate.ErrSuperseded), err != nil && hctx.Err() != nil && ctx.Err() == nil:
		// A newer change of the tag took over (its own item sends it).
		return nil
	case errors.Is(err, replicate.ErrPermanent):
		rm.record(rep, time.Since(began), err)
		return fmt.Errorf("%w: %w", queue.ErrPermanent, err)
	}
	rm.record(rep, time.Since(began), err)
	return err
}

// current reads the tag as this node has it: done when there is nothing to send (deleted since,
// and deletes are not replicated; or moved on, and the newer change has its own item).
func (rm *remoteQueue) current(ctx context.Context, it replItem) (tagstore.Tag, bool, error) {
	cur, err := rm.r.s.store.Get(ctx, it.Repo, it.Tag, tagstore.Stale)
	switch {
	case errors.Is(err, tagstore.ErrNotFound):
		return cur, true, nil
	case err != nil:
		return cur, false, fmt.Errorf("read tag %s:%s: %w", it.Repo, it.Tag, err)
	}
	return cur, cur.Index > it.Index, nil
}

// confirm finishes a follower's item once the remote holds the value; until then the item
// waits (retried with backoff).
func (rm *remoteQueue) confirm(ctx context.Context, it replItem, cur tagstore.Tag) error {
	dst, err := rm.clients()
	if err != nil {
		return err
	}
	got, err := dst.BuildIndex.GetStoredTag(ctx, it.Repo, it.Tag)
	if err == nil && got.Digest == cur.Digest {
		return nil
	}
	return fmt.Errorf("this node follows: waiting for the leader to send %s:%s to %s", it.Repo, it.Tag, rm.name)
}

// record updates the remote's counters after one attempt.
func (rm *remoteQueue) record(rep *replicate.Report, took time.Duration, err error) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if rep != nil {
		rm.blobs += int64(rep.Copied)
		rm.bytes += rep.Bytes
		if rep.Bytes > 0 {
			rm.busy += took
		}
	}
	switch {
	case err == nil:
		rm.replicated++
		rm.lastSuccess = time.Now()
		rm.attempts["ok"]++
	case errors.Is(err, replicate.ErrPermanent):
		rm.lastErr, rm.lastErrAt = errorText(err), time.Now()
		rm.attempts["parked"]++
	default:
		rm.lastErr, rm.lastErrAt = errorText(err), time.Now()
		rm.attempts["retry"]++
	}
}

// clients returns the remote's clients, rebuilt when its endpoints file changed. A file that is
// missing or names no origins or build-index fails the attempt, to be retried: the remote's
// operators may be replacing it.
func (rm *remoteQueue) clients() (replicate.Cluster, error) {
	fi, err := os.Stat(rm.file)
	if err != nil {
		return replicate.Cluster{}, fmt.Errorf("remote %s: endpoints file: %w", rm.name, err)
	}
	stamp := fmt.Sprint(fi.ModTime().UnixNano(), fi.Size())
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if rm.cached != nil && rm.cached.stamp == stamp {
		return rm.cached.cluster, nil
	}
	e, err := api.ReadEndpoints(rm.file)
	if err != nil {
		return replicate.Cluster{}, fmt.Errorf("remote %s: %w", rm.name, err)
	}
	if len(e.Origins) == 0 || len(e.BuildIndex) == 0 {
		return replicate.Cluster{}, fmt.Errorf("remote %s: the endpoints file %s names no origins or no build_index", rm.name, rm.file)
	}
	var o httpserve.ClientOptions
	if e.TLS != nil {
		p, err := pki.Load(pki.Config{CAFile: e.TLS.CAFile, CertFile: e.TLS.CertFile, KeyFile: e.TLS.KeyFile})
		if err != nil {
			return replicate.Cluster{}, fmt.Errorf("remote %s: TLS files of %s: %w", rm.name, rm.file, err)
		}
		o.DialTLS = p.DialTLS
	}
	o.ResponseHeaderTimeout = 5 * time.Minute // a remote origin may pull a blob from storage first
	hc := httpserve.NewClient(o)
	if rm.cached != nil {
		rm.cached.hc.CloseIdleConnections()
	}
	rm.cached = &remoteClients{stamp: stamp, hc: hc, cluster: replicate.Cluster{
		Name:       rm.name,
		Origins:    client.NewCluster(e.Origins, hc),
		BuildIndex: client.NewBuildIndexes(e.BuildIndex, hc, client.BuildIndexesOptions{}),
	}}
	return rm.cached.cluster, nil
}

// status is the remote's part of a status answer.
func (rm *remoteQueue) status() (api.RemoteStatus, error) {
	pending, err := rm.q.All()
	if err != nil {
		return api.RemoteStatus{}, err
	}
	parked, err := rm.q.Parked()
	if err != nil {
		return api.RemoteStatus{}, err
	}
	st := api.RemoteStatus{Name: rm.name, EndpointsFile: rm.file, Rules: rm.rules, Pending: len(pending), Parked: len(parked)}
	rm.mu.Lock()
	st.LastError, st.LastErrorAt, st.LastSuccess = rm.lastErr, rm.lastErrAt, rm.lastSuccess
	st.Replicated, st.Blobs, st.Bytes = rm.replicated, rm.blobs, rm.bytes
	if rm.busy > 0 {
		st.BytesPerSecond = float64(rm.bytes) / rm.busy.Seconds()
	}
	rm.mu.Unlock()
	items := make([]api.ReplicationItem, 0, len(pending)+len(parked))
	for _, list := range []struct {
		tasks  []queue.Task
		parked bool
	}{{parked, true}, {pending, false}} {
		for _, t := range list.tasks {
			var it replItem
			_ = json.Unmarshal(t.Payload, &it) // a corrupt payload shows as an empty item
			items = append(items, api.ReplicationItem{Repo: it.Repo, Tag: it.Tag, Index: it.Index, Attempts: t.Attempts,
				LastError: t.LastError, Parked: list.parked, Created: t.Created, NotBefore: t.NotBefore})
			if !list.parked && (st.OldestPending.IsZero() || t.Created.Before(st.OldestPending)) {
				st.OldestPending = t.Created
			}
		}
	}
	slices.SortStableFunc(items, func(a, b api.ReplicationItem) int {
		if a.Parked != b.Parked {
			if a.Parked {
				return -1
			}
			return 1
		}
		return a.Created.Compare(b.Created)
	})
	if len(items) > maxStatusItems {
		items = items[:maxStatusItems]
	}
	st.Items = items
	return st, nil
}

// Metric descriptors of the replicator, collected from the queues at scrape time.
var (
	replPendingDesc = prometheus.NewDesc("krakenctl_buildindex_replication_pending",
		"Tags queued for a remote cluster (due or backing off).", []string{"remote"}, nil)
	replParkedDesc = prometheus.NewDesc("krakenctl_buildindex_replication_parked",
		"Tags parked after a failure retrying cannot fix, until `krakenctl replicate retry`.", []string{"remote"}, nil)
	replOldestDesc = prometheus.NewDesc("krakenctl_buildindex_replication_oldest_pending_seconds",
		"Age of the oldest tag queued for a remote; 0 when none is.", []string{"remote"}, nil)
	replAttemptsDesc = prometheus.NewDesc("krakenctl_buildindex_replication_attempts_total",
		"Replication attempts by remote and result (ok, retry, parked).", []string{"remote", "result"}, nil)
	replBytesDesc = prometheus.NewDesc("krakenctl_buildindex_replication_bytes_total",
		"Bytes of blobs sent to a remote.", []string{"remote"}, nil)
	replBlobsDesc = prometheus.NewDesc("krakenctl_buildindex_replication_blobs_total",
		"Blobs sent to a remote (blobs it already had are not counted).", []string{"remote"}, nil)
)

// Describe implements prometheus.Collector.
func (r *replicator) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{replPendingDesc, replParkedDesc, replOldestDesc, replAttemptsDesc, replBytesDesc, replBlobsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *replicator) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, rm := range r.remotes {
		if pending, err := rm.q.All(); err == nil {
			oldest := 0.0
			for _, t := range pending {
				oldest = max(oldest, now.Sub(t.Created).Seconds())
			}
			ch <- prometheus.MustNewConstMetric(replPendingDesc, prometheus.GaugeValue, float64(len(pending)), rm.name)
			ch <- prometheus.MustNewConstMetric(replOldestDesc, prometheus.GaugeValue, oldest, rm.name)
		}
		if parked, err := rm.q.Parked(); err == nil {
			ch <- prometheus.MustNewConstMetric(replParkedDesc, prometheus.GaugeValue, float64(len(parked)), rm.name)
		}
		rm.mu.Lock()
		for _, res := range []string{"ok", "retry", "parked"} {
			ch <- prometheus.MustNewConstMetric(replAttemptsDesc, prometheus.CounterValue, float64(rm.attempts[res]), rm.name, res)
		}
		ch <- prometheus.MustNewConstMetric(replBytesDesc, prometheus.CounterValue, float64(rm.bytes), rm.name)
		ch <- prometheus.MustNewConstMetric(replBlobsDesc, prometheus.CounterValue, float64(rm.blobs), rm.name)
		rm.mu.Unlock()
	}
}

// handleReplication answers this node's replication status.
func (s *Server) handleReplication(w http.ResponseWriter, _ *http.Request) error {
	st := api.ReplicationStatus{Node: s.cfg.Raft.NodeID, Leader: s.store.IsLeader(), Remotes: []api.RemoteStatus{}}
	if s.repl != nil {
		for _, rm := range s.repl.remotes {
			rs, err := rm.status()
			if err != nil {
				return fmt.Errorf("replication status of %s: %w", rm.name, err)
			}
			st.Remotes = append(st.Remotes, rs)
		}
	}
	return writeJSON(w, http.StatusOK, st)
}

// handleReplicationRetry queues this node's parked items that the request selects again.
func (s *Server) handleReplicationRetry(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var req api.RetryRequest
	if len(body) > 0 {
		if err := decodeBody(body, &req); err != nil {
			return err
		}
	}
	if (req.Repo == "") != (req.Tag == "") {
		return errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported, "retry: give both repository and tag, or neither")
	}
	var res api.RetryResult
	if s.repl == nil {
		if req.Remote != "" {
			return errcode.Errorf(http.StatusNotFound, errcode.CodeNameUnknown, "no replication rule names remote %q", req.Remote)
		}
		return writeJSON(w, http.StatusOK, res)
	}
	found := false
	for _, rm := range s.repl.remotes {
		if req.Remote != "" && rm.name != req.Remote {
			continue
		}
		found = true
		n, err := rm.q.Unpark(func(t queue.Task) bool {
			if req.Repo == "" {
				return true
			}
			var it replItem
			return json.Unmarshal(t.Payload, &it) == nil && it.Repo == req.Repo && it.Tag == req.Tag
		})
		if err != nil {
			return fmt.Errorf("retry replication to %s: %w", rm.name, err)
		}
		if n > 0 {
			s.log.Info("parked replication items queued again", "remote", rm.name, "items", n)
		}
		res.Requeued += n
	}
	if !found {
		return errcode.Errorf(http.StatusNotFound, errcode.CodeNameUnknown, "no replication rule names remote %q", req.Remote)
	}
	return writeJSON(w, http.StatusOK, res)
}

// maxErrorText bounds the last error a remote's status keeps: it may quote the remote.
const maxErrorText = 4 << 10

func errorText(err error) string {
	s := err.Error()
	if len(s) > maxErrorText {
		s = strings.ToValidUTF8(s[:maxErrorText], "") + "…"
	}
	return s
}
