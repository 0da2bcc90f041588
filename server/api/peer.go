package api

// PeerPath is where an origin says how the swarm reaches it (GET -> PeerInfo). Trackers read it
// to hand the origins out to agents as seeders of every blob they own.
const PeerPath = "/peer"

// PeerInfo is an origin's identity in the peer-to-peer swarm.
type PeerInfo struct {
	// ID is the origin's swarm peer id: the lower-case hex of a wire.PeerID.
	ID string `json:"peer_id"`
	// Addr is the "host:port" where the origin accepts swarm connections.
	Addr string `json:"addr"`
}
