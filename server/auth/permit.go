package auth

import (
	"net/http"
)

// Permit is what the authenticated caller of one request may do, for an API that names its
// repositories in the request body rather than in the path (the proxy's registry
// notifications): the handler reads the body, then asks the Permit about each repository.
type Permit struct {
	g *Guard
	c caller
}

// Authenticate finds the caller of r for such an API. A caller without credentials, or
// whose credentials fail, is answered here (401 with the Guard's challenge, or 429) and ok is
// false: nothing of the body should be read for it.
func (g *Guard) Authenticate(w http.ResponseWriter, r *http.Request) (p Permit, ok bool) {
	c, ref := g.authenticate(r)
	if ref == nil && c.kind == credNone {
		ref = unauthorized("authentication required")
	}
	if ref != nil {
		g.refuse(w, r, c, ref)
		return Permit{}, false
	}
	return Permit{g: g, c: c}, true
}

// Allows reports whether the caller may do action on repo: what the rules grant its identity
// (the admin group may do everything) and, for a token, what the token grants too.
func (p Permit) Allows(repo string, action Action) bool {
	return p.c.allowed(p.g.policy, repo).Has(action)
}

// Deny answers r with the refusal of action on repo: 403 DENIED, or 401 with a challenge for
// a token that lacks a scope the rules would grant.
func (p Permit) Deny(w http.ResponseWriter, r *http.Request, repo string, action Action) {
	ref := p.g.denial(p.c, repo, action)
	p.g.refuse(w, r, p.c, ref)
}
