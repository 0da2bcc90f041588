// Package observe gathers what a cluster's roles report about themselves into one
// snapshot.Cluster: the tracker's swarms and their members, every agent's and origin's
// torrents (live and retired, with who sent what and why bytes came from origins), their
// caps, connections and bans, the ring's health and the build-index's leader. `krakenctl top`
// reads a stream of these (Watcher: each snapshot carries the rates since the one before and
// only the events since then); `krakenctl swarm inspect` reads one swarm of one.
//
// It only reads, through the roles' typed clients behind small interfaces (so it is tested
// with in-memory fakes), each request bounded by a timeout: a role that is down, slow or
// answers garbage becomes an entry in Cluster.Errors and a host marked down, never a failed
// snapshot or a hang.
package observe
