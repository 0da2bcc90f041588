package piece_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/krakenctl/krakenctl/swarm/piece"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// benchPicker returns a picker for 2048 pieces with 50 connected peers (one an origin), each
// non-origin peer holding each piece with probability 1/sparse, and this node holding a random
// quarter.
func benchPicker(b *testing.B, policy piece.OriginPolicy, sparse int) (*piece.Picker, []piece.PeerID) {
	const (
		pieces = 2048
		peers  = 50
	)
	rnd := rand.New(rand.NewPCG(1, 2))
	p := newPicker(b, piece.Config{Pieces: pieces, OriginPolicy: policy}, 3)
	ids := make([]piece.PeerID, peers)
	for n := range peers {
		ids[n] = piece.PeerID(fmt.Sprintf("peer%02d", n))
		bits := wire.NewFullBitfield(pieces)
		if n > 0 {
			bits = wire.NewBitfield(pieces)
			for i := range pieces {
				if rnd.IntN(sparse) == 0 {
					bits.Set(i)
				}
			}
		}
		addPeer(b, p, ids[n], n == 0, bits)
	}
	for i := range pieces {
		if rnd.IntN(4) == 0 {
			if _, err := p.Received("", i); err != nil {
				b.Fatal(err)
			}
		}
	}
	return p, ids
}

// BenchmarkNext measures one Next of 8 pieces (then releases them, to keep the state steady)
// with 2048 pieces and 50 peers: asking a peer (peers hold half the pieces) and asking the
// origin (peers hold 1/16 of the pieces, so a few dozen are unique to the origin).
func BenchmarkNext(b *testing.B) {
	for _, bc := range []struct {
		name   string
		peer   int
		sparse int
	}{{"peer", 7, 2}, {"origin", 0, 16}} {
		b.Run(bc.name, func(b *testing.B) {
			p, ids := benchPicker(b, piece.OriginOnlyUnique, bc.sparse)
			id := ids[bc.peer]
			b.ReportAllocs()
			for b.Loop() {
				got := p.Next(id, 8)
				if len(got) == 0 {
					b.Fatal("nothing picked")
				}
				for _, i := range got {
					p.Release(id, i)
				}
			}
		})
	}
}

// BenchmarkNextEndgame measures Next when every missing piece is already requested once.
func BenchmarkNextEndgame(b *testing.B) {
	p, ids := benchPicker(b, piece.OriginAsPeer, 2)
	for p.Next(ids[0], 2048) != nil {
	}
	if !p.Endgame() {
		b.Fatal("not in endgame")
	}
	id := ids[9]
	b.ReportAllocs()
	for b.Loop() {
		got := p.Next(id, 8)
		if len(got) == 0 {
			b.Fatal("nothing picked")
		}
		for _, i := range got {
			p.Release(id, i)
		}
	}
}

// BenchmarkPeerHas measures the have path, including a peer that comes and goes.
func BenchmarkPeerHas(b *testing.B) {
	p, _ := benchPicker(b, piece.OriginOnlyUnique, 2)
	full := wire.NewFullBitfield(2048)
	b.ReportAllocs()
	for b.Loop() {
		if err := p.AddPeer("x", false); err != nil {
			b.Fatal(err)
		}
		if _, err := p.PeerBitfield("x", full); err != nil {
			b.Fatal(err)
		}
		p.PeerGone("x")
	}
}
