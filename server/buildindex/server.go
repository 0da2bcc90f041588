package buildindex

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/ring/members"
	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/tagstore"
)

// Store is the replicated tag store a Server fronts; *tagstore.Store implements it, and tests
// pass in-memory fakes. Its methods are safe for concurrent use.
//
// Writes (Put, Delete, Import, Join, Remove) and Linearizable reads succeed only on the leader;
// elsewhere they fail with an error wrapping *tagstore.NotLeaderError (errors.Is
// tagstore.ErrNotLeader) without having changed anything, which the Server answers by
// forwarding the request to the leader. A missing tag or member wraps tagstore.ErrNotFound, a
// bad name or member tagstore.ErrInvalid, a member already present tagstore.ErrExists, a write
// that could not be queued tagstore.ErrUnavailable, a write of unknown outcome
// tagstore.ErrIndeterminate and a closed store tagstore.ErrClosed.
type Store interface {
	// Put points repo:tag at d and returns the stored value.
	Put(ctx context.Context, repo, tag string, d digest.Digest) (tagstore.Tag, error)
	// Delete removes repo:tag and returns the value it had.
	Delete(ctx context.Context, repo, tag string) (tagstore.Tag, error)
	// Get returns repo:tag's value.
	Get(ctx context.Context, repo, tag string, c tagstore.Consistency) (tagstore.Tag, error)
	// Tags returns up to n tags of repo after last, in lexical order, never links; ErrNotFound
	// for a repository without tags.
	Tags(ctx context.Context, repo, last string, n int, c tagstore.Consistency) ([]string, error)
	// TagsOf returns up to n tags of repo after last that point at d, in lexical order, reading
	// those only (none is an empty list, not an error).
	TagsOf(ctx context.Context, repo string, d digest.Digest, last string, n int, c tagstore.Consistency) ([]string, error)
	// Repositories returns up to n names of repositories with tags or links after last, in
	// lexical order.
	Repositories(ctx context.Context, last string, n int, c tagstore.Consistency) ([]string, error)
	// Export returns every tag and link (links in stored form: Tag.IsLink) and the log index
	// the listing reflects.
	Export(ctx context.Context, c tagstore.Consistency) ([]tagstore.Tag, uint64, error)
	// Import adds tags and links (in Export's form) that are absent or older and counts what
	// it imported and skipped.
	Import(ctx context.Context, tags []tagstore.Tag) (imported, skipped int, err error)
	// Join adds a member to the Raft group; Remove takes one out, refusing (wrapping
	// tagstore.ErrQuorum) a removal that would leave no quorum of live voters unless forced.
	Join(ctx context.Context, m tagstore.Member) error
	Remove(ctx context.Context, id string, opts tagstore.RemoveOptions) error
	// Status is this node's view of the group.
	Status() tagstore.ClusterStatus
	// IsLeader reports whether this node believes it leads; Leader names the leader it knows.
	IsLeader() bool
	Leader() (tagstore.Member, bool)
	// AppliedIndex is the last log index reflected in this node's state.
	AppliedIndex() uint64
	// ReadIndex (leader only, else *tagstore.NotLeaderError) confirms leadership and returns an
	// index that every write acknowledged before the call is at or below.
	ReadIndex(ctx context.Context) (uint64, error)
	// WaitApplied returns once this node has applied index, or with ctx's error.
	WaitApplied(ctx context.Context, index uint64) error
	// WaitForLeader returns once a leader is known, or with ctx's error.
	WaitForLeader(ctx context.Context) error
	// PutLink points link name of repo at d and returns the stored value; DeleteLink removes
	// it and returns the value it had; GetLink reads it. Links (tagstore.Link) follow the
	// rules of tags: the same leader, consistency and error contracts.
	PutLink(ctx context.Context, repo, name string, d digest.Digest) (tagstore.Link, error)
	DeleteLink(ctx context.Context, repo, name string) (tagstore.Link, error)
	GetLink(ctx context.Context, repo, name string, c tagstore.Consistency) (tagstore.Link, error)
	// Links returns every link of repo whose name starts with prefix, in order of name.
	Links(ctx context.Context, repo, prefix string, c tagstore.Consistency) ([]tagstore.Link, error)
	// Changes streams the tag and link changes applied after index from, in index order, until the
	// returned cancel is called or the store closes (then the channel is closed). A subscriber
	// that fell behind gets one tagstore.OpResync change, then the channel closes.
	Changes(from uint64) (<-chan tagstore.Change, func())
}

// Deps are a build-index node's collaborators. Its Listener serves the HTTP API and its
// HTTPClient talks to origins and to the other build-index nodes.
type Deps struct {
	role.Deps
	// RaftListener carries Raft traffic; required unless Store is set.
	RaftListener net.Listener
	// Store replaces the Raft store opened from Config.Raft (tests pass fakes). The Server
	// does not close an injected store.
	Store Store
	// Backend overrides the backends built from Config.Backends (tests inject faults with it).
	Backend backend.Backend
	// Hostname names this host for raft.bootstrap_ordinal; nil means os.Hostname.
	Hostname func() (string, error)
}

// Server is one build-index node. Build it with New and run it with Run (or release it with
// Close).
type Server struct {
	base  *role.Base
	cfg   Config
	log   *slog.Logger
	ln    net.Listener
	store Store
	hc    *http.Client
	// readIndexes shares read-index requests to the leader between concurrent follower reads.
	readIndexes readIndexBatcher
	content     *contentChecker // nil when verify_content is false
	origins     *client.Cluster // the origins, following DNS when they come from it
	join        *members.List   // nil without join
	backend     backend.Backend // nil when no backend is configured
	wb          *writeback      // nil without a backend
	repl        *replicator     // nil without replication rules
	upstream    *upstreamTags   // nil without a backend or with upstream_tags.disabled
	metrics     *metrics

	leaderWait   time.Duration // how long a request waits for a leader; leaderWait
	stopping     chan struct{} // closed when the HTTP server starts shutting down
	stoppingOnce sync.Once
}

// New validates cfg, opens the node's Raft store and write-back queue and builds its
// backends. It starts nothing but the Raft store (which takes part in elections from here on);
// the caller must then Run or Close the Server.
func New(cfg Config, deps Deps) (*Server, error) {
	b, err := role.Open("build-index", &cfg, deps.Deps, deps.RaftListener)
	if err != nil {
		return nil, err
	}
	if deps.Store == nil && deps.RaftListener == nil {
		return nil, b.Fail(errors.New("no raft listener"))
	}
	first := false // ordinal 0 of bootstrap_ordinal: bootstraps unless a group answers at join
	if cfg.Raft.BootstrapOrdinal {
		if first, err = byOrdinal(&cfg, deps.Hostname); err != nil {
			return nil, b.Fail(err)
		}
	}
	s := &Server{
		base:       b,
		cfg:        cfg,
		log:        b.With("node_id", cfg.Raft.NodeID),
		ln:         deps.Listener,
		leaderWait: leaderWait,
		stopping:   make(chan struct{}),
	}
	// A forwarded write or a content check may wait for an origin to pull from storage.
	s.hc = b.Client(deps.HTTPClient, httpserve.ClientOptions{ResponseHeaderTimeout: 5 * time.Minute, MaxIdleConnsPerHost: 64})
	if s.metrics, err = newMetrics(deps.Registerer); err != nil {
		return nil, b.Fail(err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, b.Fail(fmt.Errorf("create dir: %w", err))
	}

	if s.backend, err = backends.ResolveWith(context.Background(), deps.Backend, cfg.Backends, backends.Deps{Registerer: deps.Registerer}); err != nil {
		return nil, b.Fail(err)
	}
	s.upstream = newUpstreamTags(s.backend, cfg.UpstreamTags, s.metrics)
	origins, err := b.Members("origins", cfg.Origins, role.MembersOptions{Interval: cfg.DNSInterval},
		func(addrs []string) { s.origins.SetAddrs(addrs) })
	if err != nil {
		return nil, b.Fail(err)
	}
	s.origins = client.NewCluster(origins.Addrs(), s.hc)
	if cfg.verify() {
		s.content = &contentChecker{
			cluster:     s.origins,
			maxManifest: int64(cfg.MaxManifestSize),
			metrics:     s.metrics,
		}
	}

	if deps.Store != nil {
		s.store = deps.Store
	} else {
		td := tagstore.Deps{Listener: deps.RaftListener, Logger: s.log, Registerer: deps.Registerer}
		if p := b.TLS(); p != nil {
			// With TLS, Raft is mutual TLS whatever client_auth says for the API: the node's
			// certificate must name raft.node_id in group build-index, and so must its peers'.
			// A reload must keep it so: a rotated certificate that does not is refused.
			if err := p.Require(func(leaf *x509.Certificate) error { return tagstore.CheckNodeCertificate(cfg.Raft.NodeID, leaf) }); err != nil {
				return nil, b.Fail(fmt.Errorf("raft TLS: %w", err))
			}
			td.ServerTLS, td.ClientTLS = p.ServerConfigFor(pki.ClientAuthRequire), raftClientTLS(p)
		}
		if first && len(cfg.Join) > 0 {
			if s.join, err = b.Members("join", cfg.Join, role.MembersOptions{Interval: cfg.DNSInterval, AllowEmpty: true}, nil); err != nil {
				return nil, b.Fail(err)
			}
			if _, err := os.Stat(filepath.Join(cfg.Raft.Dir, "raft.db")); errors.Is(err, fs.ErrNotExist) {
				// No state: a new group, or pod 0 back without its volume while the group
				// lives on. Only a clear "nobody has a group" may bootstrap.
				cfg.Raft.Bootstrap = s.mayBootstrap()
			}
		}
		if first {
			b.StartedAttrs("bootstrap", cfg.Raft.Bootstrap)
		}
		st, err := tagstore.Open(cfg.Raft, td)
		if err != nil {
			return nil, b.Fail(err)
		}
		s.store = st
		b.OnClose("tag store", st.Close)
	}
	if s.content != nil {
		s.content.store = s.store
	}

	if s.backend != nil {
		s.wb, err = newWriteback(s, filepath.Join(cfg.Dir, "writeback"), deps.Registerer)
		if err != nil {
			return nil, b.Fail(err)
		}
		b.OnClose("write-back queue", s.wb.close)
		b.Go(s.wb.run)
	}
	if len(cfg.Replication) > 0 {
		s.repl, err = newReplicator(s, filepath.Join(cfg.Dir, "replication"), deps.Registerer)
		if err != nil {
			return nil, b.Fail(err)
		}
		b.OnClose("replication queues", s.repl.close)
		b.Go(s.repl.run)
	}
	if len(cfg.Join) > 0 {
		// Nothing may answer yet (the first pods of a StatefulSet): joinCluster retries, and
		// reads the list afresh each round.
		if s.join == nil {
			if s.join, err = b.Members("join", cfg.Join, role.MembersOptions{Interval: cfg.DNSInterval, AllowEmpty: true}, nil); err != nil {
				return nil, b.Fail(err)
			}
		}
		b.Go(func(ctx context.Context) error { s.joinCluster(ctx); return nil })
	}

	mux := http.NewServeMux()
	s.routes(mux)
	admin.MountHealth(mux, s.ready)
	srv := b.Serve(deps.Listener, httpserve.Instrument(mux, s.metrics.requests), httpserve.ServerOptions{})
	srv.RegisterOnShutdown(s.stop)
	b.ServeAdmin(deps.AdminListener, deps.Gatherer, s.ready)
	// Registered last, so it runs first: open change streams would hold up the rest.
	b.OnClose("change streams", func() error { s.stop(); return nil })
	b.StartedAttrs("addr", s.Addr(), "raft_addr", cfg.Raft.Advertise, "advertise", cfg.Advertise)
	return s, nil
}

// Addr returns the address the HTTP API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully (requests in flight first, then the
// server's loops) and closes what the server opened; it returns the first failure, if any. It
// may be called once.
func (s *Server) Run(ctx context.Context) error { return s.base.Run(ctx) }

// Close releases a server that was built but will not be Run: its listeners and what it
// opened. After Run has started, cancel Run's context instead; Close then does nothing.
func (s *Server) Close() error { return s.base.Close() }

// Store returns the node's tag store: a benchmark times reads inside it, without HTTP.
func (s *Server) Store() Store { return s.store }

// Status returns this node's view of the Raft group.
func (s *Server) Status() api.ClusterStatus { return toAPIStatus(s.store.Status()) }

// stop ends the change streams, which would otherwise hold up a graceful shutdown.
func (s *Server) stop() { s.stoppingOnce.Do(func() { close(s.stopping) }) }

// ready: the node knows a leader and where to forward to it, so it can serve linearizable
// reads and writes.
func (s *Server) ready(ctx context.Context) error {
	l, ok := s.store.Leader()
	if !ok {
		return fmt.Errorf("no leader known (node %s)", s.cfg.Raft.NodeID)
	}
	if l.ID != s.cfg.Raft.NodeID && l.APIAddr == "" {
		return fmt.Errorf("the API address of the leader %s is not known yet", l.ID)
	}
	return nil
}

// hasMembers reports whether the node has a Raft configuration (it bootstrapped or joined).
func (s *Server) hasMembers() bool { return len(s.store.Status().Members) > 0 }

// byOrdinal applies raft.bootstrap_ordinal to cfg and reports whether this is ordinal 0: it
// bootstraps (unless New finds a group already answering at join), any other joins through
// cfg.Join, which it then requires.
func byOrdinal(cfg *Config, hostname func() (string, error)) (bool, error) {
	if hostname == nil {
		hostname = os.Hostname
	}
	host, err := hostname()
	if err != nil {
		return false, fmt.Errorf("raft.bootstrap_ordinal: read the host name: %w", err)
	}
	n, err := tagstore.Ordinal(host)
	if err != nil {
		return false, fmt.Errorf("raft.bootstrap_ordinal: %w", err)
	}
	cfg.Raft.BootstrapOrdinal = false // resolved: the store sees plain bootstrap
	if n == 0 {
		cfg.Raft.Bootstrap = true
		return true, nil
	}
	if len(cfg.Join) == 0 {
		return false, fmt.Errorf("join: required with raft.bootstrap_ordinal on %q (ordinal %d joins the group that ordinal 0 bootstrapped)", host, n)
	}
	return false, nil
}

// groupProbeWindow bounds how long an empty ordinal 0 waits for every other join address to
// say whether it belongs to a group.
var groupProbeWindow = 2 * time.Minute

// mayBootstrap decides whether an empty ordinal 0 bootstraps: only when every other address the
// join list names has answered and none belongs to a group (a new StatefulSet, whose other pods
// have not joined anything yet). One that belongs to a group means pod 0 came back without its
// volume: it joins that group instead of founding a second one under the same name. When some
// address does not answer within groupProbeWindow, it does not bootstrap either: it joins
// through join: as soon as a group answers, which is recoverable, where two groups are not.
func (s *Server) mayBootstrap() bool {
	ctx, cancel := context.WithTimeout(context.Background(), groupProbeWindow)
	defer cancel()
	for {
		_, addrs := s.join.Refresh(ctx)
		via, silent := s.probeGroups(ctx, addrs)
		switch {
		case via != "":
			s.log.Warn("a build-index group already answers at join: joining it instead of bootstrapping a new one", "via", via)
			return false
		case len(silent) == 0:
			return true
		}
		select {
		case <-ctx.Done():
			s.log.Warn("cannot tell whether a build-index group exists (join addresses did not answer): not bootstrapping; joining through join: once one answers", "silent", silent)
			return false
		case <-time.After(2 * time.Second):
		}
	}
}

// probeGroups asks every address but this node's own for its cluster status: via is one that
// belongs to a group, silent those that did not answer.
func (s *Server) probeGroups(ctx context.Context, addrs []string) (via string, silent []string) {
	for _, addr := range addrs {
		if s.isSelf(addr) {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := client.NewBuildIndex(addr, s.hc).ClusterStatus(actx)
		cancel()
		switch {
		case err != nil:
			silent = append(silent, addr)
		case len(st.Members) > 0:
			return addr, nil
		}
	}
	return "", silent
}

// isSelf reports whether addr is this node: its advertised address, or one of this host's own
// IP addresses at the port it listens on (a DNS answer names pods by IP while a node may
// advertise a name).
func (s *Server) isSelf(addr string) bool {
	if addr == s.cfg.Advertise {
		return true
	}
	host, port, err := net.SplitHostPort(addr)
	_, lport, lerr := net.SplitHostPort(s.cfg.Listen)
	ip, perr := netip.ParseAddr(host)
	if err != nil || lerr != nil || perr != nil || port != lport {
		return false
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range ifaddrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == ip.Unmap() {
			return true
		}
	}
	return false
}

// joinCluster asks the join addresses to add this node, when it has no Raft configuration yet,
// until one of them does or ctx ends.
func (s *Server) joinCluster(ctx context.Context) {
	if s.hasMembers() {
		return // Already part of a group: the Raft state says who the others are.
	}
	self := api.Member{ID: s.cfg.Raft.NodeID, RaftAddr: s.cfg.Raft.Advertise, APIAddr: s.cfg.Advertise}
	delay := 200 * time.Millisecond
	for {
		for _, addr := range s.join.Addrs() {
			if s.isSelf(addr) {
				continue // a DNS answer lists this node too
			}
			jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := client.NewBuildIndex(addr, s.hc).Join(jctx, self)
			cancel()
			if err == nil {
				s.log.Info("joined the cluster", "via", addr)
				return
			}
			if ctx.Err() != nil {
				return
			}
			if re := (*errcode.Error)(nil); errors.As(err, &re) && re.Status == http.StatusConflict {
				s.log.Error("join refused; remove the old member or change this node's id or address", "via", addr, "err", err)
				return
			}
			s.log.Warn("join the cluster", "via", addr, "err", err)
		}
		if s.hasMembers() {
			return // Added meanwhile (a join that timed out on our side but succeeded).
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// raftClientTLS is the TLS configuration the Raft transport dials peers with: the role's
// current certificate, and the peer's chain verified against the CA as it is at each
// handshake (pki's ClientConfig fixes the CA when it is made, and the transport keeps one
// configuration). tagstore adds its own check of the peer's name and group after this one.
func raftClientTLS(p *pki.Provider) *tls.Config {
	cfg := p.ClientConfig()
	cfg.RootCAs = nil
	cfg.InsecureSkipVerify = true // verified in VerifyConnection, against the current CA
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the raft peer presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: p.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("raft peer certificate %q not verified by the cluster CA: %w", cs.PeerCertificates[0].Subject.CommonName, err)
		}
		return nil
	}
	return cfg
}

// Interface guards
var _ Store = (*tagstore.Store)(nil)
