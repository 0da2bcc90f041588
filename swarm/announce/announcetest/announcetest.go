// Package announcetest is an in-memory tracker for tests of the swarm and of the agent. Tracker
// has the scheduler's Tracker methods (Announce and Metainfo) and no HTTP: a test wires it into
// schedulers or agents directly, seeds it with the origins and metainfo it needs, and can make
// it fail as an unreachable tracker does.
package announcetest

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
)

// IntervalSeconds is the announce interval every answer carries: short, so peers that join
// late are found quickly.
const IntervalSeconds = 1

// Tracker is an in-memory tracker: everyone who announces a blob is handed to everyone else who
// announces it. Its methods are safe for concurrent use. The zero value is not usable; call New.
//
// Unlike the real tracker it hands out every peer it knows, in a fixed order: the extra peers
// (AddPeers), then the origins (AddOrigin), then the other peers that announced the blob, by
// ID. It checks every announce the way the tracker's API does (announce.Request.Validate and
// the namespace grammar), so a scheduler that sends a malformed one fails its tests here too.
type Tracker struct {
	mu      sync.Mutex
	mi      map[digest.Digest]metainfo.MetaInfo
	origins []announce.Peer
	extra   []announce.Peer
	peers   map[digest.Digest]map[string]announce.Peer // digest -> peer id -> what it announced
	down    bool
}

// New returns an empty Tracker: it knows no blob and no peer.
func New() *Tracker {
	return &Tracker{mi: map[digest.Digest]metainfo.MetaInfo{}, peers: map[digest.Digest]map[string]announce.Peer{}}
}

// Announce records req's peer for req.Digest and answers with the extra peers, the origins and
// every other peer that announced the blob (by ID). It fails with announce.ErrUnavailable while the
// tracker is down, and with an error wrapping announce.ErrInvalid for a malformed request.
func (f *Tracker) Announce(_ context.Context, req announce.Request) (announce.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return announce.Response{}, announce.ErrUnavailable
	}
	if err := req.Validate(); err != nil {
		return announce.Response{}, err
	}
	ps := f.peers[req.Digest]
	if ps == nil {
		ps = map[string]announce.Peer{}
		f.peers[req.Digest] = ps
	}
	ps[req.PeerID] = announce.Peer{ID: req.PeerID, Addr: req.Addr, Complete: req.Complete}
	out := slices.Concat(f.extra, f.origins)
	n := len(out)
	for id, p := range ps {
		if id != req.PeerID {
			out = append(out, p)
		}
	}
	// By ID: the order of map iteration changes from call to call.
	slices.SortFunc(out[n:], func(a, b announce.Peer) int { return strings.Compare(a.ID, b.ID) })
	return announce.Response{Peers: out, IntervalSeconds: IntervalSeconds}, nil
}

// Metainfo returns the metainfo of d given to AddMetainfo. It fails with announce.ErrNotFound
// for a blob it does not know, announce.ErrUnavailable while the tracker is down, and an error
// wrapping announce.ErrInvalid for a malformed namespace.
func (f *Tracker) Metainfo(_ context.Context, ns string, d digest.Digest) (metainfo.MetaInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return metainfo.MetaInfo{}, announce.ErrUnavailable
	}
	if err := announce.CheckNamespace(ns); err != nil {
		return metainfo.MetaInfo{}, err
	}
	mi, ok := f.mi[d]
	if !ok {
		return metainfo.MetaInfo{}, announce.ErrNotFound
	}
	return mi, nil
}

// AddMetainfo makes Metainfo serve mis (in any namespace), as the tracker serves the metainfo
// of the blobs the origins hold.
func (f *Tracker) AddMetainfo(mis ...metainfo.MetaInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, mi := range mis {
		f.mi[mi.Digest] = mi
	}
}

// AddOrigin hands the peer id at addr to everyone who announces any blob, as an origin that
// holds it (Origin and Complete set).
func (f *Tracker) AddOrigin(id, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.origins = append(f.origins, announce.Peer{ID: id, Addr: addr, Origin: true, Complete: true})
}

// RemoveOrigins stops handing out the origins added so far, so that peers get a blob only
// from each other.
func (f *Tracker) RemoveOrigins() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.origins = nil
}

// AddPeers hands ps, as they are, to everyone who announces any blob, ahead of the origins:
// peers that never announce (misbehaving ones, in adversary tests).
func (f *Tracker) AddPeers(ps ...announce.Peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.extra = append(f.extra, ps...)
}

// Forget drops what peer id announced for d, as the real tracker does once a stopped peer's
// announce expires; the peer is handed out again if it announces again.
func (f *Tracker) Forget(d digest.Digest, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.peers[d], id)
}

// SetDown makes every call fail with announce.ErrUnavailable (down) or answer again (!down),
// as announce.Client reports a tracker that cannot be reached.
func (f *Tracker) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}
