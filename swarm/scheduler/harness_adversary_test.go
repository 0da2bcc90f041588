package scheduler_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// This file is the harness of adversary_test.go: a scriptable malicious peer, a tracker that
// keeps the origins hidden until the adversary has done its worst, an event recorder, and a
// node that can be stopped in the middle of a test.

// sessionDeadline bounds one adversary connection: an agent that has not closed a
// misbehaving connection by then never will (its idle timeout is a minute).
const sessionDeadline = 20 * time.Second

// errHangUp, returned by a script, makes the adversary close the connection itself.
var errHangUp = errors.New("adversary hangs up")

// adversary is a malicious peer. It listens on loopback (the tracker hands it out, the agent
// dials it) and can dial an agent. On every connection it speaks the real handshake, claiming
// every piece, unless hello says otherwise, then runs script, then reads whatever the agent
// sends until the agent closes the connection.
type adversary struct {
	id   wire.PeerID
	mi   metainfo.MetaInfo
	ln   net.Listener
	addr string
	// hello returns the handshake bytes to send, given the honest handshake; nil sends it.
	hello func(h wire.Handshake) ([]byte, error)
	// script runs after the handshakes; nil does nothing.
	script func(c *advConn) error

	accepts    atomic.Int32  // connections the agent opened to the listener
	misbehaved chan struct{} // closed once the first connection has run its script
	once       sync.Once
	sessions   chan session // every finished connection, in order

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// session is what the adversary saw on one connection.
type session struct {
	agentHS   *wire.Handshake // the agent's handshake, if it sent one
	hsErr     error           // why reading the agent's handshake failed
	scriptErr error
	// closedByAgent: the agent ended the connection (EOF or reset), rather than the
	// adversary or the deadline.
	closedByAgent bool
	endErr        error
	errors        []wire.Error // error messages the agent sent
}

func newAdversary(t *testing.T, mi metainfo.MetaInfo) *adversary {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	a := &adversary{
		id: wire.RandomPeerID(), mi: mi, ln: ln, addr: ln.Addr().String(),
		misbehaved: make(chan struct{}), sessions: make(chan session, 64), conns: map[net.Conn]struct{}{},
	}
	a.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			a.accepts.Add(1)
			if !a.track(nc) {
				return
			}
			a.wg.Go(func() { a.report(a.serve(nc)) })
		}
	})
	t.Cleanup(a.close)
	return a
}

// peer is the adversary as a tracker hands it out.
func (a *adversary) peer() announce.Peer { return announce.Peer{ID: a.id.String(), Addr: a.addr} }

// handshake is the honest handshake: the right blob and layout, every piece.
func (a *adversary) handshake() wire.Handshake {
	return wire.Handshake{
		Digest: a.mi.Digest, PeerID: a.id, Length: a.mi.Length, PieceLength: a.mi.PieceLength,
		Bitfield: wire.NewFullBitfield(a.mi.NumPieces()),
	}
}

func (a *adversary) helloBytes() ([]byte, error) {
	if a.hello == nil {
		return wire.AppendHandshake(nil, a.handshake())
	}
	return a.hello(a.handshake())
}

func (a *adversary) track(nc net.Conn) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		_ = nc.Close()
		return false
	}
	a.conns[nc] = struct{}{}
	return true
}

func (a *adversary) untrack(nc net.Conn) {
	a.mu.Lock()
	delete(a.conns, nc)
	a.mu.Unlock()
	_ = nc.Close()
}

func (a *adversary) close() {
	a.mu.Lock()
	a.closed = true
	for nc := range a.conns {
		_ = nc.Close()
	}
	a.mu.Unlock()
	_ = a.ln.Close()
	a.wg.Wait()
}

func (a *adversary) report(s session) {
	select {
	case a.sessions <- s:
	default:
	}
}

// serve runs a connection the agent opened: its handshake, ours, the script, then draining.
func (a *adversary) serve(nc net.Conn) session {
	defer a.untrack(nc)
	_ = nc.SetDeadline(time.Now().Add(sessionDeadline))
	var s session
	h, err := wire.ReadHandshake(nc)
	if err != nil {
		s.hsErr = err
		return s
	}
	s.agentHS = &h
	hello, err := a.helloBytes()
	if err == nil {
		_, err = nc.Write(hello)
	}
	if err != nil {
		s.scriptErr = err
		return s
	}
	a.run(&advConn{nc: nc, dec: wire.NewDecoder(nc), agent: h, mi: a.mi}, &s, a.script)
	return s
}

// dial opens a connection to an agent, sends hello (nil: the honest handshake), reads the
// agent's answer and, if it is a handshake, runs script; then it waits for the agent to
// close the connection.
func (a *adversary) dial(ctx context.Context, addr string, hello []byte, script func(*advConn) error) session {
	var s session
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		s.hsErr = err
		return s
	}
	if !a.track(nc) {
		s.hsErr = net.ErrClosed
		return s
	}
	defer a.untrack(nc)
	_ = nc.SetDeadline(time.Now().Add(sessionDeadline))
	if hello == nil {
		if hello, err = wire.AppendHandshake(nil, a.handshake()); err != nil {
			s.scriptErr = err
			return s
		}
	}
	if _, err := nc.Write(hello); err != nil {
		s.scriptErr = err
		return s
	}
	h, err := wire.ReadHandshake(nc)
	if err != nil {
		s.hsErr = err
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			s.closedByAgent = true
			return s
		}
		// Not a handshake: wait for the end of whatever the agent sends.
		_, err = io.Copy(io.Discard, nc)
		s.endErr = err
		s.closedByAgent = err == nil || errors.Is(err, syscall.ECONNRESET)
		return s
	}
	s.agentHS = &h
	a.run(&advConn{nc: nc, dec: wire.NewDecoder(nc), agent: h, mi: a.mi}, &s, script)
	return s
}

// run runs the script, marks the adversary as having misbehaved, and drains the connection
// until it ends.
func (a *adversary) run(c *advConn, s *session, script func(*advConn) error) {
	var err error
	if script != nil {
		err = script(c)
	}
	a.once.Do(func() { close(a.misbehaved) })
	if errors.Is(err, errHangUp) {
		return
	}
	s.scriptErr = err
	for {
		m, err := c.dec.ReadMessage()
		if err != nil {
			s.endErr = err
			s.closedByAgent = errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
			return
		}
		if e, ok := m.(wire.Error); ok {
			s.errors = append(s.errors, e)
		}
	}
}

// nextSession waits for the next finished connection.
func (a *adversary) nextSession(t *testing.T) session {
	t.Helper()
	select {
	case s := <-a.sessions:
		return s
	case <-time.After(sessionDeadline + 10*time.Second):
		t.Fatal("the adversary's connection never ended")
		return session{}
	}
}

// advConn is one adversary connection after the handshakes, as a script sees it.
type advConn struct {
	nc    net.Conn
	dec   *wire.Decoder
	agent wire.Handshake
	mi    metainfo.MetaInfo
}

func (c *advConn) write(b []byte) error { _, err := c.nc.Write(b); return err }

func (c *advConn) send(m wire.Message) error { return wire.WriteMessage(c.nc, m) }

// nextRequest reads the agent's messages up to its next request.
func (c *advConn) nextRequest() (wire.Request, error) {
	for {
		m, err := c.dec.ReadMessage()
		if err != nil {
			return wire.Request{}, err
		}
		if r, ok := m.(wire.Request); ok {
			return r, nil
		}
	}
}

// gatedTracker hands out the origins only once open is called, so that an adversary (in the
// tracker's extra peers) is the agent's only source until it has misbehaved. It counts
// announces per peer id.
type gatedTracker struct {
	*announcetest.Tracker
	gate      chan struct{}
	openOnce  sync.Once
	mu        sync.Mutex
	announces map[string]int
}

func newGatedTracker(ft *announcetest.Tracker) *gatedTracker {
	return &gatedTracker{Tracker: ft, gate: make(chan struct{}), announces: map[string]int{}}
}

func (g *gatedTracker) open() { g.openOnce.Do(func() { close(g.gate) }) }

func (g *gatedTracker) Announce(ctx context.Context, req announce.Request) (announce.Response, error) {
	resp, err := g.Tracker.Announce(ctx, req)
	g.mu.Lock()
	g.announces[req.PeerID]++
	g.mu.Unlock()
	select {
	case <-g.gate:
	default:
		peers := resp.Peers[:0:0]
		for _, p := range resp.Peers {
			if !p.Origin {
				peers = append(peers, p)
			}
		}
		resp.Peers = peers
	}
	return resp, err
}

func (g *gatedTracker) announced(id wire.PeerID) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.announces[id.String()]
}

// recorder keeps every event a scheduler publishes.
type recorder struct {
	mu     sync.Mutex
	events []scheduler.Event
}

// record subscribes to s's events until the test ends.
func record(t *testing.T, s *scheduler.Scheduler) *recorder {
	t.Helper()
	ch, stop := s.Subscribe(1 << 14)
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range ch {
			r.mu.Lock()
			r.events = append(r.events, e)
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { stop(); <-done })
	return r
}

// all returns the events that match.
func (r *recorder) all(match func(scheduler.Event) bool) []scheduler.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []scheduler.Event
	for _, e := range r.events {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

// waitFor waits for an event that matches and returns it.
func (r *recorder) waitFor(t *testing.T, what string, match func(scheduler.Event) bool) scheduler.Event {
	t.Helper()
	var got scheduler.Event
	require.Eventually(t, func() bool {
		es := r.all(match)
		if len(es) == 0 {
			return false
		}
		got = es[0]
		return true
	}, 20*time.Second, 5*time.Millisecond, "no %s event; events: %v", what, r.kinds())
	return got
}

func (r *recorder) kinds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.events))
	for _, e := range r.events {
		s := string(e.Kind)
		if e.Err != "" {
			s += "(" + e.Err + ")"
		}
		out = append(out, s)
	}
	return out
}

// kind matches events of kind k about the adversary (by peer id or address).
func (a *adversary) kind(k scheduler.EventKind) func(scheduler.Event) bool {
	return func(e scheduler.Event) bool {
		return e.Kind == k && (e.Peer == a.id.String() || e.Addr == a.addr)
	}
}

// errIs reports whether an event's error text carries want's.
func errIs(e scheduler.Event, want error) bool { return strings.Contains(e.Err, want.Error()) }

// stoppable is a node that a test may stop before the end (startNode's nodes stop only in
// cleanup).
type stoppable struct {
	*node
	once sync.Once
}

func (n *stoppable) halt() { n.once.Do(n.stop) }

func startStoppable(t *testing.T, dir string, cfg scheduler.Config, tr scheduler.Tracker) *stoppable {
	t.Helper()
	st, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s, err := scheduler.New(cfg, scheduler.Deps{Store: st, Listener: ln, Tracker: tr})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	n := &stoppable{node: &node{s: s, store: st, cancel: cancel, done: make(chan error, 1)}}
	go func() { n.done <- s.Run(ctx) }()
	t.Cleanup(n.halt)
	return n
}
