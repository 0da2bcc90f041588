package scheduler

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/krakenctl/krakenctl/swarm/bandwidth"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/piece"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

const (
	// readBuffer is what a piece payload is read through on its way to the partial file, one
	// write per buffer: with 512 KiB pieces, one write per piece. Each write call costs the
	// file system a fixed amount on top of its bytes: at N = 16 the swarm bench used 5.6% less
	// CPU with 512 KiB than with 128 KiB (docs/benchmarks.md, "The receive path"). Buffers
	// come from recvBufs and are held only while a block arrives, so memory grows with the
	// blocks in flight, not with the connections.
	readBuffer     = 512 << 10
	keepAliveEvery = 20 * time.Second
	readIdle       = 3 * keepAliveEvery // a peer silent this long is gone
	// maxServeQueue bounds the block requests a peer may have queued with us; more is a flood.
	maxServeQueue = 4096
)

// recvBufs holds the readBuffer-sized buffers piece payloads are read through.
var recvBufs = sync.Pool{New: func() any { b := make([]byte, readBuffer); return &b }}

// sendBufs holds the buffers blocks are sent through where sendfile cannot be used (TLS).
var sendBufs = sync.Pool{New: func() any { b := make([]byte, bandwidth.Chunk); return &b }}

// conn is one peer connection of a torrent. The fields pending, remote and strikes are guarded
// by the torrent's mutex; the write queue by wmu.
type conn struct {
	t        *torrent
	nc       net.Conn
	id       piece.PeerID
	pid      wire.PeerID
	addr     string
	outbound bool
	origin   bool
	ip       netip.Addr // the peer's IP address, for the per-address caps (slots.go)
	holder   string     // who holds the peer's certificate (Deps.Authenticate); "" in plain P2P

	pending map[int]struct{} // pieces requested of the peer (t.mu)
	expect  map[int]int      // blocks requested of the peer and not yet received, per piece (t.mu)
	remote  *wire.Bitfield   // pieces the peer has (t.mu)
	strikes int              // timed-out requests (t.mu)
	// requested: this host has asked the peer for a piece (t.mu). asked: the peer has asked
	// this host. used: when the connection was last of use (slots.go), in Unix nanoseconds.
	// sending: a block is on its way to the peer.
	requested bool
	asked     atomic.Bool
	used      atomic.Int64
	sending   atomic.Bool

	// super-seeding (t.mu): pieces revealed to the peer, pieces sent to it in full, pieces
	// counted as its in the origin's availability, the blocks of each piece sent so far (bit k:
	// the block at k × wire.MaxBlockLength), revealed pieces it has not got yet, when it last
	// got a piece, and until when it is stuck (superseed.go)
	shown, sent, counted *wire.Bitfield
	sentBlocks           map[int]uint32
	showPending          int
	lastHave, stuckUntil time.Time
	// how far its claims are believed, the challenges waiting for an answer, how many failed,
	// and whether it had its challenge after being demoted (superseed.go)
	trust      trust
	challenges []challenge
	failures   int
	rechecked  bool
	// claims that do not count yet, though the peer is proved: made while a challenge was
	// outstanding (unvouched), or vouched for by the outstanding challenge (covered), which
	// proves nothing about claims made after it was sent (superseed.go)
	unvouched, covered *wire.Bitfield

	wmu   sync.Mutex
	ctrl  []wire.Message
	serve []wire.Request
	wake  chan struct{}
	bye   chan struct{} // closed by the writer once the final error message is sent

	done      chan struct{}
	closeOnce sync.Once
	errMu     sync.Mutex
	err       error
	in, out   atomic.Int64
	opened    time.Time
}

func newConn(t *torrent, nc net.Conn, h wire.Handshake, addr string, outbound, origin bool) *conn {
	n := h.Bitfield.Len()
	return &conn{
		t: t, nc: nc, pid: h.PeerID, id: piece.PeerID(h.PeerID.String()), addr: addr,
		outbound: outbound, origin: origin, ip: remoteIP(nc),
		pending: map[int]struct{}{}, remote: h.Bitfield.Clone(), expect: map[int]int{},
		shown: wire.NewBitfield(n), sent: wire.NewBitfield(n), counted: wire.NewBitfield(n),
		unvouched: wire.NewBitfield(n), covered: wire.NewBitfield(n),
		wake: make(chan struct{}, 1), done: make(chan struct{}), opened: t.s.now(),
	}
}

func (c *conn) start(ctx context.Context) {
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		err := c.readLoop(cctx)
		if violation(err) {
			c.goodbye(err)
		}
		c.fail(err)
	})
	wg.Go(func() { c.fail(c.writeLoop(cctx)) })
	c.t.s.wg.Go(func() {
		<-c.done
		cancel()
		wg.Wait()
		c.t.removed(c, c.reason())
	})
}

// violation reports whether err is the peer's fault: the connection is closed with an error
// message and the peer blacklisted.
func violation(err error) bool {
	return err != nil && (errors.Is(err, ErrProtocol) || errors.Is(err, ErrBadPiece) || errors.Is(err, ErrStalled) ||
		errors.Is(err, ErrFalseClaim) || errors.Is(err, wire.ErrFrameTooLarge) || errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrUnknownType))
}

// goodbye tells the peer why the connection closes, waiting briefly for the writer to send it.
func (c *conn) goodbye(err error) {
	code := wire.CodeBadRequest
	if errors.Is(err, ErrBadPiece) || errors.Is(err, ErrStalled) {
		code = wire.CodeInternal
	}
	c.farewell(code, err.Error())
}

// farewell sends the peer an error message with code, waiting briefly for the writer to send
// it; the caller closes the connection after.
func (c *conn) farewell(code wire.ErrorCode, msg string) {
	if len(msg) > wire.MaxErrorMessageLength {
		msg = msg[:wire.MaxErrorMessageLength]
	}
	sent := make(chan struct{})
	c.wmu.Lock()
	c.ctrl = append(c.ctrl, wire.Error{Code: code, Message: msg})
	c.bye = sent
	c.wmu.Unlock()
	c.signal()
	select {
	case <-sent:
	case <-c.done:
	case <-time.After(time.Second):
	}
}

// queue adds a control message (have, request, cancel, bitfield, error) to send.
func (c *conn) queue(m wire.Message) {
	c.wmu.Lock()
	c.ctrl = append(c.ctrl, m)
	c.wmu.Unlock()
	c.signal()
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// fail closes the connection with err as the reason (the first reason wins).
func (c *conn) fail(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	c.close(err)
}

func (c *conn) close(err error) {
	c.errMu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.errMu.Unlock()
	c.closeOnce.Do(func() {
		close(c.done)
		_ = c.nc.Close()
	})
}

func (c *conn) reason() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

func (c *conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// readLoop decodes the peer's messages until the connection ends. Piece payloads are read
// into a piece buffer, verified and written to the partial download without holding the
// torrent's lock.
func (c *conn) readLoop(ctx context.Context) error {
	t := c.t
	dec := wire.NewDecoder(bufio.NewReaderSize(t.s.lim.Reader(ctx, c.nc), 64<<10))
	streams := map[int]*stream{}
	defer func() {
		for i := range streams {
			t.unclaim(c, i)
		}
	}()
	for {
		_ = c.nc.SetReadDeadline(time.Now().Add(readIdle))
		m, err := dec.ReadMessageHeader()
		if err != nil {
			if c.closed() {
				return nil
			}
			return fmt.Errorf("read from %s: %w", c.addr, err)
		}
		switch m := m.(type) {
		case wire.KeepAlive:
		case wire.Have:
			if err := t.onHave(c, int(m.Piece)); err != nil {
				return err
			}
		case wire.BitfieldMsg:
			if err := t.onBitfield(c, m.Bitfield); err != nil {
				return err
			}
		case wire.Complete:
			if err := t.onBitfield(c, wire.NewFullBitfield(t.mi.NumPieces())); err != nil {
				return err
			}
			if t.isCommitted() {
				return nil // two seeders have nothing to trade
			}
		case wire.Request:
			if err := c.onRequest(m); err != nil {
				return err
			}
		case wire.Cancel:
			if err := c.onCancel(m); err != nil {
				return err
			}
		case wire.Error:
			if m.Code == wire.CodeBusy {
				return fmt.Errorf("peer %s: %w: %s", c.addr, errPeerBusy, m.Message)
			}
			return fmt.Errorf("peer %s: error %d: %s", c.addr, m.Code, m.Message)
		case wire.PieceHeader:
			ok, err := c.onChallengeAnswer(ctx, dec, m)
			if err != nil {
				return err
			}
			if ok {
				continue // a super-seeding origin's challenge, answered
			}
			if err := c.onPieceHeader(dec, m, streams); err != nil {
				return err
			}
		}
	}
}

// stream is a piece arriving from one peer, hashed and written block by block.
type stream struct {
	h    hash.Hash
	next int64 // bytes of the piece received so far, in order
}

// onPieceHeader receives one block. The first block of a wanted piece claims the piece for
// this connection; its bytes, and those of the following blocks, go straight to the partial
// file through a pooled buffer of readBuffer bytes while they are hashed, so memory does not
// grow with the piece length. The piece counts as held only once its hash matches. Blocks of
// pieces that are not wanted, claimed by another connection or out of order are read and
// dropped.
func (c *conn) onPieceHeader(dec *wire.Decoder, m wire.PieceHeader, streams map[int]*stream) error {
	t := c.t
	i := int(m.Piece)
	keep, err := t.wants(c, i)
	if err != nil {
		return err
	}
	l := t.pieceLen(i)
	if int64(m.Offset)+int64(m.Length) > l || m.Length == 0 || m.Offset%wire.MaxBlockLength != 0 {
		return fmt.Errorf("%w: piece %d block [%d,+%d) of a %d-byte piece", ErrProtocol, i, m.Offset, m.Length, l)
	}
	st := streams[i]
	if st == nil && keep && m.Offset == 0 && t.claim(c, i) {
		st = &stream{h: sha256.New()}
		streams[i] = st
	}
	if st != nil && int64(m.Offset) != st.next {
		// Out of order: this implementation asks for blocks in order and peers answer in order.
		t.unclaim(c, i)
		delete(streams, i)
		st = nil
	}
	bp := recvBufs.Get().(*[]byte)
	defer recvBufs.Put(bp)
	buf := *bp
	pieceOff, _ := t.mi.PieceRange(i)
	for dec.PayloadPending() > 0 {
		n, err := dec.ReadPayloadPart(buf)
		c.in.Add(int64(n))
		if err != nil {
			return fmt.Errorf("read from %s: %w", c.addr, err)
		}
		if st == nil {
			t.addWasted(int64(n))
			continue
		}
		st.h.Write(buf[:n])
		owned, err := t.writeBlock(c, i, pieceOff+st.next, buf[:n])
		if err != nil {
			return err
		}
		st.next += int64(n)
		if !owned {
			// Another connection took the piece over (this one was too slow): drop the rest.
			delete(streams, i)
			st = nil
		}
	}
	if st == nil || st.next < l {
		return nil
	}
	delete(streams, i)
	if [sha256.Size]byte(st.h.Sum(nil)) != t.mi.PieceSums[i] {
		t.unclaim(c, i)
		t.badPiece(c, i)
		return fmt.Errorf("%w: piece %d from %s", ErrBadPiece, i, c.addr)
	}
	t.gotPieceWritten(c, i)
	t.s.event(Event{Kind: snapshot.EventPieceReceived, Digest: t.d, Peer: string(c.id), Addr: c.addr, Piece: i, Bytes: l, Origin: c.origin})
	return nil
}

// onRequest queues a block the peer asks for; asking for a piece this host never offered or
// a block outside it breaks the protocol.
func (c *conn) onRequest(r wire.Request) error {
	t := c.t
	i := int(r.Piece)
	if i >= t.mi.NumPieces() || r.Length == 0 || r.Length > wire.MaxBlockLength ||
		int64(r.Offset)+int64(r.Length) > t.pieceLen(i) {
		return fmt.Errorf("%w: request for [%d,+%d) of piece %d of %d", ErrProtocol, r.Offset, r.Length, i, t.mi.NumPieces())
	}
	if !t.mayServe(c, i) {
		// Not held (this host never announced it), or not revealed to this peer by a
		// super-seeding origin: reject, the requester asks someone else.
		c.queue(wire.Cancel(r))
		return nil
	}
	c.wmu.Lock()
	if len(c.serve) >= maxServeQueue {
		c.wmu.Unlock()
		return fmt.Errorf("%w: more than %d requests queued", ErrProtocol, maxServeQueue)
	}
	c.serve = append(c.serve, r)
	c.wmu.Unlock()
	c.asked.Store(true)
	if t.ss == nil { // a super-seeding origin counts only pieces sent in full as use (ssSent)
		c.markUsed()
	}
	c.signal()
	return nil
}

// onCancel handles a cancel: the peer withdrawing a request of its own, or declining ours
// (a super-seeding origin's challenge among them, which may close the connection).
func (c *conn) onCancel(m wire.Cancel) error {
	r := wire.Request(m)
	c.wmu.Lock()
	for k, q := range c.serve {
		if q == r {
			c.serve = append(c.serve[:k], c.serve[k+1:]...)
			c.wmu.Unlock()
			return nil
		}
	}
	c.wmu.Unlock()
	if ok, err := c.onChallengeCancel(r); ok || err != nil {
		return err
	}
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	i := int(m.Piece)
	if _, ok := c.pending[i]; ok {
		// A reject: the peer does not have the piece after all. Forget that it has it, so
		// that neither this peer nor the picker's origin policy counts on it.
		delete(c.pending, i)
		c.strikes++
		c.remote.Clear(i)
		if t.picker != nil {
			t.picker.Release(c.id, i)
			w, _ := t.picker.PeerBitfield(c.id, c.remote)
			t.withdraw(w)
			t.fillAll()
		}
	}
	return nil
}

type fileSource struct {
	f    *os.File
	blob *castore.Blob
}

func (s *fileSource) close() {
	if s.blob != nil {
		_ = s.blob.Close()
	} else {
		_ = s.f.Close()
	}
}

// writeLoop sends queued control messages first, then requested blocks from the file.
func (c *conn) writeLoop(ctx context.Context) error {
	t := c.t
	bw := bufio.NewWriterSize(c.nc, 32<<10)
	var src *fileSource
	defer func() {
		if src != nil {
			src.close()
		}
	}()
	keep := time.NewTimer(keepAliveEvery)
	defer keep.Stop()
	var ctrl []wire.Message
	for {
		select {
		case <-c.done:
			return nil
		case <-keep.C:
			if err := c.flushMessages(bw, []wire.Message{wire.KeepAlive{}}); err != nil {
				return err
			}
			keep.Reset(keepAliveEvery)
			continue
		case <-c.wake:
		}
		for {
			c.wmu.Lock()
			ctrl, c.ctrl = c.ctrl, ctrl[:0]
			bye := c.bye
			var req wire.Request
			serve := len(ctrl) == 0 && len(c.serve) > 0
			if serve {
				req = c.serve[0]
				c.serve = c.serve[1:]
			}
			c.wmu.Unlock()
			if len(ctrl) > 0 {
				if err := c.flushMessages(bw, ctrl); err != nil {
					return err
				}
				clear(ctrl)
				if bye != nil {
					close(bye)
					<-c.done
					return nil
				}
				continue
			}
			if !serve {
				break
			}
			if src == nil {
				var err error
				if src, err = t.source(ctx); err != nil {
					return fmt.Errorf("open blob to serve: %w", err)
				}
			}
			c.sending.Store(true)
			err := c.sendBlock(ctx, bw, src.f, req)
			c.sending.Store(false)
			if err != nil {
				return err
			}
		}
		keep.Reset(keepAliveEvery)
	}
}

func (c *conn) flushMessages(bw *bufio.Writer, ms []wire.Message) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(readIdle))
	for _, m := range ms {
		if err := wire.WriteMessage(bw, m); err != nil {
			return fmt.Errorf("write to %s: %w", c.addr, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write to %s: %w", c.addr, err)
	}
	return nil
}

// sendBlock sends one requested block: header, then the bytes straight from the file
// (sendfile), paid for in egress tokens chunk by chunk.
func (c *conn) sendBlock(ctx context.Context, bw *bufio.Writer, f *os.File, r wire.Request) error {
	t := c.t
	off, _ := t.mi.PieceRange(int(r.Piece))
	off += int64(r.Offset)
	if err := t.s.lim.WaitEgress(ctx, min(int(r.Length), bandwidth.Chunk)); err != nil {
		return err
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(readIdle))
	if err := wire.WritePieceHeader(bw, r.Piece, r.Offset, r.Length); err != nil {
		return fmt.Errorf("write to %s: %w", c.addr, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write to %s: %w", c.addr, err)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return fmt.Errorf("serve piece %d: %w", r.Piece, err)
	}
	// Over plain TCP io.CopyN sends from the file (sendfile); over TLS, which must read the
	// bytes to encrypt them, it would allocate a buffer of its own for every chunk.
	var buf []byte
	if _, plain := c.nc.(io.ReaderFrom); !plain {
		bp := sendBufs.Get().(*[]byte)
		defer sendBufs.Put(bp)
		buf = *bp
	}
	first := true
	for left := int64(r.Length); left > 0; {
		n := min(left, bandwidth.Chunk)
		if !first {
			if err := t.s.lim.WaitEgress(ctx, int(n)); err != nil {
				return err
			}
		}
		first = false
		_ = c.nc.SetWriteDeadline(time.Now().Add(readIdle))
		var k int64
		var err error
		if buf == nil {
			k, err = io.CopyN(c.nc, f, n)
		} else {
			k, err = io.CopyBuffer(c.nc, io.LimitReader(f, n), buf)
			if err == nil && k < n {
				err = io.ErrUnexpectedEOF
			}
		}
		c.out.Add(k)
		left -= k
		if err != nil {
			return fmt.Errorf("write to %s: %w", c.addr, err)
		}
	}
	t.served(c, r)
	t.s.event(Event{Kind: snapshot.EventPieceSent, Digest: t.d, Peer: string(c.id), Addr: c.addr, Piece: int(r.Piece), Bytes: int64(r.Length)})
	return nil
}
