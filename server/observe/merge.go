package observe

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// stateAnnounced is the state of a swarm member known only from the tracker's list.
const stateAnnounced = "announced"

// edgeKey is a directed pair of swarm addresses.
type edgeKey struct{ from, to string }

// edgeSum adds up the bytes one side reported for one edge.
type edgeSum struct {
	bytes      int64
	live       bool
	fromOrigin bool
}

// swarmBuild collects one digest's swarm while merging.
type swarmBuild struct {
	s         snapshot.Swarm
	peerLen   int64
	byAddr    map[string]int // index in s.Peers by swarm address
	recv      map[edgeKey]*edgeSum
	sent      map[edgeKey]*edgeSum
	originOut int64
	// effSum and effN add up the finished agents' (Size/cap)/time; rate is their cap.
	effSum float64
	effN   int
	rate   int64
}

// merge builds one Swarm per digest from what the nodes and the tracker reported. With only
// set, just that digest's.
func merge(nodes []nodeRead, tracked []snapshot.TrackerSwarm, only digest.Digest) []snapshot.Swarm {
	// A peer id names a node in its peers' reports; its swarm address is how the view names it.
	addrOf := map[string]string{}
	for _, n := range nodes {
		if n.err == nil && n.host.PeerID != "" {
			addrOf[n.host.PeerID] = n.host.Addr
		}
	}
	builds := map[digest.Digest]*swarmBuild{}
	get := func(d digest.Digest) *swarmBuild {
		b := builds[d]
		if b == nil {
			b = &swarmBuild{
				s:      snapshot.Swarm{Digest: d, Peers: []snapshot.SwarmPeer{}, Edges: []snapshot.Edge{}, Seeders: -1, Leechers: -1},
				byAddr: map[string]int{}, recv: map[edgeKey]*edgeSum{}, sent: map[edgeKey]*edgeSum{},
			}
			builds[d] = b
		}
		return b
	}
	for _, n := range nodes {
		if n.err != nil {
			continue
		}
		for _, t := range current(n.torrents) {
			if only != "" && t.Digest != only {
				continue
			}
			b := get(t.Digest)
			b.addTorrent(n, t, addrOf)
		}
	}
	for _, ts := range tracked {
		if only != "" && ts.Digest != only {
			continue
		}
		b := get(ts.Digest)
		b.s.Seeders, b.s.Leechers = ts.Seeders, ts.Leechers
		b.s.Namespace = cmp.Or(b.s.Namespace, ts.Namespace)
		for _, m := range ts.Members {
			b.addMember(m)
		}
	}
	out := make([]snapshot.Swarm, 0, len(builds))
	for _, b := range builds {
		out = append(out, b.finish())
	}
	slices.SortFunc(out, func(a, b snapshot.Swarm) int {
		if a.Done != b.Done {
			if a.Done {
				return 1
			}
			return -1
		}
		return cmp.Or(b.Started.Compare(a.Started), cmp.Compare(a.Digest, b.Digest))
	})
	return out
}

// current keeps, per digest, the live torrent or else the newest retired one: a blob that was
// retired and fetched again appears in both lists.
func current(ts []snapshot.TorrentStats) []snapshot.TorrentStats {
	seen := map[digest.Digest]bool{}
	out := make([]snapshot.TorrentStats, 0, len(ts))
	for _, t := range ts {
		if t.Retired == nil {
			seen[t.Digest] = true
			out = append(out, t)
		}
	}
	for _, t := range ts { // history is newest first
		if t.Retired != nil && !seen[t.Digest] {
			seen[t.Digest] = true
			out = append(out, t)
		}
	}
	return out
}

func (b *swarmBuild) addTorrent(n nodeRead, t snapshot.TorrentStats, addrOf map[string]string) {
	s := &b.s
	s.Namespace = cmp.Or(s.Namespace, t.Namespace)
	if t.Size > 0 {
		s.Size, s.Pieces, b.peerLen = t.Size, t.Pieces, t.PieceLength
	}
	if !t.Started.IsZero() && (s.Started.IsZero() || t.Started.Before(s.Started)) {
		s.Started = t.Started
	}
	self := cmp.Or(n.host.Addr, n.api)
	state := t.State
	if t.Retired != nil {
		state = "retired"
	}
	p := snapshot.SwarmPeer{
		Addr: self, API: n.api, PeerID: n.host.PeerID, Role: n.role, State: state, Pieces: t.Have,
		BytesFromPeers: t.BytesIn - t.BytesInOrigin, BytesFromOrigins: t.BytesInOrigin, BytesSent: t.BytesOut,
		OriginReasons: map[snapshot.OriginReason]int64{}, Blacklisted: t.Blacklisted, Error: t.Error,
	}
	maps.Copy(p.OriginReasons, t.OriginReasons)
	if !t.Started.IsZero() {
		st := t.Started
		p.Started = &st
	}
	if f := cmp.Or(t.Downloaded, t.Finished); f != nil {
		ft := *f
		p.Finished = &ft
	}
	if n.role == RoleAgent && t.Downloaded != nil && n.host.IngressCap > 0 && t.Size > 0 {
		if d := t.Downloaded.Sub(t.Started).Seconds(); d > 0 {
			b.effSum += float64(t.Size) / float64(n.host.IngressCap) / d
			b.effN++
			b.rate = n.host.IngressCap
		}
	}
	if n.role == RoleOrigin {
		b.originOut += t.BytesOut
		if p.Pieces == 0 && t.State == "seeding" {
			p.Pieces = t.Pieces
		}
	}
	b.byAddr[self] = len(s.Peers)
	s.Peers = append(s.Peers, p)
	add := func(ps snapshot.PeerStats, live bool) {
		remote := ps.Addr
		if a, ok := addrOf[ps.ID]; ok {
			remote = a
		}
		if ps.BytesIn > 0 {
			e := sumOf(b.recv, edgeKey{remote, self})
			e.bytes += ps.BytesIn
			e.live = e.live || live
			e.fromOrigin = e.fromOrigin || ps.Origin
		}
		if ps.BytesOut > 0 {
			e := sumOf(b.sent, edgeKey{self, remote})
			e.bytes += ps.BytesOut
			e.live = e.live || live
			e.fromOrigin = e.fromOrigin || n.role == RoleOrigin
		}
	}
	for _, ps := range t.Peers {
		add(ps, true)
	}
	for _, ps := range t.PastPeers {
		add(ps, false)
	}
}

func sumOf(m map[edgeKey]*edgeSum, k edgeKey) *edgeSum {
	e := m[k]
	if e == nil {
		e = &edgeSum{}
		m[k] = e
	}
	return e
}

// addMember adds what the tracker says of a member: its last announce, and the member itself
// when no node report covers it.
func (b *swarmBuild) addMember(m snapshot.TrackerMember) {
	var la *time.Time
	if !m.LastAnnounce.IsZero() {
		t := m.LastAnnounce
		la = &t
	}
	if i, ok := b.byAddr[m.Addr]; ok {
		b.s.Peers[i].LastAnnounce = la
		return
	}
	if b.s.Pieces == 0 && m.Pieces > 0 {
		b.s.Pieces = m.Pieces
	}
	pieces := m.Have
	if m.Complete && m.Pieces > 0 {
		pieces = m.Pieces
	}
	b.byAddr[m.Addr] = len(b.s.Peers)
	b.s.Peers = append(b.s.Peers, snapshot.SwarmPeer{
		Addr: m.Addr, API: m.API, PeerID: m.PeerID, Role: cmp.Or(m.Role, RoleAgent), State: stateAnnounced,
		Pieces: pieces, OriginReasons: map[snapshot.OriginReason]int64{}, LastAnnounce: la,
	})
}

// finish computes the swarm's totals and its edges.
func (b *swarmBuild) finish() snapshot.Swarm {
	s := b.s
	// Edges: the receiver's count where the receiver reported, else the sender's.
	keys := map[edgeKey]bool{}
	for k := range b.recv {
		keys[k] = true
	}
	for k := range b.sent {
		keys[k] = true
	}
	for k := range keys {
		e := b.recv[k]
		if e == nil {
			e = b.sent[k]
		}
		from := k.from
		fromOrigin := e.fromOrigin
		if i, ok := b.byAddr[from]; ok && s.Peers[i].Role == RoleOrigin {
			fromOrigin = true
		}
		s.Edges = append(s.Edges, snapshot.Edge{From: from, To: k.to, FromOrigin: fromOrigin, Bytes: e.bytes, Live: e.live})
	}
	slices.SortFunc(s.Edges, func(a, b snapshot.Edge) int {
		return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
	slices.SortStableFunc(s.Peers, func(a, b snapshot.SwarmPeer) int {
		return cmp.Or(cmp.Compare(roleRank(a.Role), roleRank(b.Role)), cmp.Compare(a.Addr, b.Addr))
	})
	var agents, done int
	var progress float64
	var in, fromOrigins int64
	for _, p := range s.Peers {
		if p.Role != RoleAgent {
			continue
		}
		agents++
		if s.Pieces > 0 {
			progress += float64(min(p.Pieces, s.Pieces)) / float64(s.Pieces)
			if p.Pieces >= s.Pieces {
				done++
			}
		}
		in += p.BytesFromPeers + p.BytesFromOrigins
		fromOrigins += p.BytesFromOrigins
	}
	if agents > 0 {
		s.Progress = progress / float64(agents)
		s.Done = done == agents
	}
	if in > 0 {
		s.OriginShare = float64(fromOrigins) / float64(in)
	}
	if s.Size > 0 {
		s.OriginCopies = float64(b.originOut) / float64(s.Size)
	}
	if b.effN > 0 {
		s.Efficiency, s.Rate = b.effSum/float64(b.effN), b.rate
	}
	return s
}
