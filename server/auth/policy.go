package auth

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/krakenctl/krakenctl/server/pki"
)

// Action is something a caller does to a repository.
type Action uint8

// Actions of the distribution token scopes.
const (
	Pull Action = 1 << iota
	Push
	Delete

	// All is every action.
	All = Pull | Push | Delete
)

// GroupAdmin is the group that may do everything: members of Config.Groups["admin"] and
// clients whose verified certificate names it among its organizations.
const GroupAdmin = pki.GroupAdmin

// AnyUser in Rule.Users stands for every authenticated user.
const AnyUser = "*"

var actionNames = []struct {
	a    Action
	name string
}{{Pull, "pull"}, {Push, "push"}, {Delete, "delete"}}

// ParseAction parses "pull", "push" or "delete".
func ParseAction(s string) (Action, error) {
	for _, n := range actionNames {
		if n.name == s {
			return n.a, nil
		}
	}
	return 0, fmt.Errorf("%q is not an action (want pull, push or delete)", s)
}

// Has reports whether every action of b is in a.
func (a Action) Has(b Action) bool { return a&b == b }

// Names lists the actions of a in the order pull, push, delete.
func (a Action) Names() []string {
	var out []string
	for _, n := range actionNames {
		if a.Has(n.a) {
			out = append(out, n.name)
		}
	}
	return out
}

func (a Action) String() string { return strings.Join(a.Names(), ",") }

// Identity is an authenticated caller. The zero Identity is the anonymous caller.
type Identity struct {
	// User is the htpasswd user name; empty for a certificate or the anonymous caller.
	User string
	// Cert is the common name of a verified client certificate when that is what
	// authenticated the caller.
	Cert string
	// Groups are the user's groups from Config.Groups, or the certificate's organizations.
	Groups []string
}

// Anonymous reports whether id is nobody.
func (id Identity) Anonymous() bool { return id.User == "" && id.Cert == "" }

// In reports whether id is in group g.
func (id Identity) In(g string) bool { return slices.Contains(id.Groups, g) }

// String names id for logs.
func (id Identity) String() string {
	switch {
	case id.User != "":
		return id.User
	case id.Cert != "":
		return "cert:" + id.Cert
	}
	return "anonymous"
}

// Policy decides what an identity may do to a repository: the union of what every matching
// rule grants it, everything for the admin group, and pull where anonymous pulls are allowed
// (for everyone). It is immutable and safe for concurrent use.
type Policy struct {
	rules     []rule
	anonymous []pattern
	// groupsOf maps a user to the groups Config.Groups puts them in.
	groupsOf map[string][]string
}

type rule struct {
	repos   []pattern
	users   []string
	groups  []string
	actions Action
}

// NewPolicy builds the policy of a validated config.
func NewPolicy(c *Config) (*Policy, error) {
	p := &Policy{groupsOf: map[string][]string{}}
	for g, members := range c.Groups {
		for _, u := range members {
			if !slices.Contains(p.groupsOf[u], g) {
				p.groupsOf[u] = append(p.groupsOf[u], g)
			}
		}
	}
	for u := range p.groupsOf {
		slices.Sort(p.groupsOf[u])
	}
	for i, r := range c.Rules {
		pr := rule{users: r.Users, groups: r.Groups}
		for _, s := range r.Repositories {
			pt, err := compilePattern(s)
			if err != nil {
				return nil, fmt.Errorf("rules[%d]: %w", i, err)
			}
			pr.repos = append(pr.repos, pt)
		}
		for _, s := range r.Actions {
			a, err := ParseAction(s)
			if err != nil {
				return nil, fmt.Errorf("rules[%d]: %w", i, err)
			}
			pr.actions |= a
		}
		p.rules = append(p.rules, pr)
	}
	for _, s := range c.AnonymousPull {
		pt, err := compilePattern(s)
		if err != nil {
			return nil, fmt.Errorf("anonymous_pull: %w", err)
		}
		p.anonymous = append(p.anonymous, pt)
	}
	return p, nil
}

// User returns the identity of an htpasswd user, with their groups.
func (p *Policy) User(name string) Identity {
	return Identity{User: name, Groups: p.groupsOf[name]}
}

// Allowed returns what id may do to repo.
func (p *Policy) Allowed(id Identity, repo string) Action {
	if id.In(GroupAdmin) {
		return All
	}
	var a Action
	for _, pt := range p.anonymous {
		if pt.match(repo) {
			a |= Pull
			break
		}
	}
	if id.Anonymous() {
		return a
	}
	for _, r := range p.rules {
		if a.Has(r.actions) || !r.names(id) {
			continue
		}
		for _, pt := range r.repos {
			if pt.match(repo) {
				a |= r.actions
				break
			}
		}
	}
	return a
}

// AnonymousPulls reports whether anonymous callers may pull anything at all.
func (p *Policy) AnonymousPulls() bool { return len(p.anonymous) > 0 }

// names reports whether the rule applies to id. User names match htpasswd users only, never a
// certificate's common name: certificates are matched by their organizations.
func (r rule) names(id Identity) bool {
	if id.User != "" && (slices.Contains(r.users, id.User) || slices.Contains(r.users, AnyUser)) {
		return true
	}
	for _, g := range r.groups {
		if id.In(g) {
			return true
		}
	}
	return false
}

// pattern is a compiled repository pattern: its path components.
type pattern []string

// doubleStar is the component that matches any number of components.
const doubleStar = "**"

// checkPattern validates a repository pattern.
func checkPattern(s string) error {
	_, err := compilePattern(s)
	return err
}

func compilePattern(s string) (pattern, error) {
	if s == "" {
		return nil, errors.New("empty pattern")
	}
	segs := strings.Split(s, "/")
	for _, seg := range segs {
		switch {
		case seg == "":
			return nil, fmt.Errorf("pattern %q has an empty path component", s)
		case seg == doubleStar:
		case strings.Contains(seg, doubleStar):
			return nil, fmt.Errorf("pattern %q: ** must be a whole path component (as in team/**)", s)
		default:
			if _, err := path.Match(seg, ""); err != nil {
				return nil, fmt.Errorf("pattern %q: %w", s, err)
			}
		}
	}
	return segs, nil
}

// match reports whether repository name matches the pattern. It runs in time proportional to
// the product of the numbers of components, whatever the number of "**" components.
func (p pattern) match(name string) bool {
	segs := strings.Split(name, "/")
	// ok[j]: p[:i] matches segs[:j], for the current i.
	ok := make([]bool, len(segs)+1)
	ok[0] = true
	for _, pc := range p {
		next := make([]bool, len(segs)+1)
		if pc == doubleStar {
			// ** matches segs[j:k] for any j <= k: next[k] = any ok[j], j <= k.
			seen := false
			for k := range next {
				seen = seen || ok[k]
				next[k] = seen
			}
		} else {
			for j := 1; j <= len(segs); j++ {
				if ok[j-1] {
					m, _ := path.Match(pc, segs[j-1]) // checked by compilePattern
					next[j] = m
				}
			}
		}
		ok = next
	}
	return ok[len(segs)]
}
