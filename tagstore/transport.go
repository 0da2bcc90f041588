package tagstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is the raft.StreamLayer under the NetworkTransport: it accepts on the listener
// it was given and dials peers over TCP, or over mutual TLS when it has a tlsPolicy. It tracks
// every connection, accepted or dialed, and Close closes them all, so a closed Store stops
// answering its peers at once (NetworkTransport alone leaves inbound connections open until
// the peer hangs up).
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	tls       *tlsPolicy // nil: plain TCP
	// timeout bounds an inbound TLS handshake (an outbound one has Dial's timeout).
	timeout time.Duration
	log     *slog.Logger
	refused func(reason string)
	// serverAt maps an address to the server the Raft configuration puts there; nil until
	// Raft runs.
	serverAt atomic.Pointer[func(raft.ServerAddress) (raft.ServerID, bool)]

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func newStreamLayer(ln net.Listener, advertise string, policy *tlsPolicy, timeout time.Duration, log *slog.Logger, refused func(string)) *streamLayer {
	return &streamLayer{
		ln: ln, advertise: tcpAddr(advertise), tls: policy, timeout: timeout, log: log, refused: refused,
		conns: map[*trackedConn]struct{}{},
	}
}

// tcpAddr is an advertised address that need not be resolvable here.
type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

// Accept waits for the next inbound connection. With TLS, the handshake is not done here but
// on the connection's first read, under a deadline, on the goroutine NetworkTransport gives
// each connection: a peer that connects and stays silent holds only its own connection, never
// Accept.
func (sl *streamLayer) Accept() (net.Conn, error) {
	c, err := sl.ln.Accept()
	if err != nil {
		return nil, err
	}
	if sl.tls != nil {
		c = &handshakeConn{Conn: sl.tls.server(c), sl: sl}
	}
	return sl.track(c)
}

// Dial connects to a peer's Raft address. With TLS it completes the handshake within timeout
// and checks that the peer's certificate names the server the Raft configuration puts at
// address (or, for an address not in it, that the peer is a build-index node).
func (sl *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	var want raft.ServerID
	if f := sl.serverAt.Load(); f != nil {
		want, _ = (*f)(address)
	}
	return sl.dial(address, want, timeout)
}

// dial connects to address; with TLS, the peer's certificate must name want (when set).
func (sl *streamLayer) dial(address raft.ServerAddress, want raft.ServerID, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, err
	}
	if sl.tls != nil {
		tc := sl.tls.client(c, string(address), want)
		if err := tc.HandshakeContext(ctx); err != nil {
			sl.refused(refusedTLS)
			return nil, errors.Join(fmt.Errorf("tls handshake with raft peer %s: %w", address, err), c.Close())
		}
		c = tc
	}
	return sl.track(c)
}

func (sl *streamLayer) track(c net.Conn) (net.Conn, error) {
	tc := &trackedConn{Conn: c, sl: sl}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.closed {
		return nil, errors.Join(net.ErrClosed, c.Close())
	}
	sl.conns[tc] = struct{}{}
	return tc, nil
}

// Close closes the listener and every open connection.
func (sl *streamLayer) Close() error {
	err := sl.ln.Close()
	sl.mu.Lock()
	sl.closed = true
	conns := sl.conns
	sl.conns = map[*trackedConn]struct{}{}
	sl.mu.Unlock()
	for c := range conns {
		// Errors of closing connections a peer may already have closed say nothing useful.
		_ = c.Conn.Close()
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Addr is the advertised address: what peers dial, and what Raft records for this node.
func (sl *streamLayer) Addr() net.Addr { return sl.advertise }

// trackedConn removes itself from the stream layer when closed.
type trackedConn struct {
	net.Conn
	sl   *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.sl.mu.Lock()
		delete(c.sl.conns, c)
		c.sl.mu.Unlock()
	})
	return c.Conn.Close()
}

// handshakeConn is an accepted TLS connection whose handshake runs, under the stream layer's
// timeout, on its first read or write. A refused peer is logged with the reason and gets a TLS
// alert; NetworkTransport then drops the connection.
type handshakeConn struct {
	*tls.Conn
	sl   *streamLayer
	once sync.Once
	err  error
}

func (c *handshakeConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.sl.timeout)
		defer cancel()
		if err := c.HandshakeContext(ctx); err != nil {
			c.sl.refused(refusedTLS)
			level := slog.LevelWarn
			if errors.Is(err, io.EOF) {
				level = slog.LevelDebug // closed before a word was said: a port check
			}
			c.sl.log.Log(ctx, level, "refused a raft connection", "remote", c.RemoteAddr().String(), "err", err)
			c.err = fmt.Errorf("tls handshake with raft peer %s: %w", c.RemoteAddr(), err)
		}
	})
	return c.err
}

func (c *handshakeConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *handshakeConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// Interface guards
var _ raft.StreamLayer = (*streamLayer)(nil)
