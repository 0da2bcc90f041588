// Package auth authenticates and authorizes the clients of the proxy's registry API: people and
// builders who `docker login`, and components that present a cluster certificate.
//
// Who a caller is comes from, in order:
//
//   - a verified client certificate (mTLS) whose Subject organizations include "admin": such a
//     caller may do everything, whatever the Authorization header says;
//   - the Authorization header: Basic credentials checked against an htpasswd file (bcrypt
//     only), or a Bearer token this package issued at its token endpoint (GET /v2/token, the
//     distribution token flow);
//   - any other verified client certificate: its organizations are its groups;
//   - nobody: the anonymous caller, who may pull what Config.AnonymousPull allows.
//
// What a caller may do to a repository is the union of the actions of every rule whose pattern
// matches the repository and which names the caller or one of its groups (Policy). There are
// no deny rules, so the order of rules does not matter. A Bearer token grants the actions it
// carries for each repository, and only those that the rules still allow its subject when it is
// used (so a user removed from a rule loses the access at once, not when the token expires).
//
// Refusals follow the distribution spec: a caller that is not authenticated (or whose token
// lacks a scope the rules would grant) gets 401 UNAUTHORIZED with a WWW-Authenticate challenge,
// Basic or Bearer as Config.Mode says; an authenticated caller the rules refuse gets 403
// DENIED. Guard is the http.Handler middleware that does all of this in front of a
// registry.Handler.
package auth
