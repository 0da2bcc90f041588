package auth

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"time"

	"github.com/krakenctl/krakenctl/server/pki"
)

// Modes of Config.Mode: the challenge an unauthenticated client gets.
const (
	ModeToken = "token"
	ModeBasic = "basic"
)

// Defaults of Config.
const (
	DefaultTokenTTL = 5 * time.Minute
	DefaultIssuer   = "krakenctl-proxy"
	DefaultService  = "krakenctl"
	// MaxTokenTTL bounds Config.Token.TTL: tokens cannot be revoked, only expire.
	MaxTokenTTL = time.Hour
	// MinSecretLen is the shortest token secret accepted (HMAC-SHA256 wants 32 bytes).
	MinSecretLen = 32
	// MaxBcryptCost bounds the cost of the htpasswd hashes: every login with a password costs
	// one bcrypt comparison, and a cost of 15 is over a second of CPU on a small machine.
	MaxBcryptCost = 14
)

// Config is the proxy's `auth:` section, and the bulk of an agent's (server/agent's
// AuthConfig). Its absence leaves the registry API open to anyone (as `krakenctl dev up` runs
// it); its presence closes everything that no rule opens.
//
//	auth:
//	  mode: token                       # token (default) or basic: the challenge clients get
//	  htpasswd_file: /etc/krakenctl/htpasswd   # user:bcrypt-hash lines (htpasswd -B)
//	  groups:
//	    builders: [ci, alice]
//	  rules:
//	    - repositories: ["**"]
//	      groups: [builders]
//	      actions: [pull, push]
//	    - repositories: ["team/**"]
//	      users: [bob]
//	      actions: [pull, push, delete]
//	  anonymous_pull: ["public/**"]
//	  token:
//	    secret_file: /etc/krakenctl/token-secret
//	    previous_secret_file: /etc/krakenctl/token-secret.old
//	    ttl: 5m
//	    issuer: krakenctl-proxy
//	    service: krakenctl
//	    realm: https://registry.example.com/v2/token
type Config struct {
	// Mode is the challenge of a 401 answer: "token" (Bearer, the distribution token flow;
	// the default) or "basic". Both kinds of credentials are accepted in either mode; the
	// mode only says which one clients are asked for.
	Mode string `yaml:"mode"`
	// Htpasswd is the content of an htpasswd file (set htpasswd_file to its path): one
	// "user:hash" per line, bcrypt hashes only ($2y$, $2a$, $2b$, as `htpasswd -B` writes them),
	// blank lines and # comments ignored. It is read when the config loads.
	Htpasswd string `yaml:"htpasswd" secret:"true"`
	// Groups name sets of users for rules. The group "admin" may do everything, as may a
	// client certificate whose organizations include "admin".
	Groups map[string][]string `yaml:"groups"`
	// Rules grant actions on repositories to users and groups. A caller may do the union of
	// what every matching rule grants it.
	Rules []Rule `yaml:"rules"`
	// AnonymousPull are repository patterns anyone may pull, without credentials.
	AnonymousPull []string `yaml:"anonymous_pull"`
	// Token configures the tokens of the Bearer flow.
	Token TokenConfig `yaml:"token"`
}

// Rule grants Actions on the repositories matching any of Repositories to Users and to the
// members of Groups.
type Rule struct {
	// Repositories are patterns: path.Match globs per path component ("team/*" matches
	// team/app, not team/a/b), and "**" as a whole component matches any number of components,
	// none included ("team/**" matches team, team/app and team/a/b; "**" matches everything).
	Repositories []string `yaml:"repositories"`
	// Users are htpasswd user names; "*" is every authenticated user.
	Users []string `yaml:"users"`
	// Groups are names from Config.Groups, or organizations of client certificates.
	Groups []string `yaml:"groups"`
	// Actions are pull, push and delete. Pushing an image needs pull too (clients check what
	// the repository holds), so push usually comes with pull.
	Actions []string `yaml:"actions"`
}

// TokenConfig configures the tokens the proxy issues at /v2/token and accepts as Bearer
// credentials. Tokens are JWTs signed with HMAC-SHA256, so every proxy of a cluster must share
// Secret to accept each other's tokens.
type TokenConfig struct {
	// Secret signs tokens (set secret_file): at least 32 bytes, such as the output of
	// `head -c 32 /dev/urandom | base64`. Unset, each proxy makes a random one at start, and its
	// tokens are good on that proxy only, until it restarts.
	Secret string `yaml:"secret" secret:"true"`
	// PreviousSecret is still accepted, never used to sign: the rotation window. Rotate by
	// moving Secret here and setting a new Secret on every proxy; remove it a TTL later.
	PreviousSecret string `yaml:"previous_secret" secret:"true"`
	// TTL is how long a token is good for (default 5m, at most 1h).
	TTL time.Duration `yaml:"ttl"`
	// Issuer is the iss claim of tokens, checked when one is used.
	Issuer string `yaml:"issuer"`
	// Service is the service of the challenge and the aud claim of tokens.
	Service string `yaml:"service"`
	// Realm is the token endpoint's URL in the Bearer challenge. Empty: /v2/token on the host
	// the client asked for, https when the request came over TLS. Set it when a proxy sits
	// behind a load balancer that terminates TLS.
	Realm string `yaml:"realm"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Mode == "" {
		c.Mode = ModeToken
	}
	t := &c.Token
	if t.TTL == 0 {
		t.TTL = DefaultTokenTTL
	}
	if t.Issuer == "" {
		t.Issuer = DefaultIssuer
	}
	if t.Service == "" {
		t.Service = DefaultService
	}
}

// Validate reports every problem, each naming its key relative to the auth section
// ("rules[1].actions[0]: ..."); the proxy prefixes "auth.". It expects Defaults to have run.
// Messages never include a password hash or a secret.
func (c *Config) Validate() error { return errors.Join(c.Problems()...) }

// Problems is Validate's list, one error per problem, for a config that embeds the section and
// prefixes its keys.
func (c *Config) Problems() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Mode != ModeToken && c.Mode != ModeBasic {
		bad("mode: %q is neither %s nor %s", c.Mode, ModeToken, ModeBasic)
	}
	users, err := parseHtpasswd(c.Htpasswd)
	if err != nil {
		errs = append(errs, err)
	}
	for _, g := range slices.Sorted(maps.Keys(c.Groups)) {
		members := c.Groups[g]
		if err := checkName(g); err != nil {
			bad("groups.%s: %w", g, err)
		}
		for i, u := range members {
			if users != nil && !users.has(u) {
				bad("groups.%s[%d]: user %q is not in htpasswd", g, i, u)
			}
		}
	}
	for i, r := range c.Rules {
		errs = append(errs, r.check(fmt.Sprintf("rules[%d]", i), users, c.Groups)...)
	}
	for i, p := range c.AnonymousPull {
		if err := checkPattern(p); err != nil {
			bad("anonymous_pull[%d]: %w", i, err)
		}
	}
	t := c.Token
	if t.Secret != "" && len(t.Secret) < MinSecretLen {
		bad("token.secret: must be at least %d bytes, got %d", MinSecretLen, len(t.Secret))
	}
	if t.PreviousSecret != "" && len(t.PreviousSecret) < MinSecretLen {
		bad("token.previous_secret: must be at least %d bytes, got %d", MinSecretLen, len(t.PreviousSecret))
	}
	if t.PreviousSecret != "" && t.Secret == "" {
		bad("token.previous_secret: set only with token.secret (it is the secret being rotated out)")
	}
	if t.TTL < time.Second || t.TTL > MaxTokenTTL {
		bad("token.ttl: must be between 1s and %s, got %s", MaxTokenTTL, t.TTL)
	}
	if t.Issuer == "" {
		bad("token.issuer: must not be empty")
	}
	if t.Service == "" || !quotable(t.Service) {
		bad("token.service: must be printable and contain no quote or backslash")
	}
	if t.Realm != "" {
		if err := checkRealm(t.Realm); err != nil {
			bad("token.realm: %w", err)
		}
	}
	return errs
}

// check validates one rule; path is its key ("rules[1]").
func (r Rule) check(path string, users *htpasswd, groups map[string][]string) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(path+"."+format, a...)) }
	if len(r.Repositories) == 0 {
		bad("repositories: required (a pattern such as team/** or **)")
	}
	for i, p := range r.Repositories {
		if err := checkPattern(p); err != nil {
			bad("repositories[%d]: %w", i, err)
		}
	}
	if len(r.Users) == 0 && len(r.Groups) == 0 {
		bad("users: a rule names users or groups (or both)")
	}
	for i, u := range r.Users {
		if u != AnyUser && users != nil && !users.has(u) {
			bad("users[%d]: user %q is not in htpasswd", i, u)
		}
	}
	for i, g := range r.Groups {
		if err := checkName(g); err != nil {
			bad("groups[%d]: %w", i, err)
		}
		// A group that config does not define may still be a certificate organization, but a
		// typo is likelier: only the built-in groups of components are taken without a
		// definition.
		if _, ok := groups[g]; !ok && !slices.Contains(certGroups, g) {
			bad("groups[%d]: group %q is not defined in groups (nor a component group: %v)", i, g, certGroups)
		}
	}
	if len(r.Actions) == 0 {
		bad("actions: required (pull, push, delete)")
	}
	for i, a := range r.Actions {
		if _, err := ParseAction(a); err != nil {
			bad("actions[%d]: %w", i, err)
		}
	}
	return errs
}

// certGroups are the organizations the cluster's certificates carry (server/pki's groups);
// rules may name them without defining them.
var certGroups = []string{pki.GroupAdmin, pki.GroupAgent, pki.GroupOrigin, pki.GroupTracker, pki.GroupProxy, pki.GroupBuildIndex}

// checkName checks a group name: printable, no spaces.
func checkName(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	for _, c := range s {
		if c <= ' ' || c == 0x7f || c == ':' {
			return fmt.Errorf("name %q has a space, a control character or a colon", s)
		}
	}
	return nil
}

// quotable reports whether s can go in a quoted-string of a challenge as is.
func quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// checkRealm checks a configured token realm: an absolute http(s) URL that fits a challenge.
func checkRealm(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || !quotable(s) {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}
