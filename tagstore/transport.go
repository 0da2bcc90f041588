package tagstore

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is the raft.StreamLayer under the NetworkTransport: it accepts on the listener
// it was given and dials peers over TCP. It tracks every connection, accepted or dialed, and
// Close closes them all, so a closed Store stops answering its peers at once (NetworkTransport
// alone leaves inbound connections open until the peer hangs up).
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func newStreamLayer(ln net.Listener, advertise string) *streamLayer {
	return &streamLayer{ln: ln, advertise: tcpAddr(advertise), conns: map[*trackedConn]struct{}{}}
}

// tcpAddr is an advertised address that need not be resolvable here.
type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

// Accept waits for the next inbound connection.
func (sl *streamLayer) Accept() (net.Conn, error) {
	c, err := sl.ln.Accept()
	if err != nil {
		return nil, err
	}
	return sl.track(c)
}

// Dial connects to a peer's Raft address.
func (sl *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, err
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

// Interface guards
var _ raft.StreamLayer = (*streamLayer)(nil)
