package tracker

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// Bounds of the swarm list (api.SwarmsPath): ?limit= defaults to DefaultSwarmsLimit and is
// capped at MaxSwarmsLimit. One swarm's answer lists every live member: a swarm of 15,000
// agents is a document of about 3.2 MB (TestSwarmOfManyMembers), built in one pass over the
// swarm under the peer table's lock, as a sweep is.
const (
	DefaultSwarmsLimit = 1000
	MaxSwarmsLimit     = 10000
)

// Member roles in the swarm list.
const (
	roleAgent  = "agent"
	roleOrigin = "origin"
)

// summary returns sw's document without members, counting its live peers at now; ok is false
// when none is live. The caller holds the table's lock.
func (sw *peerSwarm) summary(d digest.Digest, now time.Time) (snapshot.TrackerSwarm, bool) {
	out := snapshot.TrackerSwarm{Digest: d, Namespace: sw.ns}
	for _, l := range [][]*peerEntry{sw.seeders, sw.leechers} {
		for _, e := range l {
			if !e.expires.After(now) {
				continue
			}
			if e.complete {
				out.Seeders++
			} else {
				out.Leechers++
			}
			if e.last.After(out.LastAnnounce) {
				out.LastAnnounce = e.last
			}
		}
	}
	return out, out.Seeders+out.Leechers > 0
}

// list returns the swarms with a live peer at now, the most recently announced first (then by
// digest), at most limit of them.
func (t *peerTable) list(now time.Time, limit int) []snapshot.TrackerSwarm {
	t.mu.Lock()
	out := make([]snapshot.TrackerSwarm, 0, min(len(t.swarms), limit))
	for d, sw := range t.swarms {
		if s, ok := sw.summary(d, now); ok {
			out = append(out, s)
		}
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b snapshot.TrackerSwarm) int {
		if c := b.LastAnnounce.Compare(a.LastAnnounce); c != 0 {
			return c
		}
		return cmp.Compare(a.Digest, b.Digest)
	})
	return out[:min(len(out), limit)]
}

// swarm returns d's swarm with its live peers as members (seeders first, then by progress,
// then by address), or ok false when no peer of d is live at now.
func (t *peerTable) swarm(d digest.Digest, now time.Time) (snapshot.TrackerSwarm, bool) {
	t.mu.Lock()
	sw := t.swarms[d]
	if sw == nil {
		t.mu.Unlock()
		return snapshot.TrackerSwarm{}, false
	}
	out, ok := sw.summary(d, now)
	if !ok {
		t.mu.Unlock()
		return out, false
	}
	out.Members = make([]snapshot.TrackerMember, 0, out.Seeders+out.Leechers)
	for _, l := range [][]*peerEntry{sw.seeders, sw.leechers} {
		for _, e := range l {
			if e.expires.After(now) {
				out.Members = append(out.Members, snapshot.TrackerMember{
					PeerID: e.id, Addr: e.addr, API: e.api, Role: roleAgent, Complete: e.complete,
					Have: e.have, Pieces: e.pieces, LastAnnounce: e.last,
				})
			}
		}
	}
	// Sorted after the lock is let go: every announce waits for it, and a swarm may have
	// thousands of members.
	t.mu.Unlock()
	slices.SortFunc(out.Members, func(a, b snapshot.TrackerMember) int {
		switch {
		case a.Complete != b.Complete:
			if a.Complete {
				return -1
			}
			return 1
		case a.Have != b.Have:
			return cmp.Compare(b.Have, a.Have)
		}
		return cmp.Compare(a.Addr, b.Addr)
	})
	return out, true
}

// handleSwarms serves the swarm list: every swarm with a live peer, without members.
func (s *Server) handleSwarms(w http.ResponseWriter, r *http.Request) {
	limit := DefaultSwarmsLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			registry.WriteError(w, r, errcode.Errorf(http.StatusBadRequest, errcode.CodePaginationNumberInvalid,
				"limit %q: want a whole number of swarms, at least 1 (at most %d are sent)", v, MaxSwarmsLimit))
			return
		}
		limit = min(n, MaxSwarmsLimit)
	}
	writeJSON(w, s.peers.list(s.now(), limit))
}

// handleSwarm serves one swarm with its members: the blob's owning origins (role origin, the
// ones the tracker can reach, in rendezvous order) first, then its live peers.
func (s *Server) handleSwarm(w http.ResponseWriter, r *http.Request) {
	d, err := registry.ParseDigest(r.PathValue("digest"))
	if err == nil {
		if cerr := announce.CheckDigest(d); cerr != nil {
			err = &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeDigestInvalid, Message: cerr.Error(), Err: cerr}
		}
	}
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	sw, ok := s.peers.swarm(d, s.now())
	if !ok {
		registry.WriteError(w, r, errcode.Errorf(http.StatusNotFound, errcode.CodeBlobUnknown,
			"no peer of %s has announced to this tracker within peer_ttl (%s)", d, s.cfg.PeerTTL))
		return
	}
	origins := s.origins.members(d, s.cfg.Replicas)
	seen := make(map[string]bool, len(origins))
	for _, o := range origins {
		seen[o.PeerID] = true
	}
	// An origin's own announce (its certificate may announce) is not listed twice.
	sw.Members = append(origins, slices.DeleteFunc(sw.Members, func(m snapshot.TrackerMember) bool { return seen[m.PeerID] })...)
	writeJSON(w, sw)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
