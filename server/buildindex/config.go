package buildindex

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/ring/members"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/tagstore"
)

// Defaults of Config.
const (
	DefaultListen        = "127.0.0.1:15100"
	DefaultRaftListen    = "127.0.0.1:15101"
	DefaultAdminListen   = "127.0.0.1:15102"
	DefaultMaxBody       = 64 << 10
	DefaultTagsNamespace = "krakenctl-tags"
	// DefaultMaxManifestSize bounds the manifests fetched for the content check; larger objects
	// are checked for existence only (the OCI spec lets registries refuse manifests over 4 MiB).
	DefaultMaxManifestSize = 4 << 20
)

// Config is a build-index node's YAML configuration file.
//
//	listen: 127.0.0.1:15100          # HTTP API (--listen overrides)
//	advertise: 127.0.0.1:15100       # API address other nodes forward to; default listen
//	raft_listen: 127.0.0.1:15101     # Raft traffic
//	admin_listen: 127.0.0.1:15102    # metrics, pprof, health and readiness
//	dir: /var/lib/krakenctl/build-index
//	raft:
//	  node_id: bi-1                  # default: from advertise, "127.0.0.1-15100"
//	  bootstrap: true                # on the first node of a new cluster only
//	origins: [127.0.0.1:15000]       # content checks
//	backends:                        # tag write-back and restore
//	  - namespace: ".*"
//	    fs: {root: /var/lib/krakenctl/storage}
//	join: [127.0.0.1:16010]          # existing nodes to ask to add this one
type Config struct {
	// Listen is the address the HTTP API binds. The --listen flag overrides it.
	Listen string `yaml:"listen"`
	// AdminListen is the address of the admin listener: /metrics, /debug/pprof, /health and
	// /readyz. It stays on loopback by default: pprof exposes the process's memory.
	AdminListen string `yaml:"admin_listen"`
	// TLS is the role's certificate, key and cluster CA: every listener speaks TLS and every
	// call to another component presents the certificate. Empty runs in plain text.
	// client_auth defaults to require.
	TLS pki.Config `yaml:"tls"`
	// Advertise is the API address as other nodes and clients reach it; the leader's is where
	// followers forward writes. Defaults to Listen.
	Advertise string `yaml:"advertise"`
	// RaftListen is the address the Raft transport binds. Raft.Advertise defaults to it.
	RaftListen string `yaml:"raft_listen"`
	// Dir holds the node's state: raft/ (the Raft log, stable store and snapshots, unless
	// raft.dir says otherwise) and the write-back queue.
	Dir string `yaml:"dir"`
	// Raft configures the Raft store. raft.api_addr defaults to advertise and must equal it;
	// raft.dir defaults to <dir>/raft; raft.node_id defaults to advertise with ":" turned into
	// "-"; raft.advertise defaults to raft_listen.
	Raft tagstore.Config `yaml:"raft"`
	// Origins are origin addresses (host:port) of the cluster holding the tagged content, or
	// dns:///NAME:PORT entries (every address NAME resolves to), re-resolved every
	// dns_interval.
	Origins []string `yaml:"origins"`
	// VerifyContent, true unless set to false, accepts a tag only when its digest exists in the
	// origin cluster under namespace = repository and, for manifests it can parse, so does
	// everything the manifest references.
	VerifyContent *bool `yaml:"verify_content"`
	// MaxBody bounds a request body (a tag PUT, a member join).
	MaxBody config.ByteSize `yaml:"max_body"`
	// MaxManifestSize bounds the manifests fetched for the content check.
	MaxManifestSize config.ByteSize `yaml:"max_manifest_size"`
	// Backends route the tag write-back to storage (the route matching TagsNamespace is used).
	// With none, tags live only in the Raft group and restore is unavailable.
	Backends []backends.Config `yaml:"backends"`
	// TagsNamespace is the backend namespace the tags are written to.
	TagsNamespace string `yaml:"tags_namespace"`
	// Writeback tunes the durable queue that writes tags to the backend.
	Writeback WritebackConfig `yaml:"writeback"`
	// Replication sends every tag put whose repository matches a rule, with all the content
	// its manifest graph references, to the remote clusters the rule names.
	Replication []ReplicationRule `yaml:"replication"`
	// ReplicationQueue tunes the durable queue kept for each remote.
	ReplicationQueue ReplicationQueueConfig `yaml:"replication_queue"`
	// UpstreamTags resolves tags of registry-backed repositories upstream (UpstreamTagsConfig).
	UpstreamTags UpstreamTagsConfig `yaml:"upstream_tags"`
	// Join lists API addresses of existing nodes (host:port, or dns:///NAME:PORT: every
	// address NAME resolves to, this node's own skipped). A node started without Raft state
	// and without raft.bootstrap asks them (through the leader) to add it to the group,
	// retrying until one does. With raft.bootstrap_ordinal, ordinal 0 asks it first whether a
	// group already exists (it joins that group rather than bootstrap a second one).
	Join []string `yaml:"join"`
	// DNSInterval is how often the dns:/// entries of origins and join are resolved again;
	// zero means 30s.
	DNSInterval time.Duration `yaml:"dns_interval"`
}

// WritebackConfig tunes the tag write-back queue.
type WritebackConfig struct {
	// Workers is how many write-back tasks run at once.
	Workers int `yaml:"workers"`
	// RetryInitial is the first retry delay; it doubles on each failure up to RetryMax.
	RetryInitial time.Duration `yaml:"retry_initial"`
	RetryMax     time.Duration `yaml:"retry_max"`
	// Timeout bounds one attempt of one task.
	Timeout time.Duration `yaml:"timeout"`
	// FollowerDelay delays the write-back tasks a follower queues, so the leader's copy
	// usually lands first and the follower's task only finds it there.
	FollowerDelay time.Duration `yaml:"follower_delay"`
}

// UpstreamTagsConfig is the upstream_tags section: tags of a repository whose namespace the
// backends route to an upstream registry (a `registry:` route) resolve there when the Raft
// store does not have them, as Kraken's registry_tag backend does, so a cluster can sit in
// front of an existing registry with nothing pushed through its proxy.
//
// Such answers are not written into Raft: the upstream owns those tags, and a tag pushed
// here wins over the upstream's. They are therefore not linearizable: an answer is reused for
// TTL, so a tag moved upstream reaches pulls here within TTL. Only digests are cached; a tag
// the upstream does not know, and any failure, is asked again at the next read. Blob and
// manifest links of such a repository resolve there the same way, and its tag list is the
// union of both.
//
//	upstream_tags:
//	  disabled: false
//	  ttl: 30s
type UpstreamTagsConfig struct {
	// Disabled keeps every tag read inside the Raft store, even for registry-backed
	// repositories.
	Disabled bool `yaml:"disabled"`
	// TTL is how long an upstream answer is reused; DefaultUpstreamTagTTL when zero.
	TTL time.Duration `yaml:"ttl"`
}

// ReplicationRule sends the tags of matching repositories to remote clusters.
type ReplicationRule struct {
	// Repository is a regular expression (RE2, unanchored: write ^...$ to match whole names)
	// a repository must match.
	Repository string `yaml:"repository"`
	// To lists the remote clusters, each as an endpoints file (the file `dev up` writes and
	// commands read: origins, build_index and, for a TLS cluster, the CA, certificate and key
	// to present). The file is read on every attempt, so it can change or appear later; its
	// base name without extension names the remote in status, logs and metrics.
	To []string `yaml:"to"`
}

// ReplicationQueueConfig tunes the replication queues, one per remote.
type ReplicationQueueConfig struct {
	// Workers is how many tags are sent to one remote at once.
	Workers int `yaml:"workers"`
	// Parallel is how many blobs of one tag are sent at once.
	Parallel int `yaml:"parallel"`
	// RetryInitial is the first retry delay; it doubles on each failure up to RetryMax.
	RetryInitial time.Duration `yaml:"retry_initial"`
	RetryMax     time.Duration `yaml:"retry_max"`
	// Timeout bounds one attempt of one tag (its whole graph).
	Timeout time.Duration `yaml:"timeout"`
	// FollowerDelay is when a follower first checks an item. Followers never send: each
	// keeps its items until the remote holds the value (one read of the remote's tag), so
	// that a follower that becomes the leader sends what the old leader had not.
	FollowerDelay time.Duration `yaml:"follower_delay"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	c.TLS.Defaults()
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Advertise == "" {
		c.Advertise = c.Listen
	}
	if c.RaftListen == "" {
		c.RaftListen = DefaultRaftListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.Raft.Advertise == "" {
		c.Raft.Advertise = c.RaftListen
	}
	if c.Raft.APIAddr == "" {
		c.Raft.APIAddr = c.Advertise
	}
	if c.Raft.NodeID == "" {
		c.Raft.NodeID = nodeIDFrom(c.Advertise)
	}
	if c.Raft.Dir == "" && c.Dir != "" {
		c.Raft.Dir = filepath.Join(c.Dir, "raft")
	}
	c.Raft.Defaults()
	if c.VerifyContent == nil {
		v := true
		c.VerifyContent = &v
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.MaxManifestSize == 0 {
		c.MaxManifestSize = DefaultMaxManifestSize
	}
	if c.TagsNamespace == "" {
		c.TagsNamespace = DefaultTagsNamespace
	}
	c.UpstreamTags.defaults()
	w := &c.Writeback
	if w.Workers == 0 {
		w.Workers = 4
	}
	if w.RetryInitial == 0 {
		w.RetryInitial = time.Second
	}
	if w.RetryMax == 0 {
		w.RetryMax = 5 * time.Minute
	}
	if w.Timeout == 0 {
		w.Timeout = 5 * time.Minute
	}
	if w.FollowerDelay == 0 {
		w.FollowerDelay = 10 * time.Second
	}
	rq := &c.ReplicationQueue
	if rq.Workers == 0 {
		rq.Workers = 2
	}
	if rq.Parallel == 0 {
		rq.Parallel = 4
	}
	if rq.RetryInitial == 0 {
		rq.RetryInitial = 2 * time.Second
	}
	if rq.RetryMax == 0 {
		rq.RetryMax = 5 * time.Minute
	}
	if rq.Timeout == 0 {
		rq.Timeout = time.Hour
	}
	if rq.FollowerDelay == 0 {
		rq.FollowerDelay = 30 * time.Second
	}
}

// nodeIDFrom derives a node ID from an address: "10.0.0.1:16000" becomes "10.0.0.1-16000".
func nodeIDFrom(addr string) string {
	return strings.NewReplacer(":", "-", "[", "", "]", "").Replace(addr)
}

// ListenAddrs lists the addresses the node binds, for config.Check's overlap check.
func (c *Config) ListenAddrs() []config.ListenAddr {
	return []config.ListenAddr{
		{Key: "listen", Addr: c.Listen},
		{Key: "raft_listen", Addr: c.RaftListen},
		{Key: "admin_listen", Addr: c.AdminListen},
	}
}

// verify reports whether content checks are on (the default).
func (c *Config) verify() bool { return c.VerifyContent == nil || *c.VerifyContent }

// Validate reports every problem, each naming its key. It expects Defaults to have run.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, err := range c.TLS.Problems() {
		bad("tls.%w", err)
	}
	hostPort := func(key, v string) {
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad("%s: %q is not host:port: %v", key, v, err)
		}
	}
	for _, a := range c.ListenAddrs() {
		if err := config.CheckHostPort(a.Addr); err != nil {
			bad("%s: %w", a.Key, err)
		}
	}
	hostPort("advertise", c.Advertise)
	if c.Dir == "" {
		bad("dir: required")
	}
	if c.Raft.APIAddr != c.Advertise {
		bad("raft.api_addr: %q differs from advertise %q (leave it unset)", c.Raft.APIAddr, c.Advertise)
	}
	for _, err := range config.Problems(c.Raft.Validate()) {
		bad("raft: %w", err)
	}
	for i, o := range c.Origins {
		if !members.IsDNS(o) {
			hostPort(fmt.Sprintf("origins[%d]", i), o)
		}
	}
	for _, err := range members.Check("origins", c.Origins) {
		bad("%w", err)
	}
	for _, err := range members.Check("join", c.Join) {
		bad("%w", err)
	}
	if c.DNSInterval < 0 {
		bad("dns_interval: must not be negative")
	}
	if c.verify() && len(c.Origins) == 0 {
		bad("origins: required while verify_content is true (tags are checked against the origin cluster)")
	}
	if c.MaxBody < 0 {
		bad("max_body: must be positive")
	}
	if c.MaxManifestSize < 0 {
		bad("max_manifest_size: must be positive")
	}
	for i := range c.Backends {
		if err := c.Backends[i].Validate(); err != nil {
			bad("backends[%d]: %w", i, err)
		}
	}
	if err := backend.CheckNamespace(c.TagsNamespace); err != nil {
		bad("tags_namespace: %w", err)
	}
	errs = append(errs, c.UpstreamTags.problems(c)...)
	w := c.Writeback
	if w.Workers < 1 {
		bad("writeback.workers: must be at least 1")
	}
	if w.RetryInitial < 0 || w.RetryMax < w.RetryInitial {
		bad("writeback.retry_initial/retry_max: want 0 < retry_initial <= retry_max")
	}
	if w.Timeout <= 0 {
		bad("writeback.timeout: must be positive")
	}
	if w.FollowerDelay < 0 {
		bad("writeback.follower_delay: must not be negative")
	}
	c.validateReplication(bad)
	// Every node of a StatefulSet has the same join list, its own name among the others (a
	// node skips itself when it joins, as it skips itself in a DNS answer); a list that names
	// nothing but this node joins nobody.
	others := 0
	for i, j := range c.Join {
		if members.IsDNS(j) {
			others++
			continue
		}
		hostPort(fmt.Sprintf("join[%d]", i), j)
		if j != c.Advertise {
			others++
		}
	}
	if len(c.Join) > 0 && others == 0 {
		bad("join: %q is this node's own address and names no other node", c.Join)
	}
	if len(c.Join) > 0 && c.Raft.Bootstrap {
		bad("join: a node that bootstraps a new cluster joins nobody (unset raft.bootstrap or join)")
	}
	return errors.Join(errs...)
}

// TLSConfig is the role's tls section, for the process that starts it.
func (c *Config) TLSConfig() pki.Config { return c.TLS }

// validateReplication checks the rules and the queue settings.
func (c *Config) validateReplication(bad func(string, ...any)) {
	names := map[string]string{} // remote name -> endpoints file
	for i, r := range c.Replication {
		if r.Repository == "" {
			bad("replication[%d].repository: required (a regular expression; \".*\" for every repository)", i)
		} else if _, err := regexp.Compile(r.Repository); err != nil {
			bad("replication[%d].repository: %q is not a regular expression: %v", i, r.Repository, err)
		}
		if len(r.To) == 0 {
			bad("replication[%d].to: name at least one remote cluster's endpoints file", i)
		}
		for j, f := range r.To {
			if strings.TrimSpace(f) == "" {
				bad("replication[%d].to[%d]: empty path", i, j)
				continue
			}
			name := RemoteName(f)
			if prev, ok := names[name]; ok && prev != filepath.Clean(f) {
				bad("replication[%d].to[%d]: %s and %s would both be remote %q (remotes are named by file name)", i, j, prev, f, name)
			}
			names[name] = filepath.Clean(f)
		}
	}
	q := c.ReplicationQueue
	if q.Workers < 1 || q.Parallel < 1 {
		bad("replication_queue.workers/parallel: must be at least 1")
	}
	if q.RetryInitial < 0 || q.RetryMax < q.RetryInitial {
		bad("replication_queue.retry_initial/retry_max: retry_initial must not be negative nor exceed retry_max")
	}
	if q.Timeout <= 0 {
		bad("replication_queue.timeout: must be positive")
	}
	if q.FollowerDelay < 0 {
		bad("replication_queue.follower_delay: must not be negative")
	}
}

// RemoteName names the remote cluster of an endpoints file: its base name without extension.
func RemoteName(endpointsFile string) string {
	base := filepath.Base(filepath.Clean(endpointsFile))
	return strings.TrimSuffix(base, filepath.Ext(base))
}
