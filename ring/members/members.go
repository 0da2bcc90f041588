// Package members expands a role's configured address list, where an entry may be a static
// "host:port" (or URL) or a DNS entry "dns:///NAME:PORT", into the current list of addresses,
// and keeps it current.
//
// A DNS entry means "every address NAME resolves to (A and AAAA), at PORT": on Kubernetes, NAME
// is a headless Service and the answer is the set of its pods. A List re-resolves its DNS
// entries every interval (DefaultInterval unless configured) and reports a changed answer to
// the role, which rebuilds its ring or client. A failed lookup keeps that entry's last good
// answer (logged, and counted in krakenctl_members_lookups_total{result="failure"}), so a DNS
// outage never empties a role's view of the cluster. Answers are sorted, de-duplicated and
// bounded by MaxAddrs.
//
// The package never resolves anything by itself: the Resolver is injected (net.DefaultResolver
// when none is), so tests answer from a fake or an in-process DNS server.
package members

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	// Scheme prefixes a DNS entry: "dns:///NAME:PORT" (an empty authority, as in gRPC's
	// resolver syntax).
	Scheme = "dns:///"
	// DefaultInterval is how often DNS entries are re-resolved when a role does not say.
	DefaultInterval = 30 * time.Second
	// MaxAddrs bounds a List: a DNS answer that would grow it past this many addresses is cut
	// (the lowest addresses in sort order are kept, so every process keeps the same ones).
	MaxAddrs = 1024
	// lookupTimeout bounds one entry's lookup.
	lookupTimeout = 10 * time.Second
)

// ErrInvalidEntry is wrapped by the errors Check and ParseDNS return.
var ErrInvalidEntry = errors.New("invalid member entry")

// Resolver looks up a name's addresses. *net.Resolver implements it. LookupNetIP is called
// with network "ip" (A and AAAA); it must return promptly once ctx is done and be safe for
// concurrent use.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// IsDNS reports whether entry is meant as a DNS entry: it starts with "dns:". Such an entry
// is either exactly of the form "dns:///NAME:PORT" or refused by ParseDNS, never read as a
// static address.
func IsDNS(entry string) bool { return strings.HasPrefix(entry, "dns:") }

// HasDNS reports whether any of entries is a DNS entry.
func HasDNS(entries []string) bool { return slices.ContainsFunc(entries, IsDNS) }

// ParseDNS splits a DNS entry "dns:///NAME:PORT" into NAME and PORT. NAME must be a DNS name
// (letters, digits, '-' and '.', labels of 1..63 characters, 253 at most, an optional final
// dot); PORT a decimal number in 1..65535 without a leading zero. Anything else (an
// authority, a path, a query, an IP address instead of a name, a missing port) is an error
// wrapping ErrInvalidEntry that quotes entry.
func ParseDNS(entry string) (name string, port uint16, err error) {
	bad := func(why string) (string, uint16, error) {
		return "", 0, fmt.Errorf("%w: %q: %s (want %sNAME:PORT)", ErrInvalidEntry, entry, why, Scheme)
	}
	rest, ok := strings.CutPrefix(entry, Scheme)
	if !ok {
		return bad("a DNS entry must start with " + Scheme + " (empty authority)")
	}
	if strings.ContainsAny(rest, "/?#@[] \t\r\n\x00") {
		return bad("NAME:PORT must not hold a path, query, user, brackets or spaces")
	}
	host, p, found := strings.Cut(rest, ":")
	if !found {
		return bad("missing :PORT")
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || p[0] == '0' || p[0] == '+' {
		return bad(fmt.Sprintf("port %q is not a number in 1..65535", p))
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return bad("NAME is an IP address; list it as a static host:port instead")
	}
	if why := checkName(host); why != "" {
		return bad(why)
	}
	return host, uint16(n), nil
}

// checkName returns why host is not a DNS name, or "".
func checkName(host string) string {
	name := strings.TrimSuffix(host, ".")
	if name == "" {
		return "empty NAME"
	}
	if len(name) > 253 {
		return "NAME is longer than 253 characters"
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Sprintf("NAME has a label of %d characters, want 1..63", len(label))
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Sprintf("NAME label %q starts or ends with '-'", label)
		}
		for _, c := range label {
			if !nameChar(c) {
				return fmt.Sprintf("NAME label %q has character %q", label, c)
			}
		}
	}
	return ""
}

// nameChar reports whether c may appear in a label: letters, digits, '-' and '_' (service
// labels such as _http).
func nameChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// Check validates the DNS entries among entries, configured under key, and returns one error
// per bad one naming key[i]. Static entries are left to the caller's own checks.
func Check(key string, entries []string) []error {
	var errs []error
	for i, e := range entries {
		if !IsDNS(e) {
			continue
		}
		if _, _, err := ParseDNS(e); err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", key, i, err))
		}
	}
	return errs
}

// Deps are a List's collaborators; the zero value is usable.
type Deps struct {
	// Resolver answers DNS entries; nil means net.DefaultResolver.
	Resolver Resolver
	// Logger receives changes and failed lookups; nil discards them.
	Logger *slog.Logger
	// Registerer, when set, receives krakenctl_members_addresses{list} and
	// krakenctl_members_lookups_total{list,result}. Several Lists may share one.
	Registerer prometheus.Registerer
	// Interval is the time between two resolutions; zero means DefaultInterval.
	Interval time.Duration
	// AllowEmpty lets New succeed when nothing resolves: the role starts, and Run keeps asking
	// (sooner while the list is empty) until the DNS names have addresses.
	AllowEmpty bool
}

// List is a role's member list for one config key. Build it with New; call Run to keep it
// current. Its methods are safe for concurrent use.
type List struct {
	key      string
	entries  []string
	resolver Resolver
	log      *slog.Logger
	interval time.Duration
	addrsG   prometheus.Gauge
	okC      prometheus.Counter
	failC    prometheus.Counter

	mu    sync.Mutex
	last  map[int][]string // entry index -> its last good answer
	addrs []string
}

// New checks entries (configured under key) and resolves them once. It fails when an entry is
// not valid, or when the list comes out empty (no DNS entry answered and there is no static
// one) unless deps.AllowEmpty: a role cannot start without any address of what it talks to,
// and a restart will try again. A DNS entry that fails while others answer is logged and left to Run.
func New(ctx context.Context, key string, entries []string, deps Deps) (*List, error) {
	if errs := Check(key, entries); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	l := &List{
		key:      key,
		entries:  slices.Clone(entries),
		resolver: deps.Resolver,
		log:      deps.Logger,
		interval: deps.Interval,
		last:     map[int][]string{},
	}
	if l.resolver == nil {
		l.resolver = net.DefaultResolver
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.interval <= 0 {
		l.interval = DefaultInterval
	}
	if err := l.metrics(deps.Registerer); err != nil {
		return nil, err
	}
	addrs, errs := l.resolve(ctx)
	if len(addrs) == 0 && len(entries) > 0 && !deps.AllowEmpty {
		return nil, fmt.Errorf("resolve %s: no address: %w", key, errors.Join(errs...))
	}
	l.addrs = addrs
	l.addrsG.Set(float64(len(addrs)))
	return l, nil
}

func (l *List) metrics(reg prometheus.Registerer) error {
	addrs := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "krakenctl_members_addresses",
		Help: "Addresses in a member list (config key), static entries and DNS answers together.",
	}, []string{"list"})
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "krakenctl_members_lookups_total",
		Help: "DNS lookups of member-list entries, by result (success or failure; a failure keeps the last good answer).",
	}, []string{"list", "result"})
	if reg != nil {
		var err error
		if addrs, err = registerOrExisting(reg, addrs); err != nil {
			return err
		}
		if lookups, err = registerOrExisting(reg, lookups); err != nil {
			return err
		}
	}
	l.addrsG = addrs.WithLabelValues(l.key)
	l.okC = lookups.WithLabelValues(l.key, "success")
	l.failC = lookups.WithLabelValues(l.key, "failure")
	return nil
}

// registerOrExisting registers c, or returns the collector already registered under its
// name, so that every List of a role shares one vector.
func registerOrExisting[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("register member list metrics: %w", err)
}

// Key returns the config key the list was built for.
func (l *List) Key() string { return l.key }

// Dynamic reports whether the list has DNS entries, so that Run has something to do.
func (l *List) Dynamic() bool { return HasDNS(l.entries) }

// Addrs returns the current addresses: the static entries and every DNS entry's latest good
// answer ("ip:port", IPv6 bracketed), sorted and de-duplicated, at most MaxAddrs. The caller
// owns the slice.
func (l *List) Addrs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.addrs)
}

// Run re-resolves the DNS entries every interval until ctx ends, and calls onChange (from
// Run's goroutine, one call at a time) with the new addresses whenever they differ from the
// previous ones. It returns nil at once for a list without DNS entries.
//
// After the start, and after an answer that added addresses, it asks again sooner: 0.5 s,
// doubling up to the interval. Pods behind a Service come up one after another (a
// StatefulSet's, a rollout's), so a role that started while only some were published likely
// has more coming; without this it would rank with a partial set for a whole interval. An
// answer that only drops or swaps addresses does not (a DNS server that returns a random
// subset would otherwise reset the ring twice a second). While the list is empty it asks at
// least every emptyRetryMax.
func (l *List) Run(ctx context.Context, onChange func([]string)) error {
	if !l.Dynamic() {
		return nil
	}
	retry := settleRetry
	next := func() time.Duration {
		w := min(retry, l.interval)
		retry = min(2*retry, l.interval)
		if len(l.Addrs()) == 0 {
			w = min(w, emptyRetryMax)
		}
		return w
	}
	t := time.NewTimer(next())
	defer t.Stop()
	prev := l.Addrs()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if changed, addrs := l.Refresh(ctx); changed {
			if slices.ContainsFunc(addrs, func(a string) bool { return !slices.Contains(prev, a) }) {
				retry = settleRetry
			}
			prev = addrs
			if onChange != nil {
				onChange(addrs)
			}
		}
		t.Reset(next())
	}
}

// settleRetry is Run's first wait after the start and after an answer that added addresses;
// emptyRetryMax its longest wait while the list has no address.
const (
	settleRetry   = 500 * time.Millisecond
	emptyRetryMax = 5 * time.Second
)

// Refresh resolves the DNS entries once and reports whether the addresses changed, and what
// they are now. Run calls it every interval; tests call it to step.
func (l *List) Refresh(ctx context.Context) (bool, []string) {
	addrs, _ := l.resolve(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(addrs) == 0 || slices.Equal(addrs, l.addrs) {
		// An empty answer is never published: it can only come from every lookup failing
		// before any succeeded, and an empty view helps no one.
		return false, slices.Clone(l.addrs)
	}
	l.log.Info("member list changed", "list", l.key, "addrs", addrs, "was", l.addrs)
	l.addrs = addrs
	l.addrsG.Set(float64(len(addrs)))
	return true, slices.Clone(addrs)
}

// resolve expands every entry, a failed DNS entry to its last good answer (sorted), and returns
// the de-duplicated, bounded union in the entries' order, and the lookup errors.
func (l *List) resolve(ctx context.Context) ([]string, []error) {
	var out []string
	var errs []error
	for i, e := range l.entries {
		if !IsDNS(e) {
			out = append(out, e)
			continue
		}
		name, port, _ := ParseDNS(e) // checked in New
		got, err := l.lookup(ctx, name, port)
		l.mu.Lock()
		if err != nil {
			l.failC.Inc()
			errs = append(errs, fmt.Errorf("%s[%d] %s: %w", l.key, i, e, err))
			l.log.Warn("member lookup failed; keeping the last answer", "list", l.key, "entry", e,
				"kept", len(l.last[i]), "err", err)
		} else {
			l.okC.Inc()
			l.last[i] = got
		}
		out = append(out, l.last[i]...)
		l.mu.Unlock()
	}
	// The configured order is kept (clients try a list in order: a static list is the
	// operator's preference), each DNS answer in its entry's place; an address named twice
	// stays where it came first.
	seen := make(map[string]bool, len(out))
	out = slices.DeleteFunc(out, func(a string) bool {
		dup := seen[a]
		seen[a] = true
		return dup
	})
	if len(out) > MaxAddrs {
		l.log.Warn("member list cut", "list", l.key, "addrs", len(out), "max", MaxAddrs)
		out = out[:MaxAddrs]
	}
	return out, errs
}

func (l *List) lookup(ctx context.Context, name string, port uint16) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	ips, err := l.resolver.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("look up %s: no address", name)
	}
	out := make([]string, 0, min(len(ips), MaxAddrs))
	for _, ip := range ips {
		// No member is ever at these: a DNS answer naming them (a poisoned or broken zone)
		// would aim health checks, replication and uploads at the link-local metadata
		// service or at multicast groups. Loopback stays: one-machine clusters use it.
		if ip = ip.Unmap(); !ip.IsValid() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
			ip.IsInterfaceLocalMulticast() || ip.IsMulticast() {
			continue
		}
		out = append(out, netip.AddrPortFrom(ip.Unmap().WithZone(""), port).String())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("look up %s: no usable address", name)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxAddrs {
		out = out[:MaxAddrs]
	}
	return out, nil
}
