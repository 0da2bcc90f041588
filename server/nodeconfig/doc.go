// Package nodeconfig writes a host's container runtime configuration so that image pulls go
// through the host's krakenctl agent: containerd's per-registry hosts.toml files (the agent as
// a mirror, reached with ?ns=<registry>) and Docker's daemon.json registry-mirrors. Every write
// is atomic (a temporary file in the same directory, then a rename), idempotent (an unchanged
// file is not rewritten) and confined to the directory or file it was given.
package nodeconfig
