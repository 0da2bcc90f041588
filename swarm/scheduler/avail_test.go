package scheduler_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// These tests put liars next to super-seeding origins: connections that claim pieces they do
// not have (docs/protocol.md, "Availability"), so that the origins stop revealing them and the
// agents wait for pieces nobody serves (attack-findings.md §4). The origins must count only
// what they have evidence for, demote and then blacklist the liars, and the honest download
// must finish.

// liarMode is how a liar answers an origin's requests.
type liarMode int

const (
	liarSilent   liarMode = iota // never answers
	liarRejects                  // declines each request (a cancel)
	liarWrong                    // answers with the wrong bytes
	liarHolds                    // holds the blob and answers correctly, but serves nobody else
	liarTurncoat                 // holds the first pieces, answers for them, lies about the rest
)

// availSwarm is a blob on striped origins.
type availSwarm struct {
	ft      *announcetest.Tracker
	origins []*node
	recs    []*recorder
	blob    []byte
	d       digest.Digest
}

func newAvailSwarm(t *testing.T, size, origins int, cfg scheduler.Config) *availSwarm {
	t.Helper()
	sw := &availSwarm{ft: announcetest.New(), blob: randomBlob(t, size)}
	for k := range origins {
		o, d := startOriginDeps(t, sw.ft, sw.blob, cfg, scheduler.Deps{
			SeedStripe: func(digest.Digest) (int, int) { return k, origins },
		})
		sw.origins, sw.d = append(sw.origins, o), d
		sw.recs = append(sw.recs, record(t, o.s))
	}
	return sw
}

// liar dials origin k, handshakes with an empty bitfield and claims pieces with have messages
// (all of them, or for a turncoat first its real ones), then keeps the connection alive and
// answers requests as mode says, until the origin closes the connection or ctx ends. It
// returns once the claims are sent; done is closed when the connection ends.
func (sw *availSwarm) liar(t *testing.T, ctx context.Context, k int, mode liarMode) (a *adversary, done <-chan session) {
	t.Helper()
	mi, err := sw.ft.Metainfo(ctx, "library/test", sw.d)
	require.NoError(t, err)
	a = newAdversary(t, mi)
	hs := a.handshake()
	hs.Bitfield = wire.NewBitfield(mi.NumPieces())
	hello, err := wire.AppendHandshake(nil, hs)
	require.NoError(t, err)
	claimed := make(chan struct{})
	ch := make(chan session, 1)
	real := mi.NumPieces() / 4 // a turncoat's real pieces: the first quarter
	go func() {
		ch <- a.dial(ctx, sw.origins[k].s.Addr(), hello, func(c *advConn) error {
			_ = c.nc.SetDeadline(time.Time{})
			stop := context.AfterFunc(ctx, func() { _ = c.nc.Close() })
			defer stop()
			first := mi.NumPieces()
			if mode == liarTurncoat {
				first = real
			}
			for i := range first {
				if err := c.send(wire.Have{Piece: uint32(i)}); err != nil {
					close(claimed)
					return errHangUp
				}
			}
			close(claimed)
			var wmu sync.Mutex
			send := func(m wire.Message) error { wmu.Lock(); defer wmu.Unlock(); return c.send(m) }
			quit := make(chan struct{})
			var keeper sync.WaitGroup
			defer func() { close(quit); keeper.Wait() }()
			keeper.Go(func() {
				keep := time.NewTicker(200 * time.Millisecond)
				defer keep.Stop()
				for {
					select {
					case <-quit:
						return
					case <-keep.C:
						if send(wire.KeepAlive{}) != nil {
							return
						}
					}
				}
			})
			for answered := 0; ; {
				r, err := c.nextRequest()
				if err != nil {
					return errHangUp
				}
				off, _ := mi.PieceRange(int(r.Piece))
				data := bytes.Clone(sw.blob[off+int64(r.Offset) : off+int64(r.Offset)+int64(r.Length)])
				lie := mode
				if mode == liarTurncoat {
					lie = liarHolds
					if int(r.Piece) >= real {
						lie = liarWrong
					}
				}
				switch lie {
				case liarSilent:
					continue
				case liarRejects:
					err = send(wire.Cancel(r))
				case liarWrong:
					data[0] ^= 1
					err = send(wire.Piece{Piece: r.Piece, Offset: r.Offset, Data: data})
				case liarHolds, liarTurncoat:
					err = send(wire.Piece{Piece: r.Piece, Offset: r.Offset, Data: data})
				}
				if err != nil {
					return errHangUp
				}
				answered++
				if mode == liarTurncoat && answered == 1 {
					// Verified now: claim the rest, which it does not have.
					for i := real; i < mi.NumPieces(); i++ {
						if err := send(wire.Have{Piece: uint32(i)}); err != nil {
							return errHangUp
						}
					}
				}
			}
		})
	}()
	select {
	case <-claimed:
	case <-ctx.Done():
		t.Fatal("the liar never got to claim its pieces")
	}
	return a, ch
}

// pull has a fresh agent pull the blob and returns how long it took.
func (sw *availSwarm) pull(t *testing.T) time.Duration {
	t.Helper()
	agent := startNode(t, t.TempDir(), scheduler.Config{}, sw.ft)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	got, err := pull(ctx, agent.s, sw.d)
	took := time.Since(start)
	require.NoError(t, err, "the download did not finish; agent %+v", agent.s.Stats())
	require.True(t, bytes.Equal(sw.blob, got), "the download has the blob's bytes")
	return took
}

// originsOut is what the origins sent, in copies of the blob.
func (sw *availSwarm) originsOut() float64 {
	var n int64
	for _, o := range sw.origins {
		for _, st := range o.s.Stats() {
			n += st.BytesOut
		}
	}
	return float64(n) / float64(len(sw.blob))
}

// One liar per striped origin, claiming every piece, each answering the origins' challenges
// its own way: the agent's download finishes, and every liar is demoted, then blacklisted.
func TestLiarsCannotStallSuperSeeding(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		origins int
		mode    liarMode
	}{
		{"silent/2 origins", 2, liarSilent},
		{"rejects/3 origins", 3, liarRejects},
		{"wrong bytes/2 origins", 2, liarWrong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sw := newAvailSwarm(t, 8<<20+4321, tc.origins, scheduler.Config{RequestTimeout: 500 * time.Millisecond})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			liars := make([]*adversary, tc.origins)
			for k := range sw.origins {
				liars[k], _ = sw.liar(t, ctx, k, tc.mode)
			}
			took := sw.pull(t)
			t.Logf("pulled past %d liars in %v; origins sent %.2f copies", len(liars), took, sw.originsOut())
			for k, a := range liars {
				sw.recs[k].waitFor(t, "demoted", a.kind(snapshot.EventDemoted))
				sw.recs[k].waitFor(t, "blacklist", a.kind(snapshot.EventBlacklist))
			}
		})
	}
}
