package tracker

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/pki"
)

// Defaults of Config.
const (
	DefaultListen           = "127.0.0.1:16100"
	DefaultAdminListen      = "127.0.0.1:16102"
	DefaultReplicas         = ring.DefaultReplicas
	DefaultPeerTTL          = 30 * time.Second
	DefaultAnnounceInterval = 3 * time.Second
	DefaultMaxPeers         = 16
	DefaultMetainfoCache    = 4096
	// MaxMaxPeers bounds max_peers: a handout is one JSON document per announce.
	MaxMaxPeers = 1024
)

// Config is a tracker's YAML configuration file.
//
//	listen: 127.0.0.1:16100          # HTTP API (--listen overrides)
//	admin_listen: 127.0.0.1:16102    # metrics, pprof, health and readiness
//	origins:                         # blob API addresses of every origin, as in their ring
//	  - 10.0.0.1:15000
//	  - 10.0.0.2:15000               # or dns:///origin.kraken.svc:15000, re-resolved
//	dns_interval: 30s                # how often dns:/// entries are resolved again
//	replicas: 3                      # owners per blob, as the origins' ring.replicas
//	peer_ttl: 30s                    # a peer silent for this long is forgotten
//	announce_interval: 3s            # how often peers are told to announce
//	max_peers: 16                    # peers per handout
//	metainfo_cache: 4096             # metainfo documents kept in memory
//	announce:
//	  allow_loopback: false          # accept loopback peer addresses: a cluster on one host
//	  nat_cidrs: [10.0.0.0/8]        # hosts here may announce any address here
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
	// Origins are the blob-API addresses (host:port) of all origins, spelled as in the origins'
	// ring.members so that the rendezvous order is the same, or dns:///NAME:PORT entries
	// (every address NAME resolves to), re-resolved every DNSInterval. Required.
	Origins []string `yaml:"origins"`
	// DNSInterval is how often the dns:/// entries of origins are resolved again; zero means
	// 30s.
	DNSInterval time.Duration `yaml:"dns_interval"`
	// Replicas is how many origins own each blob (the origins' ring.replicas); that many
	// reachable origins lead every handout.
	Replicas int `yaml:"replicas"`
	// PeerTTL is how long a peer stays in a blob's peer set after its last announce. It must be
	// longer than AnnounceInterval.
	PeerTTL time.Duration `yaml:"peer_ttl"`
	// AnnounceInterval is the interval returned to peers: how often they announce.
	AnnounceInterval time.Duration `yaml:"announce_interval"`
	// MaxPeers is the most peers one handout lists, origins included.
	MaxPeers int `yaml:"max_peers"`
	// MetainfoCache is how many metainfo documents the tracker keeps (least recently used are
	// dropped). A document takes about 67 bytes per piece: at most ~70 KiB for blobs up to
	// 16 GiB.
	MetainfoCache int `yaml:"metainfo_cache"`
	// Announce says which peer addresses the tracker accepts beyond its fixed rules.
	Announce AnnounceConfig `yaml:"announce"`
}

// AnnounceConfig is the tracker's announce section. Whatever it says, a peer address is an IP
// literal and a port, never a name, and never an address no host has (unspecified, multicast,
// link-local, broadcast, zoned); and a peer announces only an address of its own: the host its
// connection comes from, or, with TLS, an IP address its certificate names. An operator's
// certificate may announce any address.
type AnnounceConfig struct {
	// AllowLoopback accepts loopback peer addresses (127.0.0.0/8, ::1), from a loopback
	// connection. Only for a cluster whose every component runs on one host (krakenctl dev up,
	// test clusters): anywhere else a loopback address aims every agent at its own host.
	AllowLoopback bool `yaml:"allow_loopback"`
	// NATCIDRs are networks (CIDR) in which the address a tracker sees is not the host's own:
	// hosts behind NAT, or a load balancer or proxy in front of the tracker. A connection
	// from an address in any of them may announce any address in any of them. Behind NAT the
	// tracker cannot tell hosts apart, so among them one host may also replace another's
	// entry; TLS (with peer ids bound to certificates) still keeps certificates apart. List
	// the narrowest networks that hold both the addresses the tracker sees and those the
	// agents announce.
	NATCIDRs []string `yaml:"nat_cidrs"`
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
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.PeerTTL == 0 {
		c.PeerTTL = DefaultPeerTTL
	}
	if c.AnnounceInterval == 0 {
		c.AnnounceInterval = DefaultAnnounceInterval
	}
	if c.MaxPeers == 0 {
		c.MaxPeers = DefaultMaxPeers
	}
	if c.MetainfoCache == 0 {
		c.MetainfoCache = DefaultMetainfoCache
	}
}

// Validate reports every problem, each naming its key. It expects Defaults to have run.
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
	errs = append(errs, ring.CheckMembers("origins", c.Origins)...)
	if c.DNSInterval < 0 {
		bad("dns_interval: must not be negative")
	}
	if c.Replicas < 1 {
		bad("replicas: must be at least 1")
	}
	if c.AnnounceInterval <= 0 {
		bad("announce_interval: must be positive")
	}
	if c.PeerTTL <= 0 {
		bad("peer_ttl: must be positive")
	} else if c.PeerTTL <= c.AnnounceInterval {
		bad("peer_ttl: %v must be longer than announce_interval %v, or peers expire between announces", c.PeerTTL, c.AnnounceInterval)
	}
	if c.MaxPeers < 1 || c.MaxPeers > MaxMaxPeers {
		bad("max_peers: must be in 1..%d", MaxMaxPeers)
	}
	if c.MetainfoCache < 1 {
		bad("metainfo_cache: must be at least 1")
	}
	for _, s := range c.Announce.NATCIDRs {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			bad("announce.nat_cidrs: %q is not a network in CIDR notation (10.0.0.0/8, fd00::/8)", s)
		case p.Bits() < minNATBits:
			bad("announce.nat_cidrs: %q is wider than /%d: a few such networks hold every address and would let anyone announce any host; name the networks behind NAT", s, minNATBits)
		}
	}
	return errors.Join(errs...)
}

// minNATBits is the shortest prefix announce.nat_cidrs takes: 10.0.0.0/8 and fd00::/8 are the
// widest private networks, and 0.0.0.0/1 with 128.0.0.0/1 would be everything.
const minNATBits = 8

// ListenAddrs lists the addresses the tracker binds, for config.Check's overlap check.
func (c *Config) ListenAddrs() []config.ListenAddr {
	return []config.ListenAddr{{Key: "listen", Addr: c.Listen}, {Key: "admin_listen", Addr: c.AdminListen}}
}

// TLSConfig is the role's tls section, for the process that starts it.
func (c *Config) TLSConfig() pki.Config { return c.TLS }
