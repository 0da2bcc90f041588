// Package doctor checks, from one node, what breaks image pulls through the node's krakenctl
// agent: the agent up and ready, the trackers, origins and build-index reachable, the clock
// against the origins', the agent's disk and cache, containerd's hosts.toml pointing at the
// agent, the agent's certificate against the cluster CA, and dns:/// membership entries
// resolving. Each check yields one Result (ok, warn or FAIL, what was found, the fix); the
// checks only read, so running them is always safe.
package doctor
