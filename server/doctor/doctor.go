package doctor

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"
)

// Status is the outcome of one check.
type Status string

// The statuses, in increasing order of trouble. Only FAIL makes Failed true: a warning is
// something to look at that does not break pulls now.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "FAIL"
)

// Result is one check's line: what was checked, its status, what was found and, unless it is
// ok, how to fix it.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Found  string `json:"found"`
	Fix    string `json:"fix,omitempty"`
}

// Config says what to check. Addresses are host:port, http(s) URLs or, in the lists of other
// components, dns:///NAME:PORT entries.
type Config struct {
	// Agent is the agent's registry and blob API (its listen address).
	Agent string
	// AgentAdmin is the agent's admin listener, whose /readyz is checked; empty checks the
	// /readyz of Agent instead.
	AgentAdmin string
	// Trackers, Origins and BuildIndex are the components the agent needs.
	Trackers, Origins, BuildIndex []string
	// StoreDir is the agent's store_dir and Capacity its capacity in bytes (0 unlimited,
	// negative unknown); empty StoreDir skips the disk check with a warning.
	StoreDir string
	Capacity int64
	// ContainerdDir is containerd's hosts directory (config_path); empty skips the check.
	ContainerdDir string
	// CAFile is the cluster CA; when set, the agent's certificate must chain to it. Empty
	// means the cluster runs in plain text.
	CAFile string
	// Sources says where the addresses came from, for the messages ("agent config
	// /etc/krakenctl/agent.yaml", "endpoints file ...").
	Sources string
}

// Resolver resolves DNS names: *net.Resolver, or a fake in tests.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Disk is what statfs says about a filesystem.
type Disk struct {
	Total, Free uint64
}

// Deps are the doctor's ways of looking at the world, replaced by fakes in tests.
type Deps struct {
	// Client talks to the components (with the node's certificate when the cluster uses TLS).
	Client *http.Client
	// Resolver resolves dns:/// entries.
	Resolver Resolver
	// Now is the local clock, compared with the origins'.
	Now func() time.Time
	// Statfs reports the filesystem holding a directory.
	Statfs func(dir string) (Disk, error)
	// DirSize sums the sizes of the files under a directory (the cache).
	DirSize func(dir string) (int64, error)
	// DialTLS opens a TLS connection with cfg to addr and completes the handshake.
	DialTLS func(ctx context.Context, addr string, cfg *tls.Config) (tls.ConnectionState, error)
}

// DefaultDeps are the real ones, with client for the components.
func DefaultDeps(client *http.Client) Deps {
	return Deps{
		Client:   client,
		Resolver: net.DefaultResolver,
		Now:      time.Now,
		Statfs:   statfs,
		DirSize:  dirSize,
		DialTLS:  dialTLS,
	}
}

// checkTimeout bounds each network check, so a black-holed address costs seconds, not the
// client's patience.
const checkTimeout = 5 * time.Second

// Run runs every check and returns their results in a fixed order.
func Run(ctx context.Context, cfg Config, d Deps) []Result {
	var out []Result
	out = append(out, checkAgent(ctx, cfg, d)...)
	// dns:/// entries are resolved once: the DNS check reports them, the reachability checks
	// use what they resolved to.
	dns := resolveAll(ctx, cfg, d)
	out = append(out, dns.result())
	out = append(out, checkComponents(ctx, "trackers", cfg.Trackers, dns.expand(cfg.Trackers), "trackers", cfg, d))
	origins := dns.expand(cfg.Origins)
	out = append(out, checkComponents(ctx, "origins", cfg.Origins, origins, "origins", cfg, d))
	if len(cfg.BuildIndex) > 0 {
		out = append(out, checkComponents(ctx, "build-index", cfg.BuildIndex, dns.expand(cfg.BuildIndex), "build_index", cfg, d))
	}
	out = append(out, checkClock(ctx, origins, d))
	out = append(out, checkDisk(cfg, d))
	out = append(out, checkContainerd(cfg))
	out = append(out, checkTLS(ctx, cfg, d))
	return out
}

// Failed reports whether any result is a FAIL.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}
