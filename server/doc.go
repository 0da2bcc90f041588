// Package server composes krakenctl's server roles: agent, origin, tracker, proxy and
// build-index. Each role lives in its own sub-package as a value built with New(cfg, deps) and
// run with Run(ctx); this package names that shape (Role), and server/role is the skeleton they
// share.
//
// Beside the roles are the packages they share (the OCI registry handler, typed clients of
// every role's API, config loading, HTTP serving, the operator endpoints, the durable task
// queue) and the packages that assemble whole clusters in one process (cluster, dev, bench).
// docs/architecture.md shows how they fit.
package server
