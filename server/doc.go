// Package server composes krakenctl's server roles (origin, and later agent, tracker, proxy and
// build-index). Each role lives in its own sub-package as a value built with New(cfg, deps) and
// run with Run(ctx); this package runs several of them together and stops them all when one
// fails or the context ends.
package server
