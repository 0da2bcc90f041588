// Package scheduler is the peer-to-peer engine of agents and origins: one torrent per blob,
// connections to peers over the swarm/wire protocol, piece choice with swarm/piece, host-wide
// bandwidth limits with swarm/bandwidth, and the local content-addressed store as the place
// where pieces land and from which they are served.
//
// # How a download runs
//
// Open starts (or joins) the download of a blob: the scheduler fetches its metainfo from the
// tracker, opens or resumes a castore.Partial, announces to the tracker every interval, dials
// the peers it hands out (at most Config.MaxConns per torrent) and accepts peers that dial in.
// Each connection keeps about Config.PipelineBytes of requests outstanding; the picker chooses
// rarest first inside a window after the lowest missing piece, ties at random, and asks origins
// only for pieces no connected peer has (origins super-seed: they reveal pieces one by one, see
// superseed.go). A piece streams from the socket into the partial file through a small buffer
// while it is hashed, and counts as held (announced, served, shown to readers) only once its
// SHA-256 matches the metainfo; the in-order prefix of held pieces is hashed as it grows,
// so the blob's digest is checked without reading it again at the end, and the blob is committed
// to the store only if it matches. Clients read the verified prefix while the download runs
// (Download.Wait, Download.CopyRange); the last byte is released only after the digest check.
// A finished torrent keeps seeding for Config.SeedTime after its last upload.
//
// # Failures
//
// A peer that breaks the protocol (a frame the codec rejects, an index out of range, a piece
// that fails its hash, a handshake for another blob, a request it was not offered) is
// disconnected and blacklisted for Config.BlacklistTime; its outstanding requests go to other
// peers. Requests that take longer than Config.RequestTimeout are re-issued elsewhere, and a
// peer that times out repeatedly is dropped as stalled. Progress (which pieces are verified and
// written) is saved every Config.SaveInterval, after the data is durable, so a restarted
// process resumes a partial download where it was; resumed pieces are verified again.
//
// # Connection slots
//
// Slots go to peers that use them (slots.go, docs/protocol.md §2.5): connections awaiting
// their handshake are bounded (Config.MaxHandshakes) and so are those one IP address opened
// (Config.MaxConnsPerAddr per torrent, Config.MaxConnsPerHost in all); a newcomer to a full
// torrent evicts the connection unused longest beyond Config.IdleGrace, and a connection over
// which nothing is requested for Config.NoRequestTimeout is closed. Evicted and refused peers
// are told CodeBusy.
//
// # What it reports
//
// Stats snapshots the live torrents: their connections, and the ones that closed (PastPeers,
// with why), the bans they made (Blacklisted) and why each piece asked of an origin was not
// asked of a peer (OriginReasons, published as a trickle of EventOriginFallback too). History
// keeps the final snapshot of the newest 256 torrents it let go; HostStats sums up the host:
// identity, caps, connections, byte totals and the bans in force. All of it is counted under
// locks the piece path already holds, so reporting adds no work per piece beyond a counter.
//
// # Concurrency
//
// Each connection has a reader goroutine (decoding, hashing and writing pieces, outside the
// torrent's lock; one connection at a time claims a piece it receives) and a writer goroutine (control messages first, then requested pieces, sent from the
// file with sendfile after taking egress tokens). A torrent's state — its piece.Picker, its
// connections, its prefix — is guarded by one mutex that is held only for bookkeeping, never
// across I/O. Everything exported is safe for concurrent use.
package scheduler
