package serve

// flagSpec is a flag that overrides one key of a role's config file.
type flagSpec struct {
	name, key, usage string
	list             bool // a list key: the flag repeats or takes commas
	dir              bool // the value is a directory (shell completion)
}

// commonFlags are the overrides every role takes.
var commonFlags = []flagSpec{
	{name: "listen", key: "listen", usage: "API listen address (host:port)"},
	{name: "admin-listen", key: "admin_listen", usage: "admin listen address for /metrics, /debug/pprof, /health and /readyz (host:port)"},
}

// roleHelp is a role's row in the `serve ROLE` table: its help text and its own overrides.
type roleHelp struct {
	short, long, example string
	flags                []flagSpec
}

// help has one row per role of server/roles.
var help = map[string]roleHelp{
	"agent": {
		short: "Run an agent: download blobs through the swarm and serve them to this host",
		long: `Run an agent, one per host. It serves the OCI distribution pull API at /v2/, so
docker pulls from it (docker pull 127.0.0.1:16000/REPO:TAG) and containerd uses it as a mirror
(?ns=); writes answer 405 UNSUPPORTED. Tags are resolved on the build-index on every request
(build_index in the config, or --build-index), so a tag moved by the last push is what the
next pull gets. Clients may also GET blobs at /namespace/NAMESPACE/blobs/DIGEST (the origins'
blob API, with Range and HEAD). The agent downloads each blob once through the peer-to-peer
swarm, from the origins and from other agents, streaming it to its clients while pieces arrive
and are verified, then keeps it in its store and seeds it to other hosts for seed_time.
/swarm/torrents and /swarm/events show what it is doing. Unfinished downloads resume where
they stopped on the next start.

The flags let one file serve every host; with them the file may be empty.`,
		example: `  krakenctl serve agent --config /etc/krakenctl/agent.yaml
  krakenctl serve agent -c agent.yaml --peer-advertise 10.0.0.7:16001 --tracker 10.0.0.2:16100 \
      --build-index 10.0.0.3:15100,10.0.0.4:15100`,
		flags: []flagSpec{
			{name: "peer-listen", key: "peer_listen", usage: "swarm listen address"},
			{name: "peer-advertise", key: "peer_advertise", usage: "ip:port other hosts dial to reach --peer-listen (an IP address, not a name)"},
			{name: "tracker", key: "trackers", usage: "tracker address (host:port)", list: true},
			{name: "build-index", key: "build_index", usage: "build-index API address (host:port)", list: true},
			{name: "store-dir", key: "store_dir", usage: "directory of downloaded blobs", dir: true},
		},
	},
	"origin": {
		short: "Run an origin: store blobs, seed them, write them back to storage",
		long: `Run an origin. Origins hold every blob in a content-addressed store, own slices of the
digest space on a rendezvous-hash ring, pull misses through from storage backends and write
uploads back to them through a durable queue. With peer.listen set they seed blobs to the
agents' swarm. advertise defaults to listen, so --listen moves it too unless the file sets it.`,
		example: "  krakenctl serve origin --config /etc/krakenctl/origin.yaml",
	},
	"tracker": {
		short: "Run a tracker: introduce the peers of each blob, serve metainfo",
		long: `Run a tracker. Agents announce the blobs they download or seed every few seconds and get
back peers to connect to: the blob's owning origins first, then seeders, then other
downloaders, in a fresh random order each time. Peers that stop announcing are forgotten after
peer_ttl. The tracker also serves each blob's metainfo (piece hashes), fetched once from the
origins and cached. Several trackers share the digest space by rendezvous hashing without
sharing state; agents fail over between them.`,
		example: "  krakenctl serve tracker --config /etc/krakenctl/tracker.yaml",
	},
	"proxy": {
		short: "Run a proxy: the OCI registry API builders push to",
		long: `Run a proxy: an OCI distribution API (spec v1.1) at /v2/ for docker push, buildkit, crane,
skopeo and other registry clients. It takes monolithic, chunked and streamed uploads,
cross-repository mounts, manifests (OCI and Docker, images, indexes and artifacts, with the
referrers API), tags and deletes, and serves pulls too.

Blob and manifest bytes go to the origins (namespace = repository, stored under their
SHA-256 even when pushed by a sha512 digest); tags and the per-repository links that say
which blobs and manifests each repository holds go to the build-index. A proxy keeps no state
of its own: run several behind a load balancer, and an upload started through one can be
continued through another. Deletes remove links and tags; no storage is reclaimed.`,
		example: "  krakenctl serve proxy --config /etc/krakenctl/proxy.yaml",
	},
	"build-index": {
		short: "Run a build-index node: linearizable tags on Raft",
		long: `Run a build-index node. The build-index maps repository tags to digests in a Raft group
of three or five nodes: the first node bootstraps (raft.bootstrap: true), the others join it
(join: [ADDR]). Reads are linearizable unless asked for ?stale=true, and any node accepts
every request, forwarding writes to the leader. A tag is accepted only when the origin
cluster holds its manifest and what the manifest references. Tags are written back to the
storage backend through a durable queue, from which a fresh cluster can be restored.
advertise, raft.api_addr and raft.node_id default from listen, so --listen moves them too
unless the file sets them.`,
		example: "  krakenctl serve build-index --config /etc/krakenctl/build-index.yaml",
	},
}
