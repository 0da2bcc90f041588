package piece_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/piece"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// TestRandomOperationsKeepInvariants drives a picker with random peer events, requests,
// arrivals, timeouts and departures, and after every step checks it against a model kept by
// the test: availability counts, the endgame condition, the duplicate bound, and that every
// Next result is eligible and no eligible piece left out is rarer than one picked.
func TestRandomOperationsKeepInvariants(t *testing.T) {
	t.Parallel()
	const pieces = 12
	endgameSteps := 0
	for seed := range uint64(30) {
		rnd := rand.New(rand.NewPCG(seed, 5))
		policy := piece.OriginPolicy(seed % 3)
		maxDup := 1 + int(seed%3)
		c := &clock{now: t0}
		p := newPicker(t, piece.Config{Pieces: pieces, OriginPolicy: policy, EndgameDuplicates: maxDup, Now: c.Now}, seed)
		have := map[piece.PeerID]*wire.Bitfield{}
		origin := map[piece.PeerID]bool{}
		ids := []piece.PeerID{"o1", "o2", "a", "b", "c", "d"}

		for step := range 400 {
			id := ids[rnd.IntN(len(ids))]
			switch op := rnd.IntN(10); {
			case op == 0: // connect
				if have[id] != nil {
					require.ErrorIs(t, p.AddPeer(id, false), piece.ErrPeerExists)
					continue
				}
				isOrigin := id[0] == 'o'
				require.NoError(t, p.AddPeer(id, isOrigin))
				b := wire.NewBitfield(pieces)
				if isOrigin {
					b = wire.NewFullBitfield(pieces)
				}
				_, err := p.PeerBitfield(id, b)
				require.NoError(t, err)
				have[id], origin[id] = b, isOrigin
			case op == 1: // disconnect
				for _, r := range p.PeerGone(id) {
					require.Equal(t, id, r.Peer)
				}
				delete(have, id)
				require.Nil(t, p.Outstanding(id))
			case op <= 3: // have
				i := rnd.IntN(pieces)
				_, err := p.PeerHas(id, i)
				if have[id] == nil {
					require.ErrorIs(t, err, piece.ErrUnknownPeer)
					continue
				}
				require.NoError(t, err)
				have[id].Set(i)
			case op <= 6: // request
				if have[id] == nil {
					require.Nil(t, p.Next(id, 4))
					continue
				}
				checkNext(t, p, id, have, origin, policy, maxDup, 1+rnd.IntN(5))
			case op <= 8: // arrival of an outstanding piece
				out := p.Outstanding(id)
				if len(out) == 0 {
					continue
				}
				i := out[rnd.IntN(len(out))]
				others := slices.DeleteFunc(p.Requesters(i), func(q piece.PeerID) bool { return q == id })
				cancel, err := p.Received(id, i)
				require.NoError(t, err)
				if len(others) == 0 {
					require.Empty(t, cancel)
				} else {
					require.Equal(t, others, cancel, "cancels go to the other requesters, oldest first")
				}
				_, err = p.Received(id, i)
				require.ErrorIs(t, err, piece.ErrAlreadyHave)
			default: // time passes
				c.now = c.now.Add(time.Second)
				for _, r := range p.Timeout(c.now, 3*time.Second) {
					require.GreaterOrEqual(t, c.now.Sub(r.Sent), 3*time.Second)
				}
			}
			checkInvariants(t, p, have, maxDup, step)
			if p.Endgame() {
				endgameSteps++
			}
		}
	}
	t.Logf("%d steps in endgame", endgameSteps)
	require.Greater(t, endgameSteps, 100, "the endgame paths were exercised")
}

func checkInvariants(t *testing.T, p *piece.Picker, have map[piece.PeerID]*wire.Bitfield, maxDup, step int) {
	t.Helper()
	requested := 0
	for i := range p.Pieces() {
		n := 0
		for _, b := range have {
			if b.Has(i) {
				n++
			}
		}
		require.Equal(t, n, p.Availability(i), "step %d piece %d availability", step, i)
		rs := p.Requesters(i)
		require.LessOrEqual(t, len(rs), maxDup)
		require.Len(t, slices.Compact(slices.Sorted(slices.Values(rs))), len(rs), "one request per peer")
		if p.Has(i) {
			require.Empty(t, rs)
		} else if len(rs) > 0 {
			requested++
		}
		for _, q := range rs {
			require.Contains(t, p.Outstanding(q), i)
		}
	}
	require.Equal(t, p.Missing() > 0 && requested == p.Missing(), p.Endgame(), "step %d endgame", step)
}

// checkNext calls Next and checks its choice against the contract.
func checkNext(t *testing.T, p *piece.Picker, id piece.PeerID, have map[piece.PeerID]*wire.Bitfield, origin map[piece.PeerID]bool, policy piece.OriginPolicy, maxDup, limit int) {
	t.Helper()
	endgame := p.Endgame()
	asOrigin := origin[id] && policy != piece.OriginAsPeer
	key := map[int]int{}
	for i := range p.Pieces() {
		rs := p.Requesters(i)
		if p.Has(i) || !have[id].Has(i) || slices.Contains(rs, id) {
			continue
		}
		if len(rs) > 0 && (!endgame || len(rs) >= maxDup) {
			continue
		}
		if len(rs) > 0 && asOrigin && slices.ContainsFunc(rs, func(q piece.PeerID) bool { return origin[q] }) {
			continue // endgame does not duplicate an origin's request to another origin
		}
		holders := p.Availability(i)
		if asOrigin {
			holders = 0
			for q, b := range have {
				if !origin[q] && b.Has(i) {
					holders++
				}
			}
			if holders > 0 && policy == piece.OriginOnlyUnique {
				continue
			}
		}
		key[i] = len(rs)*1000 + holders
	}
	got := p.Next(id, limit)
	require.Len(t, got, min(limit, len(key)))
	last := -1
	for _, i := range got {
		k, ok := key[i]
		require.True(t, ok, "piece %d is not eligible", i)
		require.LessOrEqual(t, last, k, "ordered by rarity")
		last = k
		delete(key, i)
	}
	for i, k := range key {
		require.GreaterOrEqual(t, k, last, "left-out piece %d is rarer than a picked one", i)
	}
}
