package ring

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/krakenctl/krakenctl/ring/members"
)

// ErrInvalidConfig is wrapped by every error Config.Validate returns.
var ErrInvalidConfig = errors.New("invalid config")

// Default values applied by Config.Defaults to fields left at their zero value.
const (
	DefaultReplicas       = 3
	DefaultHealthInterval = 5 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultFailThreshold  = 3
	DefaultPassThreshold  = 2
)

// Config describes the origin ring. It is the `ring:` section of a role's YAML file; durations
// are Go duration strings ("5s", "1m30s"), and a bare number is rejected by the YAML decoder
// rather than read as nanoseconds.
type Config struct {
	// Members are the origins' "host:port" addresses, the same list on every process, or DNS
	// entries "dns:///NAME:PORT" (every address NAME resolves to, at PORT; see ring/members).
	// Order does not matter; duplicates are rejected by Validate.
	Members []string `yaml:"members"`
	// Replicas is R, how many members hold each blob. When it exceeds the number of members,
	// every member holds every blob.
	Replicas int `yaml:"replicas"`
	// HealthInterval is the time between two rounds of active health checks.
	HealthInterval time.Duration `yaml:"health_interval"`
	// HealthTimeout bounds one member's check; a check that takes longer fails. It must not
	// exceed HealthInterval.
	HealthTimeout time.Duration `yaml:"health_timeout"`
	// FailThreshold is how many consecutive failed checks mark a healthy member down.
	FailThreshold int `yaml:"fail_threshold"`
	// PassThreshold is how many consecutive successful checks mark a down member up.
	PassThreshold int `yaml:"pass_threshold"`
}

// Defaults fills the fields left at their zero value (except Members, which has no default).
// Negative values are kept so Validate can reject them.
func (c *Config) Defaults() {
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = DefaultHealthTimeout
	}
	if c.FailThreshold == 0 {
		c.FailThreshold = DefaultFailThreshold
	}
	if c.PassThreshold == 0 {
		c.PassThreshold = DefaultPassThreshold
	}
}

// Validate reports every problem in c, each naming its YAML key (for example
// "ring.replicas must be >= 1, got 0"), joined into one error that wraps ErrInvalidConfig. Call
// Defaults first: Validate treats zero values as errors.
func (c *Config) Validate() error { return c.validate(false) }

// validate is Validate, with no members allowed when empty is set (Deps.StartEmpty).
func (c *Config) validate(empty bool) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, invalidError{fmt.Errorf(format, args...)})
	}
	if len(c.Members) == 0 && !empty {
		bad("ring.members must list at least one origin host:port")
	}
	seen := make(map[string]int, len(c.Members))
	for i, m := range c.Members {
		if members.IsDNS(m) {
			if _, _, err := members.ParseDNS(m); err != nil {
				bad("ring.members[%d]: %w", i, err)
				continue
			}
		} else if err := CheckMember(m); err != nil {
			bad("ring.members[%d]: %w", i, err)
			continue
		}
		if j, dup := seen[m]; dup {
			bad("ring.members[%d]: %q duplicates ring.members[%d]", i, m, j)
			continue
		}
		seen[m] = i
	}
	if c.Replicas < 1 {
		bad("ring.replicas must be >= 1, got %d", c.Replicas)
	}
	if c.HealthInterval <= 0 {
		bad("ring.health_interval must be > 0, got %s", c.HealthInterval)
	}
	if c.HealthTimeout <= 0 {
		bad("ring.health_timeout must be > 0, got %s", c.HealthTimeout)
	} else if c.HealthInterval > 0 && c.HealthTimeout > c.HealthInterval {
		bad("ring.health_timeout (%s) must not exceed ring.health_interval (%s)", c.HealthTimeout, c.HealthInterval)
	}
	if c.FailThreshold < 1 {
		bad("ring.fail_threshold must be >= 1, got %d", c.FailThreshold)
	}
	if c.PassThreshold < 1 {
		bad("ring.pass_threshold must be >= 1, got %d", c.PassThreshold)
	}
	return errors.Join(errs...)
}

// invalidError is a problem of a Config: its message starts with the key, as a config file's
// messages do, and it wraps ErrInvalidConfig (and what it was made from).
type invalidError struct{ err error }

func (e invalidError) Error() string   { return e.err.Error() }
func (e invalidError) Unwrap() []error { return []error{ErrInvalidConfig, e.err} }

// CheckMembers checks a role's list of origin addresses, configured under key: at least one,
// each a usable member address (CheckMember) or a DNS entry "dns:///NAME:PORT", none twice. It returns one error per problem,
// each naming key or key[i]; none when the list is fine.
func CheckMembers(key string, addrs []string) []error {
	if len(addrs) == 0 {
		return []error{fmt.Errorf("%s: required (the blob API addresses of the origins)", key)}
	}
	var errs []error
	seen := make(map[string]bool, len(addrs))
	for i, a := range addrs {
		if members.IsDNS(a) {
			if _, _, err := members.ParseDNS(a); err != nil {
				errs = append(errs, fmt.Errorf("%s[%d]: %w", key, i, err))
			}
		} else if err := CheckMember(a); err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", key, i, err))
		}
		if seen[a] {
			errs = append(errs, fmt.Errorf("%s[%d]: %q is listed twice", key, i, a))
		}
		seen[a] = true
	}
	return errs
}

// ParseEndpoint checks a server address given as "host:port" or as an http(s) URL with at most
// a path, and returns its key, the host:port it is ranked and deduplicated by (the URL's
// default port filled in), and its base URL without a trailing slash ("http://" + s for a bare
// host:port). Errors name s.
func ParseEndpoint(s string) (key, base string, err error) {
	if !strings.Contains(s, "://") {
		if err := CheckMember(s); err != nil {
			return "", "", fmt.Errorf("%q: %w", s, err)
		}
		return s, "http://" + s, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("%q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", "", fmt.Errorf("%q: scheme must be http or https", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", "", fmt.Errorf("%q: want scheme://host[:port][/path] only", s)
	}
	key = u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		key = net.JoinHostPort(u.Hostname(), port)
	}
	if err := CheckMember(key); err != nil {
		return "", "", fmt.Errorf("%q: %w", s, err)
	}
	return key, strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

// CheckMember reports whether addr is a usable member address: "host:port" with a non-empty
// host (a name, an IPv4 address or a bracketed IPv6 address) and a decimal port in 1..65535,
// with no scheme, path or whitespace.
func CheckMember(addr string) error {
	if strings.ContainsAny(addr, "/?#@ \t\r\n\x00") {
		return fmt.Errorf("member %q must be host:port, without scheme, path or spaces", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("member %q must be host:port: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("member %q has an empty host", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
		return fmt.Errorf("member %q has port %q, want a number in 1..65535", addr, port)
	}
	return nil
}
