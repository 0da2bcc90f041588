package scheduler

import (
	"sort"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// The swarm's statistics are snapshot's: the scheduler fills in the values the swarm API serves.
type (
	TorrentStats = snapshot.TorrentStats
	PeerStats    = snapshot.PeerStats
)

func (t *torrent) stats() TorrentStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := TorrentStats{
		Digest: t.d, Namespace: t.ns, Size: t.mi.Length, PieceLength: t.mi.PieceLength,
		Pieces: t.mi.NumPieces(), Resumed: t.tot.resumed, Verified: t.prefix,
		BytesIn: t.tot.in, BytesInOrigin: t.tot.inOrigin, BytesOut: t.tot.out, Wasted: t.tot.wasted,
		BadPieces: t.tot.bad, Started: t.started, Peers: []PeerStats{},
	}
	if t.have != nil {
		st.Have = t.have.Count()
	}
	if !t.downloaded.IsZero() {
		d := t.downloaded
		st.Downloaded = &d
	}
	if !t.checkedAt.IsZero() {
		c := t.checkedAt
		st.Checked = &c
	}
	switch {
	case t.err != nil && !t.committed:
		st.State, st.Error = "failed", t.err.Error()
	case t.committed:
		st.State = "seeding"
		f := t.finished
		st.Finished = &f
	case t.picker != nil:
		st.State = "downloading"
	default:
		st.State = "starting"
	}
	for _, c := range t.conns {
		st.Peers = append(st.Peers, PeerStats{
			ID: string(c.id), Addr: c.addr, Origin: c.origin, Outbound: c.outbound, Have: c.remote.Count(),
			Pending: len(c.pending), BytesIn: c.in.Load(), BytesOut: c.out.Load(), Opened: c.opened,
		})
	}
	sort.Slice(st.Peers, func(a, b int) bool { return st.Peers[a].ID < st.Peers[b].ID })
	return st
}
