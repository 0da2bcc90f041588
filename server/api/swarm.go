package api

// The swarm API of agents and origins: what their swarm engine is doing. Both serve
// SwarmTorrentsPath and SwarmHostPath; agents serve SwarmEventsPath too. Both take an optional
// ?digest= filter on the torrents and events. The documents are swarm/snapshot's types, which
// server/api (a leaf) does not import: clients decode into them directly.
const (
	// SwarmTorrentsPath serves a JSON array of snapshot.TorrentStats, one per torrent, by digest.
	SwarmTorrentsPath = "/swarm/torrents"
	// SwarmEventsPath streams snapshot.Events as newline-delimited JSON, or as server-sent
	// events (event: KIND, data: JSON) when the request accepts text/event-stream.
	SwarmEventsPath = "/swarm/events"
	// SwarmHostPath serves the node's snapshot.HostStats: identity, caps, connections, totals
	// and the peers it has banned.
	SwarmHostPath = "/swarm/host"
	// SwarmHistoryParam, set to 1 on SwarmTorrentsPath, adds the torrents the node has retired
	// (a bounded history, newest first, with TorrentStats.Retired set) after the live ones.
	SwarmHistoryParam = "history"
	// SwarmKindParam on SwarmEventsPath keeps only the events of the kinds it lists
	// (repeated or comma-separated); an unknown kind is a 400.
	SwarmKindParam = "kind"
	// SwarmsPath is the tracker's list of swarms: a JSON array of snapshot.TrackerSwarm
	// without members. SwarmsPath + "/" + digest serves one snapshot.TrackerSwarm with its
	// members (404 when the tracker knows no peer of it).
	SwarmsPath = "/swarms"
)
