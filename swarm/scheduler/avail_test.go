package scheduler_test

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
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
	liarPatient                  // holds piece 0, proves it, then claims the rest and answers nothing
	liarOnePiece                 // holds piece 0, claims every piece at once, answers only for piece 0
)

// availSwarm is a blob on striped origins.
type availSwarm struct {
	ft      *announcetest.Tracker
	origins []*node
	recs    []*recorder
	blob    []byte
	d       digest.Digest
	clock   *stoppedClock
}

// stoppedClock is the origins' clock in tests that must not depend on how fast time passes:
// it moves only when the test says.
type stoppedClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stoppedClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *stoppedClock) advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// newAvailSwarm starts origins holding a fresh blob of size bytes, each with its stripe;
// clock, if not nil, is their clock; auth, if given, is their Deps.Authenticate.
func newAvailSwarm(t *testing.T, size, origins int, cfg scheduler.Config, clock *stoppedClock,
	auth ...func(ctx context.Context, nc net.Conn, id wire.PeerID) (string, error)) *availSwarm {
	t.Helper()
	sw := &availSwarm{ft: announcetest.New(), blob: randomBlob(t, size), clock: clock}
	var now func() time.Time
	if clock != nil {
		now = clock.Now
	}
	for k := range origins {
		deps := scheduler.Deps{
			SeedStripe: func(digest.Digest) (int, int) { return k, origins },
			Now:        now,
		}
		if len(auth) > 0 {
			deps.Authenticate = auth[0]
		}
		o, d := startOriginDeps(t, sw.ft, sw.blob, cfg, deps)
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
	if mode == liarPatient {
		real = 1
	}
	go func() {
		ch <- a.dial(ctx, sw.origins[k].s.Addr(), hello, func(c *advConn) error {
			_ = c.nc.SetDeadline(time.Time{})
			stop := context.AfterFunc(ctx, func() { _ = c.nc.Close() })
			defer stop()
			first := mi.NumPieces()
			if mode == liarTurncoat || mode == liarPatient {
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
				if mode == liarOnePiece {
					lie = liarHolds
					if r.Piece != 0 {
						lie = liarSilent
					}
				}
				if mode == liarTurncoat || mode == liarPatient {
					lie = liarHolds
					if int(r.Piece) >= real {
						lie = liarWrong
						if mode == liarPatient {
							lie = liarSilent
						}
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
				if (mode == liarTurncoat || mode == liarPatient) && answered == 1 {
					// Verified now: claim the rest, which it does not have.
					for _, i := range claimOrder(mode, real, mi.NumPieces()) {
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

// claimOrder is the order a liar claims pieces real..n-1 in once proved: a patient liar's is
// random, so that several of them cover different pieces.
func claimOrder(mode liarMode, real, n int) []int {
	order := make([]int, 0, n-real)
	for i := real; i < n; i++ {
		order = append(order, i)
	}
	if mode == liarPatient {
		mrand.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
	}
	return order
}

// pull has a fresh agent pull the blob and returns how long it took.
func (sw *availSwarm) pull(t *testing.T) time.Duration {
	t.Helper()
	return sw.pullWith(t, nil)
}

// pullWith is pull, calling connected (if not nil) once the agent is connected to every origin.
func (sw *availSwarm) pullWith(t *testing.T, connected func()) time.Duration {
	t.Helper()
	agent := startNode(t, t.TempDir(), scheduler.Config{}, sw.ft)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() { b, err := pull(ctx, agent.s, sw.d); ch <- result{b, err} }()
	if connected != nil {
		for _, rec := range sw.recs {
			rec.waitFor(t, "the agent's connection", func(e scheduler.Event) bool {
				return e.Kind == snapshot.EventConnOpen && e.Peer == agent.s.PeerID().String()
			})
		}
		connected()
	}
	r := <-ch
	took := time.Since(start)
	require.NoError(t, r.err, "the download did not finish; agent %+v", agent.s.Stats())
	require.True(t, bytes.Equal(sw.blob, r.b), "the download has the blob's bytes")
	return took
}

// waitCounted waits until every origin's counted availability of every piece satisfies ok.
func (sw *availSwarm) waitCounted(t *testing.T, ok func(int32) bool, what string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, o := range sw.origins {
			avail := o.s.CountedAvailability(sw.d)
			if avail == nil {
				return false
			}
			for _, n := range avail {
				if !ok(n) {
					return false
				}
			}
		}
		return true
	}, 20*time.Second, 5*time.Millisecond, what)
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
		{"silent/2 origins", 2, liarSilent}, // claims pieces and never serves them
		{"rejects/3 origins", 3, liarRejects},
		{"wrong bytes/2 origins", 2, liarWrong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sw := newAvailSwarm(t, 8<<20+4321, tc.origins, scheduler.Config{RequestTimeout: 500 * time.Millisecond}, nil)
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

// A peer that holds the blob proves its claims, but serves nobody but the origins' challenges
// (it is connected to nothing else): the origins count every piece as available and reveal
// none. The agent is stuck, and the origins fall back to revealing pieces others have, for as
// long as it makes no progress elsewhere: the download finishes. The origins' clock moves
// once, past stuckAfter, and then stands still: one stuck period must carry the agent to the
// end, however its have messages (of the pieces the other origin sent) look like progress.
// (Before, each origin revealed revealAhead pieces per stuck second and each other's pieces
// ended it: 65 pieces took 19 s, and with this clock the download stalled for good.)
func TestStuckAgentGetsPiecesWhateverPeersClaim(t *testing.T) {
	t.Parallel()
	clock := &stoppedClock{now: time.Now()}
	sw := newAvailSwarm(t, 4<<20+4321, 2, scheduler.Config{}, clock)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for k := range sw.origins {
		sw.liar(t, ctx, k, liarHolds)
	}
	sw.waitCounted(t, func(n int32) bool { return n == 1 }, "the proved claims count")
	took := sw.pullWith(t, func() { clock.advance(3 * time.Second) })
	t.Logf("pulled past 2 hoarders in %v; origins sent %.2f copies", took, sw.originsOut())
	for _, rec := range sw.recs {
		require.Empty(t, rec.all(func(e scheduler.Event) bool {
			return e.Kind == snapshot.EventDemoted || e.Kind == snapshot.EventBlacklist
		}), "a peer that proves its claims is not demoted")
	}
}

// A peer that proves its first claims (it holds the first quarter of the blob) and then claims
// the rest, which it does not have: a later claim is challenged at random, it answers with the
// wrong bytes, and it is demoted, then blacklisted; the download finishes.
func TestTurncoatIsCaught(t *testing.T) {
	t.Parallel()
	sw := newAvailSwarm(t, 8<<20+4321, 2, scheduler.Config{}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	liars := make([]*adversary, len(sw.origins))
	for k := range sw.origins {
		liars[k], _ = sw.liar(t, ctx, k, liarTurncoat)
	}
	took := sw.pull(t)
	t.Logf("pulled past 2 turncoats in %v; origins sent %.2f copies", took, sw.originsOut())
	for k, a := range liars {
		dem := sw.recs[k].waitFor(t, "demoted", a.kind(snapshot.EventDemoted))
		require.Contains(t, dem.Err, "wrong bytes")
		sw.recs[k].waitFor(t, "blacklist", a.kind(snapshot.EventBlacklist))
	}
	sw.waitCounted(t, func(n int32) bool { return n == 0 }, "nothing counts once the turncoats are gone")
}

// Honest agents answer the origins' challenges as they serve any request: with three striped
// origins, nobody is demoted, and the origins send about one copy between them, each a part.
func TestHonestSwarmProvesItsClaims(t *testing.T) {
	t.Parallel()
	sw := newAvailSwarm(t, 8<<20+777, 3, scheduler.Config{EgressRate: 8 << 20, Window: 128}, nil)
	agents := make([]*node, 6)
	for i := range agents {
		agents[i] = startNode(t, t.TempDir(), scheduler.Config{EgressRate: 8 << 20, IngressRate: 8 << 20}, sw.ft)
	}
	pullAll(t, agents, sw.d, sw.blob)
	var sent []float64
	for _, o := range sw.origins {
		var n int64
		for _, st := range o.s.Stats() {
			n += st.BytesOut
		}
		sent = append(sent, float64(n)/float64(len(sw.blob)))
	}
	t.Logf("origins sent %.2f copies (%.2f)", sw.originsOut(), sent)
	for k, rec := range sw.recs {
		require.Empty(t, rec.all(func(e scheduler.Event) bool {
			return e.Kind == snapshot.EventDemoted || e.Kind == snapshot.EventBlacklist
		}), "origin %d demoted or blacklisted an honest agent", k)
	}
	// Challenges slow to prove the agents' claims would have each origin reveal the others'
	// stripes again, towards three copies. Measured with three origins: 1.34–1.47 copies,
	// and 1.37–1.51 before claims had to be proved (6 runs each).
	require.Less(t, sw.originsOut(), 1.75, "the origins sent the same pieces")
	for k, o := range sw.origins {
		require.Positive(t, o.s.Challenges("proved"), "origin %d proved no agent's claims", k)
		require.Zero(t, o.s.Challenges("failed"), "origin %d: an honest agent failed a challenge", k)
	}
}

// Patient liars: each proves its claims with the one piece it holds (the first piece it
// claims is the one challenged), then claims the others one by one in random order and
// answers nothing. Each of its claims counts until one of them is challenged (one in 16) and
// that challenge times out, so twenty such connections per origin have most pieces counted
// as held (measured: 114–124 of 129) and revealed to nobody. The download finishes, by the
// stuck fallback, and the origins demote liars. Pull times are logged, not asserted; measured
// at review: 2.46 s past the liars against 0.093 s without, for 8 MiB.
func TestPatientLiars(t *testing.T) {
	t.Parallel()
	cfg := scheduler.Config{RequestTimeout: 5 * time.Second}
	base := newAvailSwarm(t, 8<<20+4321, 2, cfg, nil)
	baseTook := base.pull(t)
	sw := newAvailSwarm(t, 8<<20+4321, 2, cfg, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for k := range sw.origins {
		for range 20 {
			sw.liar(t, ctx, k, liarPatient)
		}
	}
	took := sw.pull(t)
	t.Logf("pull %v without liars, %v past 20 patient liars per origin; origins sent %.2f copies", baseTook, took, sw.originsOut())
	for k, rec := range sw.recs {
		rec.waitFor(t, fmt.Sprintf("origin %d demotes a liar", k), func(e scheduler.Event) bool { return e.Kind == snapshot.EventDemoted })
	}
}

// A liar that holds one piece claims it first, so that its first challenge is of that piece,
// and claims every other piece while the challenge waits for its answer; then it answers it.
// The answer vouches only for the claims made before the challenge, so the others are
// challenged in turn, go unanswered, and the liar is demoted, then blacklisted. (Before, they
// all counted, were never challenged again, and an 8 MiB pull took 3.0 s against 0.1 s.)
func TestOnePieceLiarIsCaught(t *testing.T) {
	t.Parallel()
	sw := newAvailSwarm(t, 8<<20+4321, 2, scheduler.Config{RequestTimeout: 500 * time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	liars := make([]*adversary, len(sw.origins))
	for k := range sw.origins {
		liars[k], _ = sw.liar(t, ctx, k, liarOnePiece)
	}
	took := sw.pull(t)
	t.Logf("pulled past %d one-piece liars in %v; origins sent %.2f copies", len(liars), took, sw.originsOut())
	for k, a := range liars {
		sw.recs[k].waitFor(t, "demoted", a.kind(snapshot.EventDemoted))
		sw.recs[k].waitFor(t, "blacklist", a.kind(snapshot.EventBlacklist))
	}
	sw.waitCounted(t, func(n int32) bool { return n == 0 }, "nothing counts once the liars are gone")
}

// A liar blacklisted for its claims does not come back under a fresh peer id: with
// certificates, the origin blacklists the pair of its IP address and its certificate's holder
// too. Here Deps.Authenticate stands in for TLS, naming the liars' ids "mallory" and the
// honest agent's another holder, all on 127.0.0.1: the liar's new connection is refused, and
// the honest agent, from the same address, still pulls.
func TestBlacklistedLiarCannotReturnUnderANewID(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	mallory := map[wire.PeerID]bool{}
	auth := func(_ context.Context, _ net.Conn, id wire.PeerID) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if mallory[id] {
			return "mallory", nil
		}
		return "agent-1", nil
	}
	sw := newAvailSwarm(t, 4<<20+4321, 1, scheduler.Config{RequestTimeout: 300 * time.Millisecond}, nil, auth)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	mi, err := sw.ft.Metainfo(ctx, "library/test", sw.d)
	require.NoError(t, err)
	liar := func() *adversary {
		a := newAdversary(t, mi)
		mu.Lock()
		mallory[a.id] = true
		mu.Unlock()
		return a
	}
	first := liar()
	hs := first.handshake() // claims every piece in its handshake
	hello, err := wire.AppendHandshake(nil, hs)
	require.NoError(t, err)
	done := make(chan session, 1)
	go func() {
		done <- first.dial(ctx, sw.origins[0].s.Addr(), hello, func(c *advConn) error {
			_ = c.nc.SetDeadline(time.Now().Add(sessionDeadline))
			for { // answer nothing
				if _, err := c.nextRequest(); err != nil {
					return errHangUp
				}
			}
		})
	}()
	sw.recs[0].waitFor(t, "blacklist", first.kind(snapshot.EventBlacklist))
	<-done

	again := liar()
	s := again.dial(ctx, sw.origins[0].s.Addr(), nil, func(*advConn) error { return errHangUp })
	require.Nil(t, s.agentHS, "the blacklisted holder got a handshake under a fresh peer id")
	e := sw.recs[0].waitFor(t, "refusal", func(e scheduler.Event) bool {
		return e.Kind == snapshot.EventConnRejected && e.Peer == again.id.String()
	})
	require.Contains(t, e.Err, "blacklisted")
	sw.pull(t) // the honest agent, from the same address under another holder
}
