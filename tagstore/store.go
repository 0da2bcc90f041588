package tagstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

const (
	// importBatch is how many tags one import command carries.
	importBatch = 512
	// logCacheSize is how many recent log entries are kept in memory for replication.
	logCacheSize = 512
	// transportTimeout bounds one Raft RPC's I/O (scaled up for snapshots by Raft).
	transportTimeout = 10 * time.Second
	// transportMaxPool is how many idle connections to each peer are kept.
	transportMaxPool = 3
)

// Deps are a Store's collaborators.
type Deps struct {
	// Listener accepts Raft traffic from peers. The Store owns it from the call to Open, on
	// success or failure, and closes it in Close. Tests pass a 127.0.0.1:0 listener. It is
	// ignored (and left open) when Transport is set.
	Listener net.Listener
	// ServerTLS and ClientTLS, set together, make the Raft transport on Listener mutual TLS:
	// ServerTLS for connections peers open, ClientTLS for those this node opens. Both must
	// present this node's certificate, which must name cfg.NodeID (common name or DNS name) in
	// group GroupBuildIndex; peers must present certificates from the same CA in that group,
	// and a dialed peer's must name the server id the Raft configuration puts at its address.
	// The configurations may reload certificates through callbacks; the Store clones them and
	// never changes them. Without them the transport is plain TCP, for networks trusted by
	// construction.
	ServerTLS *tls.Config
	ClientTLS *tls.Config
	// Transport, when set, replaces Listener (tests use raft.InmemTransport). It stays owned by
	// the caller, who closes it after the Store.
	Transport raft.Transport
	// Logger receives the Store's and Raft's logs; nil discards them.
	Logger *slog.Logger
	// Registerer, when set, gets the krakenctl_tagstore_* metrics.
	Registerer prometheus.Registerer
}

// Store is a replicated map of (repository, tag) to digest, kept consistent by Raft. It owns
// the Raft node: writes go through the leader's log, and every node applies them in order.
//
// All methods are safe for concurrent use. Writes (Put, Delete, Import, Join, Remove) must be
// sent to the leader: a follower returns a *NotLeaderError naming it. Linearizable reads are
// served by the leader only; stale reads by any node.
type Store struct {
	cfg       Config
	advertise string
	log       *slog.Logger
	m         *metrics

	raft     *raft.Raft
	stream   *streamLayer           // nil when Deps.Transport is used
	netTrans *raft.NetworkTransport // nil when Deps.Transport is used
	guard    *guardTransport        // wraps the transport Raft uses
	bolt     *raftboltdb.BoltStore
	stable   *closingStable // s.bolt as Raft's stable store; see closingStable
	snaps    *raft.FileSnapshotStore

	// mu guards st; the FSM goroutine writes, readers share.
	mu sync.RWMutex
	st *state

	// applied is the last log index reflected in st; appliedTerm the term of the last applied
	// command. Written only by the FSM goroutine.
	applied     atomic.Uint64
	appliedTerm atomic.Uint64
	waitMu      sync.Mutex
	waitCh      chan struct{}

	feed *feed

	readMu      sync.Mutex
	pendingRead *readRound
	readKick    chan struct{}

	closed    atomic.Bool
	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// Open starts a Store: it opens (or creates) the Raft state in cfg.Dir, joins the Raft group
// as it was when the node stopped, and, when cfg.Bootstrap is set and there is no state yet,
// forms a new single-node cluster. A node with neither state nor Bootstrap waits for a leader
// to add it (Join on the leader). Open applies cfg.Defaults and validates cfg.
//
// Open returns before a leader is elected; use WaitForLeader.
func Open(cfg Config, deps Deps) (_ *Store, err error) {
	// cleanup undoes, in reverse, what Open did before failing. Until the network transport
	// exists the listener is closed directly; after, closing the transport closes it.
	var cleanup []func() error
	ownListener := deps.Listener != nil && deps.Transport == nil
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				err = errors.Join(err, cleanup[i]())
			}
			if ownListener {
				err = errors.Join(err, ignoreClosed(deps.Listener.Close()))
			}
		}
	}()

	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open tag store: %w config: %w", ErrInvalid, err)
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("node_id", cfg.NodeID)
	hl := newHclogAdapter(logger, "raft")

	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("open tag store: %w", err)
	}
	cleanup = append(cleanup, func() error { m.unregister(); return nil })

	s := &Store{
		cfg:      cfg,
		log:      logger,
		m:        m,
		st:       newState(),
		readKick: make(chan struct{}, 1),
		closing:  make(chan struct{}),
	}
	s.feed = newFeed(cfg.ChangeFeedRetain, m.resyncs.Inc)

	var trans raft.Transport
	switch {
	case deps.Transport != nil:
		if deps.ServerTLS != nil || deps.ClientTLS != nil {
			return nil, fmt.Errorf("open tag store: %w: TLS applies to Deps.Listener, not to a given Deps.Transport", ErrInvalid)
		}
		trans = deps.Transport
		s.advertise = string(trans.LocalAddr())
	case deps.Listener != nil:
		var policy *tlsPolicy
		if deps.ServerTLS != nil || deps.ClientTLS != nil {
			if policy, err = newTLSPolicy(deps.ServerTLS, deps.ClientTLS); err != nil {
				return nil, fmt.Errorf("open tag store: %w: %w", ErrInvalid, err)
			}
			if err := checkOwnCertificate(cfg.NodeID, deps.ServerTLS, deps.ClientTLS); err != nil {
				return nil, fmt.Errorf("open tag store: %w raft TLS: %w", ErrInvalid, err)
			}
		}
		s.advertise = cfg.Advertise
		if s.advertise == "" {
			s.advertise = deps.Listener.Addr().String()
			if err := checkHostPort(s.advertise); err != nil {
				return nil, fmt.Errorf("open tag store: %w config: advertise: unset, and the listener address %w", ErrInvalid, err)
			}
		}
		s.stream = newStreamLayer(deps.Listener, s.advertise, policy, transportTimeout, logger,
			func(reason string) { m.refused.WithLabelValues(reason).Inc() })
		s.netTrans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  s.stream,
			MaxPool: transportMaxPool,
			Timeout: transportTimeout,
			Logger:  hl.Named("transport"),
		})
		trans = s.netTrans
		ownListener = false
		cleanup = append(cleanup, s.closeTransport)
	default:
		return nil, fmt.Errorf("open tag store: %w: Deps.Listener or Deps.Transport is required", ErrInvalid)
	}
	s.guard = newGuardTransport(trans, logger, func(reason string) { m.refused.WithLabelValues(reason).Inc() })
	cleanup = append(cleanup, s.guard.Close)

	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open tag store: %w", err)
	}
	dbPath := filepath.Join(cfg.Dir, "raft.db")
	s.bolt, err = raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open tag store: %s is locked; is another process using %s?", dbPath, cfg.Dir)
		}
		return nil, fmt.Errorf("open tag store: open %s: %w", dbPath, err)
	}
	cleanup = append(cleanup, s.bolt.Close)
	logs, err := raft.NewLogCache(logCacheSize, s.bolt)
	if err != nil {
		return nil, fmt.Errorf("open tag store: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, hl.Named("snapshot"))
	if err != nil {
		return nil, fmt.Errorf("open tag store: %w", err)
	}
	s.snaps = snaps

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	// Let the leader take every apply waiting in its channel (up to MaxAppendEntries) into one
	// log write: one fsync for a batch of puts instead of one per put.
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	// A removed node keeps running (readable, stale) until it is stopped or added back.
	rc.ShutdownOnRemove = false
	rc.NoLegacyTelemetry = true
	rc.Logger = hl
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("open tag store: %w config: %w", ErrInvalid, err)
	}

	existing, err := raft.HasExistingState(logs, s.bolt, snaps)
	if err != nil {
		return nil, fmt.Errorf("open tag store: read raft state: %w", err)
	}
	s.stable = &closingStable{s: s.bolt}
	s.raft, err = raft.NewRaft(rc, fsm{s}, logs, s.stable, snaps, s.guard)
	if err != nil {
		return nil, fmt.Errorf("open tag store: start raft: %w", err)
	}
	cleanup = append(cleanup, func() error { return s.raft.Shutdown().Error() })
	if s.stream != nil {
		serverAt := s.serverAt
		s.stream.serverAt.Store(&serverAt)
	}
	if cfg.Bootstrap && !existing {
		boot := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: s.guard.LocalAddr()}}}
		if err := s.raft.BootstrapCluster(boot).Error(); err != nil {
			return nil, fmt.Errorf("open tag store: bootstrap: %w", err)
		}
		logger.Info("bootstrapped a new cluster", "raft_addr", s.advertise)
	}
	logger.Info("opened tag store", "dir", cfg.Dir, "raft_addr", s.advertise, "existing_state", existing,
		"applied_index", s.applied.Load())

	s.wg.Add(2)
	go s.watchLeadership()
	go s.runReads()
	return s, nil
}

// serverAt returns the server that the latest Raft configuration puts at addr.
func (s *Store) serverAt(addr raft.ServerAddress) (raft.ServerID, bool) {
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		if srv.Address == addr {
			return srv.ID, true
		}
	}
	return "", false
}

// closeTransport closes the network transport and every connection of the stream layer.
func (s *Store) closeTransport() error {
	err := s.netTrans.Close()
	return errors.Join(err, s.stream.Close())
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Close stops the Store: Raft shuts down (a leader does not hand over leadership first; the
// others elect a new one), pending calls return ErrClosed (a write in flight may still have
// been committed; its error also wraps ErrIndeterminate), change feeds close, and the
// listener and files are released. The state stays in Dir for the next Open. Close is
// idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.closing)
		err := s.raft.Shutdown().Error()
		s.wg.Wait()
		s.feed.close()
		if s.netTrans != nil {
			err = errors.Join(err, s.closeTransport())
		}
		s.stable.close()
		err = errors.Join(err, s.bolt.Close())
		s.m.unregister()
		s.m.leader.Set(0)
		if err != nil {
			s.closeErr = fmt.Errorf("close tag store: %w", err)
		}
		s.log.Info("closed tag store")
	})
	return s.closeErr
}

// ID returns this node's ID.
func (s *Store) ID() string { return s.cfg.NodeID }

// RaftAddr returns the Raft address this node advertises.
func (s *Store) RaftAddr() string { return s.advertise }

// IsLeader reports whether this node currently believes it is the leader. A leader cut off
// from the others keeps believing it for up to LeaderLeaseTimeout.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the leader as this node knows it (Leader set, APIAddr empty when not yet
// recorded), or false when no leader is known.
func (s *Store) Leader() (Member, bool) {
	addr, id := s.raft.LeaderWithID()
	if id == "" {
		return Member{}, false
	}
	s.mu.RLock()
	api := s.st.members[string(id)]
	s.mu.RUnlock()
	return Member{ID: string(id), RaftAddr: string(addr), APIAddr: api, Leader: true}, true
}

// notLeader describes the leader for a caller that reached a node that cannot serve it.
func (s *Store) notLeader() error {
	l, ok := s.Leader()
	if !ok || l.ID == s.cfg.NodeID {
		// No leader, or this node still names itself while it steps down: no one to send the
		// caller to yet.
		return &NotLeaderError{}
	}
	return &NotLeaderError{LeaderID: l.ID, LeaderAPIAddr: l.APIAddr, LeaderRaftAddr: l.RaftAddr}
}

// WaitForLeader waits until this node knows a leader (possibly itself), or ctx ends.
func (s *Store) WaitForLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if _, id := s.raft.LeaderWithID(); id != "" {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("wait for leader: %w", ctx.Err())
		case <-s.closing:
			return fmt.Errorf("wait for leader: %w", ErrClosed)
		}
	}
}

// watchLeadership keeps the leader gauge current and, on every election this node wins,
// records its API address through the log. That command doubles as the leader's first entry
// of its term, which linearizable reads wait for.
func (s *Store) watchLeadership() {
	defer s.wg.Done()
	for {
		select {
		case <-s.closing:
			return
		case leader := <-s.raft.LeaderCh():
			if !leader {
				s.m.leader.Set(0)
				s.log.Info("lost leadership")
				continue
			}
			s.m.leader.Set(1)
			s.log.Info("became leader", "term", s.raft.CurrentTerm())
			s.announceLeader()
		}
	}
}

func (s *Store) announceLeader() {
	backoff := 50 * time.Millisecond
	for s.raft.State() == raft.Leader {
		_, err := s.apply(context.Background(), cmdMemberMeta, "member", memberMetaCmd{ID: s.cfg.NodeID, APIAddr: s.cfg.APIAddr})
		if err == nil || errors.Is(err, ErrNotLeader) || errors.Is(err, ErrClosed) {
			return
		}
		s.log.Warn("record the leader's API address", "err", err)
		select {
		case <-s.closing:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// apply hands a command to Raft on the leader and waits until it is applied. See the error
// variables for what each failure says about whether it was applied.
func (s *Store) apply(ctx context.Context, t cmdType, name string, v any) (*applyResult, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.raft.State() != raft.Leader {
		return nil, s.notLeader()
	}
	data, err := encodeCommand(t, v)
	if err != nil {
		return nil, err
	}
	timeout := s.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
		if timeout <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	start := time.Now()
	f := s.raft.Apply(data, timeout)
	if err := s.wait(ctx, f); err != nil {
		return nil, err
	}
	s.m.applyLatency.WithLabelValues(name).Observe(time.Since(start).Seconds())
	res, ok := f.Response().(*applyResult)
	if !ok {
		return nil, fmt.Errorf("apply %s: unexpected response %T", name, f.Response())
	}
	if res.err != nil {
		return nil, res.err
	}
	return res, nil
}

// wait waits for a Raft future and maps Raft's errors to the Store's.
func (s *Store) wait(ctx context.Context, f raft.Future) error {
	errc := make(chan error, 1)
	go awaitFuture(f, errc)
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrIndeterminate, ctx.Err())
	case <-s.closing:
		return fmt.Errorf("%w (%w)", ErrClosed, ErrIndeterminate)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return s.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %w", ErrIndeterminate, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w (%w)", ErrClosed, ErrIndeterminate)
	case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	default:
		return err
	}
}

// awaitFuture forwards f's result. It runs on its own goroutine so callers can give up when
// ctx ends or the Store closes. Raft resolves every future it accepted while running, but a
// request still queued when it shuts down (a committed entry waiting for the FSM, a
// VerifyLeader or configuration read waiting for the main loop) is never answered: the
// goroutine waiting on it stays blocked for the life of the process. That is at most one per
// call in flight at Close.
func awaitFuture(f raft.Future, errc chan<- error) { errc <- f.Error() }

// Put sets repo:tag to d and returns the new value. Only the leader accepts it.
func (s *Store) Put(ctx context.Context, repo, tag string, d digest.Digest) (Tag, error) {
	if err := validateRef(repo, tag); err != nil {
		return Tag{}, fmt.Errorf("put tag: %w", err)
	}
	if err := ValidateDigest(d); err != nil {
		return Tag{}, fmt.Errorf("put tag %s:%s: %w", repo, tag, err)
	}
	res, err := s.apply(ctx, cmdPut, "put", putCmd{Repo: repo, Tag: tag, Digest: d, Time: time.Now().UTC()})
	if err != nil {
		return Tag{}, fmt.Errorf("put tag %s:%s: %w", repo, tag, err)
	}
	return res.tag, nil
}

// Delete removes repo:tag and returns the value it had. It returns ErrNotFound when the tag
// does not exist at the moment the delete is applied (the log records a no-op). Only the
// leader accepts it.
func (s *Store) Delete(ctx context.Context, repo, tag string) (Tag, error) {
	if err := validateRef(repo, tag); err != nil {
		return Tag{}, fmt.Errorf("delete tag: %w", err)
	}
	res, err := s.apply(ctx, cmdDelete, "delete", deleteCmd{Repo: repo, Tag: tag, Time: time.Now().UTC()})
	if err != nil {
		return Tag{}, fmt.Errorf("delete tag %s:%s: %w", repo, tag, err)
	}
	if !res.found {
		return Tag{}, fmt.Errorf("delete tag %s:%s: %w", repo, tag, ErrNotFound)
	}
	return res.tag, nil
}

// Get returns the value of repo:tag, or ErrNotFound.
func (s *Store) Get(ctx context.Context, repo, tag string, c Consistency) (Tag, error) {
	if err := validateRef(repo, tag); err != nil {
		return Tag{}, fmt.Errorf("get tag: %w", err)
	}
	if err := s.beginRead(ctx, c); err != nil {
		return Tag{}, fmt.Errorf("get tag %s:%s: %w", repo, tag, err)
	}
	s.mu.RLock()
	t, ok := s.st.get(repo, tag)
	s.mu.RUnlock()
	if !ok {
		return Tag{}, fmt.Errorf("get tag %s:%s: %w", repo, tag, ErrNotFound)
	}
	return t, nil
}

// Tags lists the tag names of repo in lexical order: those after last ("" for the first
// page), at most n (n <= 0: all). Links are never listed. A repository without tags (unknown,
// or holding only links) returns ErrNotFound.
func (s *Store) Tags(ctx context.Context, repo, last string, n int, c Consistency) ([]string, error) {
	if err := ValidateRepository(repo); err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	if err := s.beginRead(ctx, c); err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", repo, err)
	}
	s.mu.RLock()
	names, ok := s.st.tagNames(repo, last, n)
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("list tags of %s: repository %w", repo, ErrNotFound)
	}
	return names, nil
}

// TagsOf lists the names of repo's tags that point at d, in order of name, after last ("" for
// the first), at most n (n <= 0: all). It reads those tags only, through a reverse index the
// state keeps from digest to tags, however many other tags the repository holds: what a
// manifest delete needs to untag its manifest. A repository without such tags has none (no
// error).
func (s *Store) TagsOf(ctx context.Context, repo string, d digest.Digest, last string, n int, c Consistency) ([]string, error) {
	if err := ValidateRepository(repo); err != nil {
		return nil, fmt.Errorf("list tags of digest: %w", err)
	}
	if err := s.beginRead(ctx, c); err != nil {
		return nil, fmt.Errorf("list tags of %s pointing at %s: %w", repo, d, err)
	}
	s.mu.RLock()
	names := s.st.tagsOf(repo, d, last, n)
	s.mu.RUnlock()
	return names, nil
}

// Repositories lists the names of the repositories that hold tags or links, in lexical order:
// those after last, at most n (n <= 0: all).
func (s *Store) Repositories(ctx context.Context, last string, n int, c Consistency) ([]string, error) {
	if err := s.beginRead(ctx, c); err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	s.mu.RLock()
	names := s.st.repoNames(last, n)
	s.mu.RUnlock()
	return names, nil
}

// Export returns every tag and link, in (repository, name) order, and the log index the
// listing reflects (a link is a Tag whose Name is LinkKey of the link's name; Tag.IsLink tells): subscribing to Changes from that index continues exactly where it leaves off.
// The copy is taken in O(1) and walked without holding up writes.
func (s *Store) Export(ctx context.Context, c Consistency) ([]Tag, uint64, error) {
	if err := s.beginRead(ctx, c); err != nil {
		return nil, 0, fmt.Errorf("export tags: %w", err)
	}
	s.mu.Lock()
	st := s.st.clone()
	index := s.applied.Load()
	s.mu.Unlock()
	return st.all(), index, nil
}

// Import writes tags in batches of 512, one log entry per batch, skipping a tag whose stored
// value is at least as recent (by Updated; equal times count as already imported, so a
// repeated import changes nothing). Imported tags keep their Updated time and get the batch's
// log index. Links come in the form Export gives them (Name is LinkKey of the link's name)
// and are imported as tags are. Every entry is validated first: one invalid entry fails the
// call before anything is written. On a later error the counts say what the batches before it
// did.
func (s *Store) Import(ctx context.Context, tags []Tag) (imported, skipped int, err error) {
	for i, t := range tags {
		if err := validateEntry(t.Repo, t.Name); err != nil {
			return 0, 0, fmt.Errorf("import tags: entry %d: %w", i, err)
		}
		if err := ValidateDigest(t.Digest); err != nil {
			return 0, 0, fmt.Errorf("import tags: entry %d (%s:%s): %w", i, t.Repo, t.Name, err)
		}
	}
	for start := 0; start < len(tags); start += importBatch {
		batch := tags[start:min(start+importBatch, len(tags))]
		cmd := importCmd{Tags: make([]importTag, len(batch))}
		for i, t := range batch {
			cmd.Tags[i] = importTag{Repo: t.Repo, Tag: t.Name, Digest: t.Digest, Updated: t.Updated.UTC()}
		}
		res, err := s.apply(ctx, cmdImport, "import", cmd)
		if err != nil {
			return imported, skipped, fmt.Errorf("import tags: entries %d..%d of %d: %w", start, start+len(batch)-1, len(tags), err)
		}
		imported += res.imported
		skipped += res.skipped
	}
	return imported, skipped, nil
}

// Snapshot makes Raft take a snapshot now and compact its log (keeping TrailingLogs
// entries). It returns nil when there is nothing new to snapshot.
func (s *Store) Snapshot(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	err := s.wait(ctx, s.raft.Snapshot())
	if err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return fmt.Errorf("snapshot tag store: %w", err)
	}
	return nil
}

// Changes subscribes to the changes applied on this node with an index above from, in index
// order: puts (including imported tags) and deletes that removed a tag, for links as for tags
// (a link's Change.Tag is in the form Export gives). Any node serves it.
//
// Memory is bounded: the store keeps the last ChangeFeedRetain changes, and each subscriber
// reads them at its own pace through a small buffer. When the subscriber falls further behind
// than that, when from is older than what is retained, or when a snapshot from the leader
// replaces this node's state, the channel receives one Change with Op OpResync and is then
// closed: rebuild from Export and subscribe again from the index Export returns. The channel
// is also closed (without a marker) by the returned cancel function and by Close. Cancel is
// idempotent; call it when done so the subscription's goroutine ends.
func (s *Store) Changes(from uint64) (<-chan Change, func()) {
	return s.feed.subscribe(from)
}

// ReadIndex waits until this node's state reflects every write acknowledged before the call
// (as a linearizable read would) and returns the index it has applied. Only the leader
// answers; a follower returns a *NotLeaderError.
func (s *Store) ReadIndex(ctx context.Context) (uint64, error) {
	if err := s.beginRead(ctx, Linearizable); err != nil {
		return 0, fmt.Errorf("read index: %w", err)
	}
	return s.applied.Load(), nil
}

// AppliedIndex returns the last log index reflected in this node's state.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// Status returns this node's view of the cluster. Members is empty when the configuration
// cannot be read (the node is shut down). LastSnapshotIndex is that of the newest snapshot in
// Dir, taken here or installed from the leader.
func (s *Store) Status() ClusterStatus {
	st := ClusterStatus{
		ID:           s.cfg.NodeID,
		State:        strings.ToLower(s.raft.State().String()),
		Term:         s.raft.CurrentTerm(),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.applied.Load(),
		LastLogIndex: s.raft.LastIndex(),
	}
	if l, ok := s.Leader(); ok {
		st.LeaderID, st.LeaderAPIAddr = l.ID, l.APIAddr
	}
	if s.closed.Load() {
		return st
	}
	// Not raft.Stats: it waits on the configuration with no way out if Raft shuts down.
	if snaps, err := s.snaps.List(); err == nil && len(snaps) > 0 {
		st.LastSnapshotIndex = snaps[0].Index
	}
	members, err := s.members()
	if err != nil {
		s.log.Debug("read raft configuration for status", "err", err)
	}
	st.Members = members
	return st
}
