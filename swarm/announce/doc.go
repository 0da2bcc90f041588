// Package announce is the tracker protocol of the krakenctl swarm: the documents agents and
// trackers exchange, and a Client that agents use to talk to a set of trackers.
//
// An agent that downloads (or seeds) a blob announces it to a tracker every
// Response.Interval(): POST AnnouncePath with a JSON Request naming the blob, the agent's peer id
// and the address where it accepts swarm connections. The tracker answers with a JSON Response
// listing peers to connect to: the blob's owning origins first, then complete seeders, then
// other downloaders, in a fresh random order each time. A peer that stops announcing is
// forgotten after the tracker's TTL. Trackers also serve a blob's metainfo at MetainfoPath,
// the same path the origins use, encoded by swarm/metainfo.
//
// Several trackers share the digest space without sharing state: each keeps only the peers that
// announced to it. Every Client orders the trackers for a digest by rendezvous hashing
// (ring.Rank over the trackers' host:port with the digest string as key), so all agents that
// pull one blob meet on the same tracker, and they all move to the same next one when it fails.
// A Client fails over on connection errors, timeouts and 5xx answers, and returns 4xx answers at
// once: the request itself is wrong, and another tracker would refuse it too.
//
// Peer addresses are IP literals with a port (ParseAddr), never host names: a tracker hands
// out addresses that other peers announced, and an agent that resolved them would look up
// whatever name a stranger chose. The kinds no host can be reached at (unspecified, multicast,
// link-local, broadcast, zoned) are refused on both sides; the Client drops handed-out peers
// that break these rules. Loopback passes here: a tracker accepts it only in a cluster on one
// host, and checks every other address against the connection that announced it.
//
// The server side lives in server/tracker.
package announce
