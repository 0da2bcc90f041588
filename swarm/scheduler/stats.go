package scheduler

import (
	"slices"
	"sort"
	"time"

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
		PastPeers: newestFirst(t.past), PastPeersDropped: t.pastDropped, Blacklisted: newestFirst(t.bans),
	}
	for k, n := range t.origin {
		if n.total > 0 {
			if st.OriginReasons == nil {
				st.OriginReasons = map[snapshot.OriginReason]int64{}
			}
			st.OriginReasons[originReasons[k]] = n.total
		}
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
	if !t.retiredAt.IsZero() {
		r := t.retiredAt
		st.Retired = &r
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
		st.Peers = append(st.Peers, c.statsLocked())
	}
	sort.Slice(st.Peers, func(a, b int) bool { return st.Peers[a].ID < st.Peers[b].ID })
	return st
}

// statsLocked is a snapshot of c; t.mu must be held.
func (c *conn) statsLocked() PeerStats {
	return PeerStats{
		ID: string(c.id), Addr: c.addr, Origin: c.origin, Outbound: c.outbound, Have: c.remote.Count(),
		Pending: len(c.pending), BytesIn: c.in.Load(), BytesOut: c.out.Load(), Opened: c.opened,
	}
}

// ban bans a peer of this torrent (keys, as Scheduler.ban) for d and records the ban in the
// torrent's Blacklisted. t.mu must not be held.
func (t *torrent) ban(b snapshot.Blacklisted, d time.Duration, keys ...string) {
	b.Digest = t.d
	b = t.s.ban(b, d, keys...)
	t.mu.Lock()
	t.bans, _ = keepNewest(t.bans, b)
	t.mu.Unlock()
}

// keepNewest appends v to s (oldest first), dropping the oldest beyond snapshot.MaxPastPeers,
// and reports whether one was dropped.
func keepNewest[T any](s []T, v T) ([]T, bool) {
	if len(s) < snapshot.MaxPastPeers {
		return append(s, v), false
	}
	copy(s, s[1:])
	s[len(s)-1] = v
	return s, true
}

// newestFirst returns a reversed copy of s (oldest first), nil when s is empty.
func newestFirst[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}
