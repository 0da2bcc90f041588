// Package tracker implements the tracker role: it tells the peers of the swarm about each other
// and serves blob metainfo.
//
// Announces: an agent that downloads or seeds a blob POSTs an announce.Request to
// announce.AnnouncePath every announce_interval. The tracker upserts the peer into the blob's
// peer set with a fresh expiry (peer_ttl) and answers with up to max_peers other peers: the
// blob's owning origins first (the first `replicas` reachable origins in the ring's rendezvous
// order, the same placement the origins use), then complete seeders, then the other peers, each
// group in a fresh random order, so that the connections peers make form a random graph. A peer
// that stops announcing expires: it is never handed out again and is dropped lazily by the
// handouts that meet it and by a periodic sweep, so memory follows the live peers. A peer
// announcing a new address, and a new peer id on an address that already had one (a restarted
// agent), replace the old entry, but only when they come from the host that announced it (the
// same remote address and certificate): from another host they are refused with 409
// PEER_CONFLICT until the entry expires.
//
// Addresses: an announce carries an IP literal and a port (announce.ParseAddr: never a name,
// never an address no host has), and only the announcer's own address: the host its
// connection comes from, an IP address its certificate names, or, for hosts behind NAT, one in
// the announce.nat_cidrs networks when it comes from them. Loopback is accepted only with
// announce.allow_loopback (a cluster on one host). With TLS an agent's or origin's peer id
// must be bound to its certificate (wire.BoundPeerID); an operator's certificate may announce
// any address. Refusals are counted by reason (krakenctl_tracker_announces_rejected_total)
// and logged, sampled.
//
// Origins: every origin serves its swarm identity at api.PeerPath. The tracker reads it from
// each origin at start, every 10 s, and every few seconds for the origins it could not reach;
// an origin it cannot reach is left out of the handouts. An origin may advertise a host name:
// the tracker resolves it and hands out an IP literal, so agents never resolve names.
//
// Metainfo: GET announce.MetainfoPath answers from an LRU cache of metainfo_cache entries. On a
// miss the tracker asks the origins in the digest's rendezvous order (those it can reach first);
// an origin pulls the blob through from storage when it lacks it. Concurrent misses for one
// blob share one origin request. A 4xx from an origin (404: the blob does not exist) is passed
// on; when no origin answers the tracker says 503, and when they answer with errors 502. Only
// successes are cached.
//
// Swarm list: GET api.SwarmsPath lists the swarms with a live peer (snapshot.TrackerSwarm, no
// members), the most recently announced first, at most ?limit= (DefaultSwarmsLimit, capped at
// MaxSwarmsLimit); GET api.SwarmsPath/{digest} lists one swarm's members: its owning origins,
// then every live peer with the progress (have, pieces) and API address it announced. An
// announced API address follows the rule of addr; one the tracker does not accept is dropped
// and counted, and the announce still succeeds (docs/protocol.md §6).
//
// Trackers share nothing: several of them split the digest space because every agent orders
// them by rendezvous hashing of the digest (see swarm/announce). Each one can serve any digest.
package tracker
