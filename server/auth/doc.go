// Package auth authenticates and authorizes the clients of the proxy's registry API, and of an
// agent's when its config has the same auth section: people and builders who `docker login`,
// and components that present a cluster certificate.
//
// Who a caller is comes from, in order:
//
//   - a verified client certificate (mTLS, read with pki.PeerIdentity) whose Subject
//     organizations include "admin": such a caller may do everything, whatever the
//     Authorization header says;
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
// Each request needs one action on the repository it names: reads (manifests, blobs, tags,
// referrers) pull; uploads, their sessions and manifest puts push; deletes of manifests, tags
// and blobs delete. A cross-repository mount (?mount=&from=A) also needs pull on A: without
// it the mount is dropped and the request starts an ordinary upload (or, for a token that
// could have carried that pull, gets a 401 asking for a token that does). The catalog lists
// only the repositories the caller may pull (PullFilter). The base endpoint /v2/ answers 401
// with the challenge to a caller with no credentials at all, as clients expect at login.
//
// Refusals follow the distribution spec: a caller that is not authenticated (or whose token
// lacks a scope the rules would grant) gets 401 UNAUTHORIZED with a WWW-Authenticate challenge,
// Basic or Bearer as Config.Mode says; an authenticated caller the rules refuse gets 403
// DENIED. Guard is the http.Handler middleware that does all of this in front of a
// registry.Handler (Wrap); WrapAdmin guards an API that names no repository, such as an
// agent's blob API, for the admin group alone.
package auth
