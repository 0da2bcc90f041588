package auth

import (
	"fmt"
	"strings"

	"github.com/krakenctl/krakenctl/server/registry"
)

// Resource types of scopes.
const (
	// TypeRepository scopes name a repository and the actions pull, push, delete (or *).
	TypeRepository = "repository"
	// TypeRegistry scopes name a registry-wide resource: only "catalog", action "*".
	TypeRegistry = "registry"
	// CatalogName is the resource of the catalog scope, registry:catalog:*.
	CatalogName = "catalog"
	// actionAll grants every action the caller is allowed.
	actionAll = "*"
)

// Limits on what a token request may ask, so that a token stays small.
const (
	maxScopeLen = 512
	maxScopes   = 32
)

// Scope is one resource scope of the distribution token flow, as in
// "repository:team/app:pull,push" or "registry:catalog:*".
type Scope struct {
	Type    string
	Name    string
	Actions []string
}

// String renders s as a scope parameter.
func (s Scope) String() string {
	return s.Type + ":" + s.Name + ":" + strings.Join(s.Actions, ",")
}

// ParseScope parses "type:name:actions". The name may itself hold colons (a registry host
// with a port), so the type ends at the first colon and the actions start after the last. A
// type's class, as in "repository(plugin)", is dropped. A repository name must be a valid OCI
// repository name; actions of other types are kept as given (they grant nothing).
func ParseScope(s string) (Scope, error) {
	if len(s) > maxScopeLen {
		return Scope{}, fmt.Errorf("scope of %d bytes is over the limit of %d", len(s), maxScopeLen)
	}
	typ, rest, ok := strings.Cut(s, ":")
	i := strings.LastIndexByte(rest, ':')
	if !ok || i < 0 {
		return Scope{}, fmt.Errorf("scope %q is not type:name:actions", s)
	}
	if j := strings.IndexByte(typ, '('); j >= 0 && strings.HasSuffix(typ, ")") {
		typ = typ[:j]
	}
	sc := Scope{Type: typ, Name: rest[:i]}
	if sc.Type == "" || sc.Name == "" {
		return Scope{}, fmt.Errorf("scope %q has an empty type or name", s)
	}
	if !quotable(s) || strings.ContainsAny(s, " ") {
		return Scope{}, fmt.Errorf("scope %q has a character that is not allowed", s)
	}
	for _, a := range strings.Split(rest[i+1:], ",") {
		if a == "" {
			return Scope{}, fmt.Errorf("scope %q has an empty action", s)
		}
		sc.Actions = append(sc.Actions, a)
	}
	if sc.Type == TypeRepository {
		if err := registry.ValidateName(sc.Name); err != nil {
			return Scope{}, fmt.Errorf("scope %q: %w", s, err)
		}
	}
	return sc, nil
}

// ParseScopes parses the scope parameters of a token request: each may hold several scopes
// separated by spaces, as clients send the challenge's scope back.
func ParseScopes(params []string) ([]Scope, error) {
	var out []Scope
	for _, p := range params {
		for _, f := range strings.Fields(p) {
			if len(out) == maxScopes {
				return nil, fmt.Errorf("more than %d scopes", maxScopes)
			}
			s, err := ParseScope(f)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// actionsOf returns the actions of a repository scope; "*" is every action, unknown ones are
// dropped (they grant nothing).
func actionsOf(names []string) Action {
	var a Action
	for _, n := range names {
		if n == actionAll {
			return All
		}
		if x, err := ParseAction(n); err == nil {
			a |= x
		}
	}
	return a
}
