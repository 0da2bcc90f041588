// Package swarmview turns what the swarm engine reports (swarm/scheduler's TorrentStats and
// Event) into the documents of the swarm API (server/api's TorrentStats and Event) that agents
// and origins serve. It is the one place where a scheduler value becomes a wire document: the
// scheduler may change its own types without changing the API, and clients (server/client) read
// the documents without linking the swarm.
package swarmview

import (
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
)

// Torrents converts the scheduler's torrent snapshots, in order. The result is never nil, so an
// idle swarm is served as [], not null.
func Torrents(stats []scheduler.TorrentStats) []api.TorrentStats {
	out := make([]api.TorrentStats, 0, len(stats))
	for _, st := range stats {
		out = append(out, torrent(st))
	}
	return out
}

func torrent(st scheduler.TorrentStats) api.TorrentStats {
	out := api.TorrentStats{
		Digest:        st.Digest,
		Namespace:     st.Namespace,
		State:         st.State,
		Size:          st.Size,
		PieceLength:   st.PieceLength,
		Pieces:        st.Pieces,
		Have:          st.Have,
		Resumed:       st.Resumed,
		Verified:      st.Verified,
		BytesIn:       st.BytesIn,
		BytesInOrigin: st.BytesInOrigin,
		BytesOut:      st.BytesOut,
		Wasted:        st.Wasted,
		BadPieces:     st.BadPieces,
		Started:       st.Started,
		Downloaded:    st.Downloaded,
		Checked:       st.Checked,
		Finished:      st.Finished,
		Error:         st.Error,
	}
	if st.Peers != nil {
		// The scheduler lists no peers as an empty slice; keep it [] on the wire.
		out.Peers = make([]api.PeerStats, 0, len(st.Peers))
	}
	for _, p := range st.Peers {
		out.Peers = append(out.Peers, api.PeerStats(p))
	}
	return out
}

// Event converts one scheduler event.
func Event(e scheduler.Event) api.Event {
	return api.Event{
		Time:     e.Time,
		Kind:     api.EventKind(e.Kind),
		Digest:   e.Digest,
		Peer:     e.Peer,
		Addr:     e.Addr,
		Origin:   e.Origin,
		Outbound: e.Outbound,
		Piece:    e.Piece,
		Pieces:   e.Pieces,
		Bytes:    e.Bytes,
		Sent:     e.Sent,
		Duration: e.Duration,
		Err:      e.Err,
	}
}
