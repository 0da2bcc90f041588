package scheduler_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// These tests put a malicious peer (harness_adversary_test.go) in an agent's swarm, first as
// the only source of the blob, and check that the agent drops it, blacklists it and still
// finishes the download from the origin with the right bytes.

// advBlobSize cuts into 33 pieces of 64 KiB, the last one short (12345 bytes).
const advBlobSize = 2<<20 + 12345

// advSwarm is one origin holding a fresh blob, behind a gated tracker.
type advSwarm struct {
	ft     *announcetest.Tracker
	gt     *gatedTracker
	origin *node
	blob   []byte
	d      digest.Digest
	mi     metainfo.MetaInfo
}

func newAdvSwarm(t *testing.T) *advSwarm {
	t.Helper()
	ft := announcetest.New()
	blob := randomBlob(t, advBlobSize)
	origin, d := startOrigin(t, ft, blob, scheduler.Config{})
	mi, err := ft.Metainfo(t.Context(), "library/test", d)
	require.NoError(t, err)
	require.Equal(t, 33, mi.NumPieces(), "the cases below assume this layout")
	return &advSwarm{ft: ft, gt: newGatedTracker(ft), origin: origin, blob: blob, d: d, mi: mi}
}

// handOut makes the tracker hand the adversary to everyone, before anyone else.
func (sw *advSwarm) handOut(a *adversary) {
	sw.ft.AddPeers(a.peer())
}

type pullResult struct {
	data []byte
	err  error
}

// pullAsync pulls the blob through agent in the background.
func (sw *advSwarm) pullAsync(t *testing.T, agent *scheduler.Scheduler) <-chan pullResult {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	ch := make(chan pullResult, 1)
	go func() {
		defer cancel()
		b, err := pull(ctx, agent, sw.d)
		ch <- pullResult{b, err}
	}()
	return ch
}

// finished checks that the pull returned the blob and that the agent committed it.
func (sw *advSwarm) finished(t *testing.T, agent *node, ch <-chan pullResult) {
	t.Helper()
	var r pullResult
	select {
	case r = <-ch:
	case <-time.After(time.Minute):
		t.Fatal("the download never finished")
	}
	require.NoError(t, r.err)
	require.Equal(t, sw.d, digest.FromBytes(r.data), "the download has the blob's digest")
	require.True(t, bytes.Equal(sw.blob, r.data), "the download has the blob's bytes")
	require.Eventually(t, func() bool { _, err := agent.store.Stat(sw.d); return err == nil },
		20*time.Second, 5*time.Millisecond, "the blob is committed to the agent's store")
}

// onlyAdversaryBlacklisted checks that the agent blacklisted nobody but the adversary (the
// origin is never collateral damage).
func onlyAdversaryBlacklisted(t *testing.T, rec *recorder, a *adversary) {
	t.Helper()
	for _, e := range rec.all(func(e scheduler.Event) bool { return e.Kind == snapshot.EventBlacklist }) {
		require.True(t, e.Peer == a.id.String() || e.Addr == a.addr, "blacklisted someone else: %+v", e)
	}
}

// advCase is one way to misbehave.
type advCase struct {
	name string
	// hello turns the honest handshake into the bytes sent; nil sends it as is.
	hello func(h wire.Handshake) ([]byte, error)
	// script runs after the handshakes.
	script func(c *advConn) error
	// wantErr is carried by the blacklist event's error; nil is the control case: a peer that
	// behaves and hangs up, which must not be blacklisted.
	wantErr error
	// handshakeFails: the agent refuses the handshake, so no connection opens.
	handshakeFails bool
	// stall: the case needs a short request timeout.
	stall bool
	// badPiece: the case sends a piece that fails its hash.
	badPiece bool
}

func raw(b ...byte) func(*advConn) error { return func(c *advConn) error { return c.write(b) } }

func msg(m wire.Message) func(*advConn) error { return func(c *advConn) error { return c.send(m) } }

func hangUp(*advConn) error { return errHangUp }

// answerWithBadPiece answers the agent's first request with random bytes of the right length.
func answerWithBadPiece(c *advConn) error {
	r, err := c.nextRequest()
	if err != nil {
		return err
	}
	junk := make([]byte, r.Length)
	_, _ = rand.Read(junk)
	if err := wire.WritePieceHeader(c.nc, r.Piece, r.Offset, r.Length); err != nil {
		return err
	}
	return c.write(junk)
}

// stallRequests takes the agent's first request and never answers any.
func stallRequests(c *advConn) error {
	_, err := c.nextRequest()
	return err
}

// pieceHeaderThenData sends a piece header and length bytes of payload. The agent may close
// the connection on seeing the header, so the payload's fate does not matter.
func pieceHeaderThenData(piece func(mi metainfo.MetaInfo) uint32, length uint32) func(*advConn) error {
	return func(c *advConn) error {
		if err := wire.WritePieceHeader(c.nc, piece(c.mi), 0, length); err != nil {
			return err
		}
		_ = c.write(make([]byte, length))
		return nil
	}
}

func pastLast(mi metainfo.MetaInfo) uint32 { return uint32(mi.NumPieces()) }
func last(mi metainfo.MetaInfo) uint32     { return uint32(mi.NumPieces() - 1) }

func frame(length uint32, rest ...byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, length), rest...)
}

func modified(f func(h *wire.Handshake)) func(wire.Handshake) ([]byte, error) {
	return func(h wire.Handshake) ([]byte, error) {
		f(&h)
		return wire.AppendHandshake(nil, h)
	}
}

func rawHandshake(f func(b []byte)) func(wire.Handshake) ([]byte, error) {
	return func(h wire.Handshake) ([]byte, error) {
		b, err := wire.AppendHandshake(nil, h)
		if err == nil {
			f(b)
		}
		return b, err
	}
}

// Misbehaviour after the handshakes, in both directions.
var afterHandshake = []advCase{
	// Garbage frames.
	{name: "garbage/unknown message type", script: raw(frame(1, 0xEE)...), wantErr: wire.ErrUnknownType},
	{name: "garbage/text instead of frames", script: raw([]byte("GET / HTTP/1.1\r\nHost: agent\r\n\r\n")...), wantErr: wire.ErrFrameTooLarge},
	{name: "garbage/empty frame", script: raw(frame(0)...), wantErr: wire.ErrMalformed},
	{name: "garbage/have with a short body", script: raw(frame(3, byte(wire.TypeHave), 0, 0)...), wantErr: wire.ErrMalformed},
	{name: "garbage/bitfield with spare bits set", script: raw(frame(10, byte(wire.TypeBitfield), 0, 0, 0, 33, 0xff, 0xff, 0xff, 0xff, 0xff)...), wantErr: wire.ErrMalformed},
	{name: "garbage/error message not UTF-8", script: raw(frame(5, byte(wire.TypeError), 0, 1, 0xff, 0xfe)...), wantErr: wire.ErrMalformed},
	// Oversized frames.
	{name: "oversized/length 2^32-1", script: raw(frame(0xffffffff, byte(wire.TypePiece))...), wantErr: wire.ErrFrameTooLarge},
	{name: "oversized/one byte over the maximum", script: raw(frame(wire.MaxFrameLength+1, byte(wire.TypePiece))...), wantErr: wire.ErrFrameTooLarge},
	// Pieces with bad hashes.
	{name: "bad hash/random bytes for a requested piece", script: answerWithBadPiece, wantErr: scheduler.ErrBadPiece, badPiece: true},
	// Indices out of range.
	{name: "out of range/have past the last piece", script: func(c *advConn) error { return msg(wire.Have{Piece: pastLast(c.mi)})(c) }, wantErr: scheduler.ErrProtocol},
	{name: "out of range/have beyond the format's limit", script: raw(frame(5, byte(wire.TypeHave), 0xff, 0xff, 0xff, 0xff)...), wantErr: wire.ErrMalformed},
	{name: "out of range/request past the last piece", script: func(c *advConn) error { return msg(wire.Request{Piece: pastLast(c.mi), Length: 1})(c) }, wantErr: scheduler.ErrProtocol},
	{name: "out of range/piece past the last piece", script: pieceHeaderThenData(pastLast, 16), wantErr: scheduler.ErrProtocol},
	{name: "out of range/block beyond the end of the last piece", script: pieceHeaderThenData(last, 64<<10), wantErr: scheduler.ErrProtocol},
	{name: "out of range/bitfield of the wrong size", script: func(c *advConn) error {
		return msg(wire.BitfieldMsg{Bitfield: wire.NewFullBitfield(c.mi.NumPieces() + 1)})(c)
	}, wantErr: scheduler.ErrProtocol},
	// Requests that are never answered.
	{name: "stall/requests never answered", script: stallRequests, wantErr: scheduler.ErrStalled, stall: true},
	// Control: a peer that hangs up cleanly is not blacklisted, so the checks above can fail.
	{name: "control/clean hang-up", script: hangUp},
}

// Handshakes the agent must refuse when it dials the adversary.
var badHandshakes = []advCase{
	{name: "handshake/another blob's digest", hello: modified(func(h *wire.Handshake) { h.Digest = digest.FromString("another blob") }), wantErr: scheduler.ErrProtocol},
	{name: "handshake/another blob length", hello: modified(func(h *wire.Handshake) { h.Length++ }), wantErr: scheduler.ErrProtocol},
	{name: "handshake/another piece length", hello: modified(func(h *wire.Handshake) {
		h.PieceLength *= 2
		h.Bitfield = wire.NewFullBitfield(h.NumPieces())
	}), wantErr: scheduler.ErrProtocol},
	{name: "handshake/not the peer id the tracker gave", hello: modified(func(h *wire.Handshake) { h.PeerID = wire.RandomPeerID() }), wantErr: scheduler.ErrProtocol},
	{name: "handshake/bad magic", hello: rawHandshake(func(b []byte) { copy(b, "HTTP") }), wantErr: wire.ErrBadMagic},
	{name: "handshake/bitfield with spare bits set", hello: rawHandshake(func(b []byte) { b[len(b)-1] |= 1 }), wantErr: wire.ErrMalformed},
}

// TestAdversaryDialledByAgent hands the adversary out as the agent's only source: the agent
// dials it, it misbehaves, and the tracker reveals the origin only then. The agent must close
// the connection, blacklist the adversary (an event, and no new connection however often the
// tracker hands it out again), and finish the download from the origin.
func TestAdversaryDialledByAgent(t *testing.T) {
	t.Parallel()
	cases := append([]advCase{}, afterHandshake...)
	for _, tc := range badHandshakes {
		tc.handshakeFails = true
		cases = append(cases, tc)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sw := newAdvSwarm(t)
			cfg := scheduler.Config{}
			if tc.stall {
				cfg.RequestTimeout = 300 * time.Millisecond
			}
			agent := startNode(t, t.TempDir(), cfg, sw.gt)
			rec := record(t, agent.s)
			adv := newAdversary(t, sw.mi)
			adv.hello, adv.script = tc.hello, tc.script
			sw.handOut(adv)
			got := sw.pullAsync(t, agent.s)

			select {
			case <-adv.misbehaved:
			case <-time.After(30 * time.Second):
				t.Fatalf("the agent never dialled the adversary; events: %v", rec.kinds())
			}
			sw.gt.open()
			first := adv.nextSession(t)
			require.NoError(t, first.hsErr, "the agent sends its handshake")
			require.NoError(t, first.scriptErr)

			if tc.wantErr == nil {
				sw.finished(t, agent, got)
				require.Eventually(t, func() bool { return adv.accepts.Load() >= 2 }, 20*time.Second, 5*time.Millisecond,
					"the agent dials a peer that hung up cleanly again")
				require.Empty(t, rec.all(func(e scheduler.Event) bool { return e.Kind == snapshot.EventBlacklist }))
				return
			}

			require.True(t, first.closedByAgent, "the agent closes the connection (it ended with %v)", first.endErr)
			bl := rec.waitFor(t, "blacklist", adv.kind(snapshot.EventBlacklist))
			require.True(t, errIs(bl, tc.wantErr), "blacklisted for %q, want %q", bl.Err, tc.wantErr)
			bannedAt := sw.gt.announced(agent.s.PeerID())
			if tc.handshakeFails {
				rej := rec.waitFor(t, "rejected", adv.kind(snapshot.EventConnRejected))
				require.True(t, errIs(rej, tc.wantErr), "rejected for %q, want %q", rej.Err, tc.wantErr)
				require.Empty(t, rec.all(adv.kind(snapshot.EventConnOpen)), "no connection opens")
			} else {
				cl := rec.waitFor(t, "close", adv.kind(snapshot.EventConnClose))
				require.True(t, errIs(cl, tc.wantErr), "closed for %q, want %q", cl.Err, tc.wantErr)
			}

			sw.finished(t, agent, got)
			if tc.badPiece {
				rec.waitFor(t, "bad piece", adv.kind(snapshot.EventPieceBad))
				st := agent.s.Stats()
				require.Len(t, st, 1)
				require.Positive(t, st[0].BadPieces)
			}

			// Later announces hand the adversary out again; the agent, seeding now, would dial
			// it (it does not claim to be complete) if it were not blacklisted. The third
			// announce after the ban starts a full interval after a dial the second would
			// have launched.
			require.Eventually(t, func() bool { return sw.gt.announced(agent.s.PeerID()) >= bannedAt+3 },
				20*time.Second, 10*time.Millisecond)
			require.EqualValues(t, 1, adv.accepts.Load(), "the agent dialled a blacklisted peer again")
			onlyAdversaryBlacklisted(t, rec, adv)
		})
	}
}

// TestAdversaryDialsAgent has the adversary dial an agent that is downloading (and has no
// other source yet) and misbehave. The agent must close the connection and blacklist the
// adversary's peer id, so that it refuses the next connection from it outright, and finish
// the download from the origin.
func TestAdversaryDialsAgent(t *testing.T) {
	t.Parallel()
	pick := map[string]bool{
		"garbage/unknown message type":                true,
		"oversized/length 2^32-1":                     true,
		"bad hash/random bytes for a requested piece": true,
		"out of range/have past the last piece":       true,
		"out of range/request past the last piece":    true,
		"out of range/piece past the last piece":      true,
		"stall/requests never answered":               true,
		"control/clean hang-up":                       true,
	}
	var cases []advCase
	for _, tc := range afterHandshake {
		if pick[tc.name] {
			cases = append(cases, tc)
		}
	}
	require.Len(t, cases, len(pick))
	cases = append(cases,
		advCase{name: "handshake/another blob length", hello: modified(func(h *wire.Handshake) { h.Length++ }),
			wantErr: scheduler.ErrProtocol, handshakeFails: true},
		advCase{name: "handshake/another piece length", hello: modified(func(h *wire.Handshake) {
			h.PieceLength /= 2
			h.Bitfield = wire.NewFullBitfield(h.NumPieces())
		}), wantErr: scheduler.ErrProtocol, handshakeFails: true},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sw := newAdvSwarm(t)
			cfg := scheduler.Config{}
			if tc.stall {
				cfg.RequestTimeout = 300 * time.Millisecond
			}
			agent := startNode(t, t.TempDir(), cfg, sw.gt)
			rec := record(t, agent.s)
			adv := newAdversary(t, sw.mi)
			got := sw.pullAsync(t, agent.s)
			// The first announce comes once the torrent is ready for peers.
			require.Eventually(t, func() bool { return sw.gt.announced(agent.s.PeerID()) >= 1 }, 20*time.Second, 5*time.Millisecond)

			var hello []byte
			if tc.hello != nil {
				var err error
				hello, err = tc.hello(adv.handshake())
				require.NoError(t, err)
			}
			first := adv.dial(t.Context(), agent.s.Addr(), hello, tc.script)
			require.NoError(t, first.scriptErr)
			if !tc.handshakeFails {
				require.NoError(t, first.hsErr)
				require.NotNil(t, first.agentHS, "the agent answers the handshake")
			}

			if tc.wantErr == nil {
				again := adv.dial(t.Context(), agent.s.Addr(), nil, hangUp)
				require.NoError(t, again.hsErr, "the agent accepts a peer that hung up cleanly again")
				sw.gt.open()
				sw.finished(t, agent, got)
				require.Empty(t, rec.all(func(e scheduler.Event) bool { return e.Kind == snapshot.EventBlacklist }))
				return
			}

			require.True(t, first.closedByAgent, "the agent closes the connection (it ended with %v, %v)", first.hsErr, first.endErr)
			bl := rec.waitFor(t, "blacklist", adv.kind(snapshot.EventBlacklist))
			require.True(t, errIs(bl, tc.wantErr), "blacklisted for %q, want %q", bl.Err, tc.wantErr)
			if !tc.handshakeFails {
				cl := rec.waitFor(t, "close", adv.kind(snapshot.EventConnClose))
				require.True(t, errIs(cl, tc.wantErr), "closed for %q, want %q", cl.Err, tc.wantErr)
			}
			if tc.badPiece {
				rec.waitFor(t, "bad piece", adv.kind(snapshot.EventPieceBad))
			}

			// Blacklisted: a flawless handshake under the same peer id is refused unanswered.
			again := adv.dial(t.Context(), agent.s.Addr(), nil, hangUp)
			require.Nil(t, again.agentHS, "the agent answered a blacklisted peer")
			require.ErrorIs(t, again.hsErr, io.EOF)

			sw.gt.open()
			sw.finished(t, agent, got)
			if tc.badPiece {
				st := agent.s.Stats()
				require.Len(t, st, 1)
				require.Positive(t, st[0].BadPieces)
			}
			onlyAdversaryBlacklisted(t, rec, adv)
		})
	}
}

// TestAdversaryAsksForUnknownBlob: a peer that dials in for a blob the agent does not have is
// disconnected, in a way a conforming initiator can read. It is not blacklisted: asking for a
// blob is not misbehaviour (trackers hand out peers that may have evicted the blob since), and
// a blacklist keyed on the peer id it chose would not hold it anyway.
func TestAdversaryAsksForUnknownBlob(t *testing.T) {
	t.Parallel()
	sw := newAdvSwarm(t)
	agent := startNode(t, t.TempDir(), scheduler.Config{}, sw.gt)
	rec := record(t, agent.s)
	adv := newAdversary(t, sw.mi)
	got := sw.pullAsync(t, agent.s)
	require.Eventually(t, func() bool { return sw.gt.announced(agent.s.PeerID()) >= 1 }, 20*time.Second, 5*time.Millisecond)

	other := randomBlob(t, advBlobSize)
	h := adv.handshake()
	h.Digest = digest.FromBytes(other)
	hello, err := wire.AppendHandshake(nil, h)
	require.NoError(t, err)
	s := adv.dial(t.Context(), agent.s.Addr(), hello, hangUp)
	require.Nil(t, s.agentHS, "the agent does not answer for a blob it lacks")
	require.True(t, s.closedByAgent, "the agent closes the connection (%v, %v)", s.hsErr, s.endErr)
	// docs/protocol.md §1.2: without the blob there is no handshake to answer with, so the
	// acceptor just closes. A bare error frame would read as a bad magic, for which a
	// krakenctl initiator blacklists the acceptor.
	require.True(t, errors.Is(s.hsErr, io.EOF) || errors.Is(s.hsErr, io.ErrUnexpectedEOF),
		"the refusal is neither a handshake nor a plain close: reading a handshake fails with %v", s.hsErr)
	rec.waitFor(t, "rejected", func(e scheduler.Event) bool {
		return e.Kind == snapshot.EventConnRejected && e.Digest == h.Digest
	})

	// The right blob under the same id is still served.
	again := adv.dial(t.Context(), agent.s.Addr(), nil, hangUp)
	require.NoError(t, again.hsErr)
	require.NotNil(t, again.agentHS)

	sw.gt.open()
	sw.finished(t, agent, got)
	require.Empty(t, rec.all(func(e scheduler.Event) bool { return e.Kind == snapshot.EventBlacklist }))
}

// TestResumeAfterRestart stops an agent halfway through a download from a slow origin and
// starts a new one on the same store: it verifies and keeps the pieces it had, fetches only
// the rest, and the origin sends far less than two copies of the blob.
func TestResumeAfterRestart(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 4<<20+777) // 65 pieces of 64 KiB
	origin, d := startOrigin(t, tr, blob, scheduler.Config{EgressRate: 2 << 20})
	dir := t.TempDir()

	first := startStoppable(t, dir, scheduler.Config{}, tr)
	sw := &advSwarm{ft: tr, blob: blob, d: d}
	got := sw.pullAsync(t, first.s)
	var half int
	require.Eventually(t, func() bool {
		st := first.s.Stats()
		if len(st) != 1 || st[0].Pieces == 0 {
			return false
		}
		half = st[0].Have
		return half >= st[0].Pieces/2
	}, 30*time.Second, time.Millisecond, "the first agent gets half the pieces")
	first.halt()
	r := <-got
	require.Error(t, r.err, "the download stops with its agent")
	tr.Forget(d, first.s.PeerID().String()) // the stopped agent is gone

	second := startStoppable(t, dir, scheduler.Config{}, tr)
	rec := record(t, second.s)
	sw.finished(t, second.node, sw.pullAsync(t, second.s))
	st := second.s.Stats()
	require.Len(t, st, 1)
	require.GreaterOrEqual(t, st[0].Resumed, half, "every piece the first agent had is resumed")
	require.Less(t, st[0].Resumed, st[0].Pieces, "the restart happened mid-download")
	rec.waitFor(t, "resume", func(e scheduler.Event) bool {
		return e.Kind == snapshot.EventTorrentResume && e.Digest == d && e.Pieces == st[0].Resumed
	})

	var originOut int64
	for _, s := range origin.s.Stats() {
		originOut += s.BytesOut
	}
	size := int64(len(blob))
	t.Logf("resumed %d of %d pieces; origin sent %.2f copies", st[0].Resumed, st[0].Pieces, float64(originOut)/float64(size))
	require.GreaterOrEqual(t, originOut, size, "the origin was the only source")
	require.Less(t, originOut, size*3/2, "the origin sent the resumed pieces again")
}

// TestBusyPeerIsNotBlacklisted: an agent at its connection limit refuses a peer that dials
// it. That peer must not take the refusal for misbehaviour: the busy agent is honest, and
// blacklisting it for a minute cuts it out of the swarm exactly when it is popular.
func TestBusyPeerIsNotBlacklisted(t *testing.T) {
	t.Parallel()
	sw := newAdvSwarm(t)
	sw.gt.open()

	// busy gets the blob and keeps one connection, all it has room for: to a leech that has
	// nothing, dialled again whenever busy has no connection (a seeder may drop its origin).
	busy := startNode(t, t.TempDir(), scheduler.Config{MaxConns: 1}, sw.gt)
	sw.finished(t, busy, sw.pullAsync(t, busy.s))
	leech := newAdversary(t, sw.mi)
	empty := leech.handshake()
	empty.Bitfield = wire.NewBitfield(sw.mi.NumPieces())
	hello, err := wire.AppendHandshake(nil, empty)
	require.NoError(t, err)
	var dialling atomic.Bool
	require.Eventually(t, func() bool {
		st := busy.s.Stats()
		if len(st) != 1 {
			return false
		}
		if len(st[0].Peers) == 0 && dialling.CompareAndSwap(false, true) {
			leech.wg.Go(func() {
				defer dialling.Store(false)
				leech.dial(t.Context(), busy.s.Addr(), hello, nil)
			})
		}
		return len(st[0].Peers) == 1
	}, 20*time.Second, 5*time.Millisecond, "busy is at its connection limit")

	// late is handed out busy and the origin; busy refuses it.
	late := startNode(t, t.TempDir(), scheduler.Config{}, sw.gt)
	rec := record(t, late.s)
	sw.finished(t, late, sw.pullAsync(t, late.s))
	rec.waitFor(t, "refusal by the busy peer", func(e scheduler.Event) bool {
		return (e.Kind == snapshot.EventConnRejected || e.Kind == snapshot.EventConnClose) && e.Addr == busy.s.Addr()
	})
	require.Empty(t, rec.all(func(e scheduler.Event) bool { return e.Kind == snapshot.EventBlacklist }),
		"an honest peer at its connection limit was blacklisted")
}

// TestProtocolErrorsAreSent: docs/protocol.md asks for an error message before some closes,
// so that the peer learns why: an initiator that refuses the acceptor's handshake sends
// CodeWrongBlob, and a request outside the blob gets CodeBadRequest.
func TestProtocolErrorsAreSent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		hello func(wire.Handshake) ([]byte, error)
		run   func(*advConn) error
		code  wire.ErrorCode
	}{
		{name: "wrong blob in the handshake", hello: modified(func(h *wire.Handshake) { h.Digest = digest.FromString("another blob") }), code: wire.CodeWrongBlob},
		{name: "request outside the blob", run: func(c *advConn) error { return msg(wire.Request{Piece: pastLast(c.mi), Length: 1})(c) }, code: wire.CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sw := newAdvSwarm(t)
			agent := startNode(t, t.TempDir(), scheduler.Config{}, sw.gt)
			adv := newAdversary(t, sw.mi)
			adv.hello, adv.script = tc.hello, tc.run
			sw.handOut(adv)
			got := sw.pullAsync(t, agent.s)
			s := adv.nextSession(t)
			sw.gt.open()
			sw.finished(t, agent, got)
			require.True(t, s.closedByAgent)
			var codes []wire.ErrorCode
			for _, e := range s.errors {
				codes = append(codes, e.Code)
			}
			require.Contains(t, codes, tc.code, "the agent closed without saying why")
		})
	}
}

// TestRejectingPeerCannotStallDownload: a peer that claims every piece and declines every
// request (a cancel with the request's fields, which docs/protocol.md §2.2 allows) while
// keeping the connection alive must not keep the agent from getting the blob elsewhere.
func TestRejectingPeerCannotStallDownload(t *testing.T) {
	t.Parallel()
	sw := newAdvSwarm(t)
	// The adversary declines at once, so no request waits for a timeout; a short one would
	// only let a machine slowed by the race detector strike out the origin (three requests
	// unanswered in time), and with it the only source of the blob.
	agent := startNode(t, t.TempDir(), scheduler.Config{RequestTimeout: 3 * time.Second}, sw.gt)
	rec := record(t, agent.s)
	adv := newAdversary(t, sw.mi)
	rejected := make(chan struct{})
	var once sync.Once
	adv.script = func(c *advConn) error {
		_ = c.nc.SetDeadline(time.Time{}) // alive until the agent or the test closes it
		stop := make(chan struct{})
		var wg sync.WaitGroup
		defer func() { close(stop); wg.Wait() }()
		wg.Go(func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if c.send(wire.KeepAlive{}) != nil {
						return
					}
				}
			}
		})
		for {
			r, err := c.nextRequest()
			if err != nil {
				return errHangUp
			}
			if err := c.send(wire.Cancel(r)); err != nil {
				return errHangUp
			}
			once.Do(func() { close(rejected) })
		}
	}
	sw.handOut(adv)
	got := sw.pullAsync(t, agent.s)
	select {
	case <-rejected:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent never asked the adversary for a piece")
	}
	sw.gt.open()
	select {
	case r := <-got:
		require.NoError(t, r.err)
		require.True(t, bytes.Equal(sw.blob, r.data))
	case <-time.After(30 * time.Second):
		conns := rec.all(func(e scheduler.Event) bool {
			return e.Kind != snapshot.EventPieceReceived && e.Kind != snapshot.EventPieceSent
		})
		t.Fatalf("the download stalled behind a peer that declines every request: %+v\nevents: %+v", agent.s.Stats(), conns)
	}
}

// TestUnsolicitedPiecesAreRejected: docs/protocol.md §2.2 makes piece data nobody asked for a
// protocol error. A seeding agent asks nobody for anything, so a peer that dials in and pushes
// piece messages at it must be disconnected and blacklisted, not read forever.
func TestUnsolicitedPiecesAreRejected(t *testing.T) {
	t.Parallel()
	sw := newAdvSwarm(t)
	sw.gt.open()
	agent := startNode(t, t.TempDir(), scheduler.Config{}, sw.gt)
	rec := record(t, agent.s)
	sw.finished(t, agent, sw.pullAsync(t, agent.s))

	adv := newAdversary(t, sw.mi)
	s := adv.dial(t.Context(), agent.s.Addr(), nil, func(c *advConn) error {
		for range 3 {
			if err := wire.WriteMessage(c.nc, wire.Piece{Piece: 0, Data: sw.blob[:sw.mi.PieceLength]}); err != nil {
				return nil // closed by the agent already
			}
		}
		return nil
	})
	require.NoError(t, s.hsErr)
	require.True(t, s.closedByAgent, "the agent keeps reading unsolicited pieces (connection ended with %v); stats %+v",
		s.endErr, agent.s.Stats())
	bl := rec.waitFor(t, "blacklist", adv.kind(snapshot.EventBlacklist))
	require.True(t, errIs(bl, scheduler.ErrProtocol), "blacklisted for %q", bl.Err)
}

// TestRepeatedPieceIsRejected: a peer asked once for a piece may answer once. Sending the same
// (valid) piece again and again is data nobody asked for (docs/protocol.md §2.2), which would
// otherwise let a peer fill the agent's ingress with waste for as long as it likes.
func TestRepeatedPieceIsRejected(t *testing.T) {
	t.Parallel()
	sw := newAdvSwarm(t)
	agent := startNode(t, t.TempDir(), scheduler.Config{}, sw.gt)
	rec := record(t, agent.s)
	adv := newAdversary(t, sw.mi)
	adv.script = func(c *advConn) error {
		r, err := c.nextRequest()
		if err != nil {
			return err
		}
		off, _ := c.mi.PieceRange(int(r.Piece))
		data := sw.blob[off+int64(r.Offset) : off+int64(r.Offset)+int64(r.Length)]
		for range 4 {
			if err := wire.WriteMessage(c.nc, wire.Piece{Piece: r.Piece, Offset: r.Offset, Data: data}); err != nil {
				return nil // closed by the agent already
			}
		}
		return nil
	}
	sw.handOut(adv)
	got := sw.pullAsync(t, agent.s)
	s := adv.nextSession(t)
	require.NoError(t, s.scriptErr)
	require.True(t, s.closedByAgent, "the agent keeps reading repeated pieces (connection ended with %v); stats %+v",
		s.endErr, agent.s.Stats())
	bl := rec.waitFor(t, "blacklist", adv.kind(snapshot.EventBlacklist))
	require.True(t, errIs(bl, scheduler.ErrProtocol), "blacklisted for %q", bl.Err)
	sw.gt.open()
	sw.finished(t, agent, got)
}
