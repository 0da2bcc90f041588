package origin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/ring/members"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/cacheapi"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/pki"
)

// Defaults of Config.
const (
	DefaultListen      = "127.0.0.1:15000"
	DefaultAdminListen = "127.0.0.1:15002"
)

// Config is an origin's YAML configuration file.
type Config struct {
	// Listen is the address the blob API binds ("127.0.0.1:15000"). The --listen flag overrides it.
	Listen string `yaml:"listen"`
	// AdminListen is the address of the admin listener: /metrics, /debug/pprof, /health and
	// /readyz. It stays on loopback by default: pprof exposes the process's memory.
	AdminListen string `yaml:"admin_listen"`
	// TLS is the role's certificate, key and cluster CA: every listener speaks TLS and every
	// call to another component presents the certificate. Empty runs in plain text.
	// client_auth defaults to require.
	TLS pki.Config `yaml:"tls"`
	// Advertise is this origin's address in the ring, as the other origins and clients reach it.
	// Defaults to Listen. It must appear in ring.members when members are listed; with
	// dns:///NAME:PORT members it must be the "ip:port" the DNS answer gives for this origin
	// (on Kubernetes, the pod IP), and the origin counts itself a member whatever DNS says.
	Advertise string `yaml:"advertise"`
	// Store configures the local content-addressed store.
	Store StoreConfig `yaml:"store"`
	// Ring lists the origins and how many of them hold each blob. With no members the origin is
	// a ring of one.
	Ring ring.Config `yaml:"ring"`
	// Backends route namespaces to storage by regular expression; the first match wins. With
	// none, blobs live only in the origins' stores.
	Backends []backends.Config `yaml:"backends"`
	// Writeback configures the durable queue that copies blobs to storage and to other origins.
	Writeback WritebackConfig `yaml:"writeback"`
	// Peer configures the origin's side of the peer-to-peer swarm: it seeds every blob it holds.
	Peer PeerConfig `yaml:"peer"`
	// RepairInterval is how often the origin checks that the blobs it holds are on all of their
	// owners: those whose placement it has not confirmed since the ring last changed (members,
	// health or R), and new ones (it also checks what a change moved whenever a member changes
	// health, joins or leaves).
	RepairInterval time.Duration `yaml:"repair_interval"`
	// RepairFullInterval is how often it checks every blob whatever it confirmed, at most
	// RepairFullRate owner requests a second (besides the full check at start).
	RepairFullInterval time.Duration `yaml:"repair_full_interval"`
	RepairFullRate     int           `yaml:"repair_full_rate"`
	// RepairConfirmTTL is how long a periodic pass trusts that a blob's other owners hold it
	// once they said so; zero means an hour. A copy lost on another owner without a ring event
	// (its own garbage collection, cleanup, a manual rm) is asked about again within it.
	RepairConfirmTTL time.Duration `yaml:"repair_confirm_ttl"`
	// DNSInterval is how often the dns:///NAME:PORT entries of ring.members are resolved again
	// (the ring then follows the answer); zero means 30s.
	DNSInterval time.Duration `yaml:"dns_interval"`
	// NegativeCache remembers the backend's "not found" for a while, so repeated requests for a
	// digest nobody has cost one backend round trip.
	NegativeCache NegativeCacheConfig `yaml:"negative_cache"`
}

// NegativeCacheConfig bounds the origin's cache of digests its backend does not have. Only the
// backend's answer is cached: the origin's store and the other origins are always asked first,
// and a commit or replica of the digest on this origin forgets the entry at once.
type NegativeCacheConfig struct {
	// TTL is how long a "not found" is believed; zero means 10s, a negative value turns the
	// cache off. An object put into the backend by something other than the origins (an
	// upstream registry's new image) is found once the TTL has passed.
	TTL time.Duration `yaml:"ttl"`
	// Size is the most (namespace, digest) pairs remembered, least recently used first out;
	// zero means 10000.
	Size int `yaml:"size"`
}

// StoreConfig configures the local content-addressed store.
type StoreConfig struct {
	// Dir holds blobs, upload sessions and the durable queue.
	Dir string `yaml:"dir"`
	// Capacity bounds the bytes of blobs kept plus those being written, which are reserved when
	// a write starts; least recently used blobs are evicted then to make room, never one being
	// read or still waiting for write-back, and a write that cannot fit answers 507. A store over
	// it at startup is trimmed. Zero means unlimited.
	Capacity config.ByteSize `yaml:"capacity"`
	// MaxBlobSize rejects uploads larger than this with 413.
	MaxBlobSize config.ByteSize `yaml:"max_blob_size"`
	// UploadTTL removes upload sessions untouched for this long.
	UploadTTL time.Duration `yaml:"upload_ttl"`
	// Cleanup removes blobs on a timer besides capacity eviction: idle ones (tti) and old ones
	// (ttl), both off by default since the store is the cache in front of the backend, and,
	// above high_watermark percent of capacity (of the disk when capacity is 0), least recently
	// used ones down to low_watermark (90 and 80). Never a blob being read, seeded, or awaiting
	// write-back. See cacheapi.Config and docs/operations.md, "Cache and cleanup".
	Cleanup cacheapi.Config `yaml:"cleanup"`
}

// PeerConfig configures how the origin seeds blobs to agents over the swarm protocol.
type PeerConfig struct {
	// Listen is the address of the swarm port ("127.0.0.1:15001"); empty disables seeding.
	Listen string `yaml:"listen"`
	// Advertise is the swarm address trackers hand out; defaults to Listen.
	Advertise string `yaml:"advertise"`
	// EgressRate caps the bytes per second the origin sends to peers; 0 is unlimited.
	EgressRate config.ByteSize `yaml:"egress_rate"`
	// MaxConns bounds the agents served at once per blob; 0 means 1024.
	MaxConns int `yaml:"max_conns"`
	// Plain keeps the swarm port in plain TCP although TLS is configured (see the agent's
	// peer_plain): only for a network trusted by construction; agents must agree.
	Plain bool `yaml:"plain"`
	// MaxConnsPerAddr, MaxConnsPerHost, MaxHandshakes, IdleGrace and NoRequestTimeout are the
	// connection slot rules (docs/protocol.md, "Connection slots"); 0 means the scheduler's
	// defaults, and a negative NoRequestTimeout keeps request-less connections open.
	MaxConnsPerAddr  int           `yaml:"max_conns_per_addr"`
	MaxConnsPerHost  int           `yaml:"max_conns_per_host"`
	MaxHandshakes    int           `yaml:"max_handshakes"`
	IdleGrace        time.Duration `yaml:"idle_grace"`
	NoRequestTimeout time.Duration `yaml:"no_request_timeout"`
}

// MaxTouchHold bounds writeback.touch_hold: the smallest grace `krakenctl gc` accepts (one
// hour). A touch older than a run's cutoff (its start minus the grace) is long settled, its
// check done before the run began; the hold only has to cover touches racing a run's deletes.
const MaxTouchHold = time.Hour

// WritebackConfig configures retries of write-back and replication.
type WritebackConfig struct {
	// Workers is how many tasks run at once.
	Workers int `yaml:"workers"`
	// RetryInitial is the first retry delay; it doubles on each failure up to RetryMax.
	RetryInitial time.Duration `yaml:"retry_initial"`
	RetryMax     time.Duration `yaml:"retry_max"`
	// ReplicaDelay delays the write-back a replica schedules for a blob it received from another
	// origin: the receiving origin writes it back first, and the replica's task (which finds
	// the blob already stored and finishes) only matters if that origin is lost.
	ReplicaDelay time.Duration `yaml:"replica_delay"`
	// TouchHold is how long the origin holds a blob a GC touch (a manifest push) touched, and
	// when it then checks that the blob's backend object exists, writing it back from the held
	// copy if not: a touch renews it. An origin deciding about a backend object gives up when
	// it cannot delete it within half its own TouchHold of asking the members (docs/gc.md,
	// "The protocol"), so every touch taken after a member answered is checked after the
	// delete. Every origin of a ring should have the same value (the deciding one's must not be
	// larger than any member's). Below MaxTouchHold.
	TouchHold time.Duration `yaml:"touch_hold"`
	// Timeout bounds one attempt.
	Timeout time.Duration `yaml:"timeout"`
	// MissingGrace is how long a write-back whose blob is not in the store keeps retrying
	// before it is dropped. A commit queues its write-back before the blob becomes visible, so
	// a slow commit (an eviction, a stalled fsync) must not lose it; a blob still missing this
	// long after its task was queued never arrived (its commit failed, or the process died).
	MissingGrace time.Duration `yaml:"missing_grace"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	c.TLS.Defaults()
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.Advertise == "" {
		c.Advertise = c.Listen
	}
	if len(c.Ring.Members) == 0 {
		c.Ring.Members = []string{c.Advertise}
	}
	c.Ring.Defaults()
	if c.Store.MaxBlobSize == 0 {
		c.Store.MaxBlobSize = 64 << 30
	}
	if c.Store.UploadTTL == 0 {
		c.Store.UploadTTL = 24 * time.Hour
	}
	c.Store.Cleanup.OriginDefaults()
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
	if w.ReplicaDelay == 0 {
		w.ReplicaDelay = 2 * time.Minute
	}
	if w.TouchHold == 0 {
		w.TouchHold = 5 * time.Minute
	}
	if w.Timeout == 0 {
		w.Timeout = 30 * time.Minute
	}
	if w.MissingGrace == 0 {
		w.MissingGrace = 10 * time.Minute
	}
	if c.Peer.Advertise == "" {
		c.Peer.Advertise = c.Peer.Listen
	}
	if c.RepairFullInterval == 0 {
		c.RepairFullInterval = 24 * time.Hour
	}
	if c.RepairConfirmTTL == 0 {
		c.RepairConfirmTTL = time.Hour
	}
	if c.RepairFullRate == 0 {
		c.RepairFullRate = 200
	}
	if c.RepairInterval == 0 {
		c.RepairInterval = 10 * time.Minute
	}
	if c.NegativeCache.TTL == 0 {
		c.NegativeCache.TTL = 10 * time.Second
	}
	if c.NegativeCache.Size == 0 {
		c.NegativeCache.Size = 10000
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
		if a.Key == "peer.listen" && a.Addr == "" {
			continue // the swarm port is off
		}
		if err := config.CheckHostPort(a.Addr); err != nil {
			bad("%s: %w", a.Key, err)
		}
	}
	if err := ring.CheckMember(c.Advertise); err != nil {
		bad("advertise: %v", err)
	}
	if c.Peer.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Peer.Advertise); err != nil {
			bad("peer.advertise: %q is not host:port: %v", c.Peer.Advertise, err)
		}
	}
	if c.Peer.EgressRate < 0 {
		bad("peer.egress_rate: must not be negative")
	}
	if c.Peer.MaxConns < 0 {
		bad("peer.max_conns: must not be negative")
	}
	if c.Peer.MaxConnsPerAddr < 0 || c.Peer.MaxConnsPerHost < 0 || c.Peer.MaxHandshakes < 0 {
		bad("peer.max_conns_per_addr, peer.max_conns_per_host, peer.max_handshakes: must not be negative")
	}
	if c.Peer.IdleGrace < 0 {
		bad("peer.idle_grace: must not be negative")
	}
	if c.Store.Dir == "" {
		bad("store.dir: required")
	}
	if c.NegativeCache.Size < 0 {
		bad("negative_cache.size: must not be negative")
	}
	if c.Store.Capacity < 0 {
		bad("store.capacity: must not be negative")
	}
	if c.Store.MaxBlobSize < 0 {
		bad("store.max_blob_size: must not be negative")
	}
	if c.Store.UploadTTL < 0 {
		bad("store.upload_ttl: must not be negative")
	}
	for _, err := range c.Store.Cleanup.Problems("store.cleanup.") {
		bad("%w", err)
	}
	if c.DNSInterval < 0 {
		bad("dns_interval: must not be negative")
	}
	if err := c.Ring.Validate(); err != nil {
		errs = append(errs, err)
	}
	found := members.HasDNS(c.Ring.Members) // checked against the answers as they come
	for _, m := range c.Ring.Members {
		found = found || m == c.Advertise
	}
	if !found {
		bad("advertise: %q is not one of ring.members %v", c.Advertise, c.Ring.Members)
	}
	if members.HasDNS(c.Ring.Members) {
		// DNS answers are addresses and the ring compares members as written: a name here
		// would put this origin in its own ring twice, under its name and its address.
		if host, _, err := net.SplitHostPort(c.Advertise); err == nil {
			if _, perr := netip.ParseAddr(host); perr != nil {
				bad("advertise: %q must be an IP address when ring.members are found by DNS (the answers are addresses, compared as written)", c.Advertise)
			}
		}
	}
	for i := range c.Backends {
		if err := c.Backends[i].Validate(); err != nil {
			bad("backends[%d]: %w", i, err)
		}
	}
	w := c.Writeback
	if w.Workers < 1 {
		bad("writeback.workers: must be at least 1")
	}
	if w.RetryInitial < 0 || w.RetryMax < w.RetryInitial {
		bad("writeback.retry_initial/retry_max: want 0 < retry_initial <= retry_max")
	}
	if w.ReplicaDelay < 0 {
		bad("writeback.replica_delay: must not be negative")
	}
	if w.TouchHold < 0 || w.TouchHold >= MaxTouchHold {
		bad("writeback.touch_hold: want more than 0 and less than %s", MaxTouchHold)
	}
	if w.Timeout <= 0 {
		bad("writeback.timeout: must be positive")
	}
	if w.MissingGrace < 0 {
		bad("writeback.missing_grace: must not be negative")
	}
	if c.RepairFullInterval < 0 {
		bad("repair_full_interval: must not be negative")
	}
	if c.RepairConfirmTTL < 0 {
		bad("repair_confirm_ttl: must not be negative")
	}
	if c.RepairFullRate < 0 {
		bad("repair_full_rate: must not be negative")
	}
	if c.RepairInterval < 0 {
		bad("repair_interval: must not be negative")
	}
	return errors.Join(errs...)
}

// ListenAddrs lists the addresses the origin binds, for config.Check's overlap check. The
// swarm port is off when peer.listen is empty.
func (c *Config) ListenAddrs() []config.ListenAddr {
	return []config.ListenAddr{
		{Key: "listen", Addr: c.Listen},
		{Key: "peer.listen", Addr: c.Peer.Listen},
		{Key: "admin_listen", Addr: c.AdminListen},
	}
}

// TLSConfig is the role's tls section, for the process that starts it.
func (c *Config) TLSConfig() pki.Config { return c.TLS }
