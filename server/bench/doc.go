// Package bench measures krakenctl's servers end to end, in-process and on loopback, for
// `krakenctl bench`. Tags starts a build-index cluster (real Raft over TCP, real HTTP
// listeners on 127.0.0.1, state in a temporary directory) and drives it through its HTTP API
// with concurrent clients, as agents and builders would.
//
// Results are measurements of whatever machine runs them, not assertions: nothing here
// compares against a target.
package bench
