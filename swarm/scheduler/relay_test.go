package scheduler_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/scheduler"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// A liar that holds nothing claims every piece and answers each challenge with the origin's
// own bytes: it asks the challenging origin for the very block it was asked for, on the same
// connection, and sends the answer back. A super-seeding origin serves only the pieces it
// revealed to the connection, and none under challenge, so the liar has nothing to relay: it
// is demoted, then blacklisted, and the agent's download finishes.
func TestRelayingLiarIsCaught(t *testing.T) {
	t.Parallel()
	sw := newAvailSwarm(t, 8<<20+4321, 2, scheduler.Config{RequestTimeout: 500 * time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	mi, err := sw.ft.Metainfo(ctx, "library/test", sw.d)
	require.NoError(t, err)
	liars := make([]*adversary, len(sw.origins))
	for k := range sw.origins {
		a := newAdversary(t, mi)
		hs := a.handshake()
		hs.Bitfield = wire.NewFullBitfield(mi.NumPieces())
		hello, err := wire.AppendHandshake(nil, hs)
		require.NoError(t, err)
		liars[k] = a
		go a.dial(ctx, sw.origins[k].s.Addr(), hello, func(c *advConn) error {
			_ = c.nc.SetDeadline(time.Time{})
			stop := context.AfterFunc(ctx, func() { _ = c.nc.Close() })
			defer stop()
			for {
				m, err := c.dec.ReadMessage()
				if err != nil {
					return errHangUp
				}
				switch m := m.(type) {
				case wire.Request:
					err = c.send(m) // ask the origin for what it asked of us
				case wire.Piece:
					err = c.send(m) // and hand it back as our answer
				}
				if err != nil {
					return errHangUp
				}
			}
		})
	}
	took := sw.pull(t)
	t.Logf("pulled past %d relaying liars in %v; origins sent %.2f copies", len(liars), took, sw.originsOut())
	for k, a := range liars {
		sw.recs[k].waitFor(t, "demoted", a.kind(snapshot.EventDemoted))
		sw.recs[k].waitFor(t, "blacklist", a.kind(snapshot.EventBlacklist))
	}
}

// A peer that takes the last byte of each piece a super-seeding origin reveals to it must not
// have the piece counted as its (it would be revealed to nobody else, a byte per piece being
// the whole price of the stall): only a piece sent in full counts. The peer sips three of the
// pieces revealed to it and takes the fourth whole; the origin serves in order, so once the
// whole piece arrived the sips were all recorded.
func TestSippedPiecesDoNotCount(t *testing.T) {
	t.Parallel()
	sw := newAvailSwarm(t, 4<<20+4321, 1, scheduler.Config{}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	mi, err := sw.ft.Metainfo(ctx, "library/test", sw.d)
	require.NoError(t, err)
	a := newAdversary(t, mi)
	hs := a.handshake()
	hs.Bitfield = wire.NewBitfield(mi.NumPieces())
	hello, err := wire.AppendHandshake(nil, hs)
	require.NoError(t, err)
	var sipped []int
	var avail []int32
	whole, gotWhole := -1, false
	a.dial(ctx, sw.origins[0].s.Addr(), hello, func(c *advConn) error {
		_ = c.nc.SetDeadline(time.Now().Add(20 * time.Second))
		for whole < 0 {
			m, err := c.dec.ReadMessage()
			if err != nil {
				return err
			}
			h, ok := m.(wire.Have)
			if !ok {
				continue
			}
			i := int(h.Piece)
			_, l := mi.PieceRange(i)
			r := wire.Request{Piece: h.Piece, Offset: uint32(l - 1), Length: 1}
			if len(sipped) == 3 {
				r, whole = wire.Request{Piece: h.Piece, Length: uint32(l)}, i
			} else {
				sipped = append(sipped, i)
			}
			if err := c.send(r); err != nil {
				return err
			}
		}
		for {
			m, err := c.dec.ReadMessage()
			if err != nil {
				return err
			}
			if p, ok := m.(wire.Piece); ok && int(p.Piece) == whole {
				gotWhole = true
				// Look while still connected: a peer that leaves takes its pieces out of
				// the count.
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
					if avail = sw.origins[0].s.CountedAvailability(sw.d); avail != nil && avail[whole] == 1 {
						break
					}
				}
				return errHangUp
			}
		}
	})
	require.True(t, gotWhole, "the origin served the whole piece")
	require.NotNil(t, avail)
	for _, i := range sipped {
		require.Zero(t, avail[i], "piece %d counts as the peer's for its last byte", i)
	}
	require.EqualValues(t, 1, avail[whole], "the piece sent whole counts")
}
