package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/ring/members"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/cacheapi"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
)

// Defaults of Config.
const (
	DefaultListen      = api.DefaultAgentAddr
	DefaultPeerListen  = "127.0.0.1:16001"
	DefaultAdminListen = "127.0.0.1:16002"
	DefaultSeedTime    = scheduler.DefaultSeedTime
	DefaultMaxConns    = scheduler.DefaultMaxConns
	DefaultPipeline    = config.ByteSize(scheduler.DefaultPipelineBytes)
)

// Values of AuthConfig.Loopback.
const (
	// LoopbackOpen serves callers on loopback without credentials (the default).
	LoopbackOpen = "open"
	// LoopbackRequired applies auth to every caller, on loopback too.
	LoopbackRequired = "required"
)

// Config is an agent's YAML configuration file.
//
//	listen: 127.0.0.1:16000           # blob API for local clients (--listen overrides)
//	admin_listen: 127.0.0.1:16002     # metrics, pprof, health and readiness
//	peer_listen: 0.0.0.0:16001        # swarm connections from other hosts (--peer-listen overrides)
//	peer_advertise: 10.0.0.7:16001    # where other hosts dial this agent; default peer_listen
//	api_advertise: 10.0.0.7:16000     # where the operator's tools reach listen; default listen
//	peer_plain: false                 # true: plain-TCP swarm although tls is set (trusted networks)
//	trackers: [10.0.0.2:15003, 10.0.0.3:15003]   # the same list on every agent
//	store_dir: /var/lib/krakenctl/agent
//	capacity: 50GiB                   # blobs kept for seeding and reuse; 0 is unlimited
//	cleanup: {interval: 5m, tti: 6h, ttl: -1s, high_watermark: 90, low_watermark: 80}
//	egress_rate: 100MiB               # bytes per second sent to peers; 0 is unlimited
//	ingress_rate: 100MiB              # bytes per second received from peers; 0 is unlimited
//	seed_time: 10m                    # how long a finished blob is seeded after its last upload
//	max_conns: 20                     # peer connections per blob
//	max_conns_per_addr: 16            # of them opened by peers at one IP address
//	max_conns_per_host: 1024          # opened by peers at one IP address, all blobs
//	max_handshakes: 256               # accepted connections whose handshake is awaited
//	idle_grace: 10s                   # unused this long, a connection yields to a newcomer
//	no_request_timeout: 30s           # nothing requested either way this long: closed
//	pipeline: 4MiB                    # request bytes kept outstanding per connection
//	build_index: [10.0.0.4:15100, 10.0.0.5:15100]  # registry API: tags, sha512, referrers
//	auth:                             # absent: anyone who reaches listen may pull (see AuthConfig)
//	  htpasswd_file: /etc/krakenctl/htpasswd        # the proxy's
//	  rules: [{repositories: ["**"], users: ["*"], actions: [pull]}]
//	  token: {secret_file: /etc/krakenctl/token-secret}   # the proxy's, so its tokens are good here
//	  loopback: open                  # open (default) or required
type Config struct {
	// Listen is the address the blob API binds. Without Auth it serves anyone who can reach
	// it, so keep it on loopback unless the host's clients need it elsewhere (the agent warns
	// at start when it does not).
	Listen string `yaml:"listen"`
	// AdminListen is the address of the admin listener: /metrics, /debug/pprof, /health and
	// /readyz. It stays on loopback by default: pprof exposes the process's memory.
	AdminListen string `yaml:"admin_listen"`
	// TLS is the role's certificate, key and cluster CA: every listener speaks TLS and every
	// call to another component presents the certificate. Empty runs in plain text.
	// client_auth defaults to verify_if_given.
	TLS pki.Config `yaml:"tls"`
	// PeerListen is the address that accepts swarm connections from other hosts.
	PeerListen string `yaml:"peer_listen"`
	// PeerAdvertise is the ip:port other hosts dial to reach PeerListen, announced to the
	// trackers: an IP address, not a name, since peers never resolve names a tracker hands out
	// (docs/protocol.md §6); ${HOST_IP} from the environment fills it in a DaemonSet. It
	// defaults to the listener's address, so it is required when PeerListen binds every
	// interface (0.0.0.0 or [::]).
	PeerAdvertise string `yaml:"peer_advertise"`
	// APIAdvertise is the ip:port at which other hosts (the operator's `krakenctl top` and
	// `swarm inspect`) reach Listen, announced to the trackers so that their swarm lists lead
	// to this agent's /swarm/ statistics: an IP address, not a name, as PeerAdvertise. It
	// defaults to Listen's address when that is an IP other than 0.0.0.0 or [::]; otherwise
	// none is announced. A tracker keeps it only when it is this host's own address (by the
	// rule of PeerAdvertise; loopback only in a cluster on one host), and drops it otherwise
	// without refusing the announce.
	APIAdvertise string `yaml:"api_advertise"`
	// PeerPlain keeps the swarm's connections in plain TCP although TLS is configured: only for
	// a network trusted by construction, where the CPU TLS spends on every byte of every blob
	// is better saved. Every agent and origin of a cluster must agree (a plain peer cannot
	// talk to one that speaks TLS). Without TLS the swarm is plain anyway.
	PeerPlain bool `yaml:"peer_plain"`
	// Trackers are the trackers' addresses (host:port or http(s) URLs, or dns:///NAME:PORT:
	// every address NAME resolves to, re-resolved every dns_interval). Every agent must list
	// the same trackers, in any order: they share the digest space by rendezvous hashing.
	Trackers []string `yaml:"trackers"`
	// DNSInterval is how often the dns:/// entries of trackers and build_index are resolved
	// again; zero means 30s.
	DNSInterval time.Duration `yaml:"dns_interval"`
	// StoreDir holds downloaded blobs and partial downloads, which resume after a restart.
	StoreDir string `yaml:"store_dir"`
	// Capacity bounds the bytes of blobs kept; least recently used blobs are evicted, never one
	// being read. Zero means unlimited.
	Capacity config.ByteSize `yaml:"capacity"`
	// Cleanup removes blobs on a timer besides capacity eviction: idle ones (tti, 6h by
	// default: the host's container runtime keeps its own copy of what it pulled, and the
	// agent's only serves peers), old ones (ttl, off by default) and, above high_watermark
	// percent of capacity (of the disk when capacity is 0), least recently used ones down to
	// low_watermark (90 and 80). Never a blob being read, seeded or downloaded. See
	// cacheapi.Config and docs/operations.md, "Cache and cleanup".
	Cleanup cacheapi.Config `yaml:"cleanup"`
	// EgressRate and IngressRate limit the host's swarm traffic in bytes per second; zero
	// means unlimited.
	EgressRate  config.ByteSize `yaml:"egress_rate"`
	IngressRate config.ByteSize `yaml:"ingress_rate"`
	// SeedTime is how long a finished blob keeps being offered to peers after its last upload.
	SeedTime time.Duration `yaml:"seed_time"`
	// MaxConns bounds the peer connections of each blob.
	MaxConns int `yaml:"max_conns"`
	// MaxConnsPerAddr, MaxConnsPerHost, MaxHandshakes, IdleGrace and NoRequestTimeout are the
	// connection slot rules (docs/protocol.md, "Connection slots"); 0 means the scheduler's
	// defaults, and a negative NoRequestTimeout keeps request-less connections open.
	MaxConnsPerAddr  int           `yaml:"max_conns_per_addr"`
	MaxConnsPerHost  int           `yaml:"max_conns_per_host"`
	MaxHandshakes    int           `yaml:"max_handshakes"`
	IdleGrace        time.Duration `yaml:"idle_grace"`
	NoRequestTimeout time.Duration `yaml:"no_request_timeout"`
	// Pipeline is how many bytes of piece requests each connection keeps outstanding; raise it
	// on links with a large bandwidth-delay product.
	Pipeline config.ByteSize `yaml:"pipeline"`
	// BuildIndex are build-index API addresses (host:port or http(s) URLs, or
	// dns:///NAME:PORT), tried in order:
	// the registry API (/v2/) resolves tags, sha512 digests and referrers there, and lists
	// tags and repositories. A node that cannot be reached or answers 5xx passes the request
	// to the next. Without any, the registry API still serves manifests and blobs by sha256
	// digest, and answers every request that needs the build-index with 503 UNAVAILABLE
	// naming this key.
	BuildIndex []string `yaml:"build_index"`
	// Auth authenticates and authorizes the callers of the API on Listen, as the proxy does
	// its clients (see AuthConfig). Nil (no auth: key) serves anyone who can reach Listen.
	Auth *AuthConfig `yaml:"auth"`
}

// AuthConfig is the agent's auth section: the proxy's (server/auth's Config, the same keys)
// and Loopback. Pointed at the proxy's htpasswd file, rules and token secret, it admits the
// same users to the same repositories, and a token the proxy issued is good here: set
// token.secret (and token.previous_secret during a rotation) to the proxy's, and leave
// token.issuer and token.service at their defaults or set them as on the proxy, since a token
// names both and is checked against them. The agent has a token endpoint of its own too (the
// realm of its Bearer challenge), so clients that log in to the agent need nothing else.
//
// The registry API (/v2/) then answers by the rules, for pulls only: writes stay refused (403
// for a caller the rules refuse, else 405 UNSUPPORTED). The blob API (/namespace/.../blobs/)
// and the swarm's statistics (/swarm/) name no repository a rule could be asked about, so they
// serve only admins: a certificate or a password of the admin group. /health and /readyz stay
// open, for load balancers.
//
// Loopback is whether auth applies to callers on loopback (127.0.0.0/8, ::1):
//
//   - open (the default): they are served as without auth. The host's container runtime
//     pulls from its agent on loopback, with no credentials in the common setup (a registry
//     mirror), and turning auth on for remote pulls must not break it. Anyone who can run a
//     process on the host can then pull anything through the agent, as without auth.
//   - required: every caller needs credentials, on loopback too: for hosts shared by users
//     who must not read each other's images (give the runtime credentials or the admin
//     certificate). Set it also when a reverse proxy on the host forwards remote requests to
//     the agent: they arrive from loopback.
type AuthConfig struct {
	auth.Config `yaml:",inline"`
	// Loopback is open or required (see AuthConfig).
	Loopback string `yaml:"loopback"`
}

// Defaults fills unset fields.
func (c *AuthConfig) Defaults() {
	c.Config.Defaults()
	if c.Loopback == "" {
		c.Loopback = LoopbackOpen
	}
}

// Validate reports every problem, each naming its key relative to the auth section, as
// auth.Config.Validate does. It expects Defaults to have run.
func (c *AuthConfig) Validate() error { return errors.Join(c.Problems()...) }

// Problems is Validate's list, one error per problem.
func (c *AuthConfig) Problems() []error {
	errs := c.Config.Problems()
	if c.Loopback != LoopbackOpen && c.Loopback != LoopbackRequired {
		errs = append(errs, fmt.Errorf("loopback: %q is neither %s nor %s", c.Loopback, LoopbackOpen, LoopbackRequired))
	}
	return errs
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	c.TLS.DefaultsTo(pki.ClientAuthVerifyIfGiven)
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.PeerListen == "" {
		c.PeerListen = DefaultPeerListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.SeedTime == 0 {
		c.SeedTime = DefaultSeedTime
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.Pipeline == 0 {
		c.Pipeline = DefaultPipeline
	}
	c.Cleanup.AgentDefaults()
	if c.Auth != nil {
		c.Auth.Defaults()
	}
}

// Validate reports every problem, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, err := range c.TLS.Problems() {
		bad("tls.%w", err)
	}
	for _, a := range c.ListenAddrs() {
		if err := config.CheckHostPort(a.Addr); err != nil {
			bad("%s: %w", a.Key, err)
		}
	}
	switch {
	case c.PeerAdvertise != "":
		if err := checkDialable(c.PeerAdvertise, false); err != nil {
			bad("peer_advertise: %v", err)
		} else if _, err := announce.ParseAddr(c.PeerAdvertise); err != nil {
			bad("peer_advertise: %v", err)
		}
	default:
		if host, _, err := net.SplitHostPort(c.PeerListen); err == nil && !specifiedHost(host) {
			bad("peer_advertise: required when peer_listen %q binds every interface: name the ip:port other hosts dial", c.PeerListen)
		}
	}
	if err := announce.CheckAPI(c.APIAdvertise); err != nil {
		bad("api_advertise: %v", err)
	}
	if len(c.Trackers) == 0 {
		bad("trackers: required: list the trackers' addresses (host:port)")
	} else if static := slices.DeleteFunc(slices.Clone(c.Trackers), members.IsDNS); len(static) > 0 {
		if _, err := announce.NewClient(static, nil); err != nil {
			bad("trackers: %v", err)
		}
	}
	for _, err := range members.Check("trackers", c.Trackers) {
		bad("%w", err)
	}
	for _, err := range members.Check("build_index", c.BuildIndex) {
		bad("%w", err)
	}
	if c.DNSInterval < 0 {
		bad("dns_interval: must not be negative")
	}
	if c.StoreDir == "" {
		bad("store_dir: required")
	}
	if c.Capacity < 0 {
		bad("capacity: must not be negative")
	}
	for _, err := range c.Cleanup.Problems("cleanup.") {
		bad("%w", err)
	}
	if c.EgressRate < 0 {
		bad("egress_rate: must not be negative")
	}
	if c.IngressRate < 0 {
		bad("ingress_rate: must not be negative")
	}
	if c.SeedTime < 0 {
		bad("seed_time: must not be negative")
	}
	if c.MaxConns < 1 {
		bad("max_conns: must be at least 1")
	}
	if c.MaxConnsPerAddr < 0 || c.MaxConnsPerHost < 0 || c.MaxHandshakes < 0 {
		bad("max_conns_per_addr, max_conns_per_host, max_handshakes: must not be negative")
	}
	if c.IdleGrace < 0 {
		bad("idle_grace: must not be negative")
	}
	if c.Pipeline < 1 {
		bad("pipeline: must be at least 1 byte")
	}
	seen := make(map[string]bool, len(c.BuildIndex))
	for _, a := range c.BuildIndex {
		if members.IsDNS(a) {
			continue // checked above
		}
		key, _, err := ring.ParseEndpoint(a)
		switch {
		case err != nil:
			bad("build_index: %v", err)
		case seen[key]:
			bad("build_index: %s listed twice", key)
		}
		seen[key] = true
	}
	if c.Auth != nil {
		for _, err := range c.Auth.Problems() {
			bad("auth.%w", err)
		}
		// Without a build-index the agent serves a sha256 digest under any repository name, so
		// a rule on one repository would open every blob.
		if len(c.BuildIndex) == 0 {
			bad("auth: needs build_index: without it the agent cannot check which repositories hold a blob, so rules on repositories would not hold")
		}
	}
	return errors.Join(errs...)
}

// ListenAddrs lists the addresses the agent binds, for config.Check's overlap check.
func (c *Config) ListenAddrs() []config.ListenAddr {
	return []config.ListenAddr{
		{Key: "listen", Addr: c.Listen},
		{Key: "peer_listen", Addr: c.PeerListen},
		{Key: "admin_listen", Addr: c.AdminListen},
	}
}

// specifiedHost reports whether a listen host names one address (not "", 0.0.0.0 or ::).
func specifiedHost(host string) bool {
	if host == "" {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err != nil || !ip.IsUnspecified()
}

// checkDialable reports whether addr is a host:port other hosts can dial; with anyPort a zero
// port is allowed (a listen address that the kernel completes).
func checkDialable(addr string, anyPort bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && !anyPort) {
		return fmt.Errorf("%q: port must be a number in 1..65535", addr)
	}
	if !specifiedHost(host) {
		return fmt.Errorf("%q: name a host other hosts can dial, not every interface", addr)
	}
	return nil
}

// TLSConfig is the role's tls section, for the process that starts it.
func (c *Config) TLSConfig() pki.Config { return c.TLS }
