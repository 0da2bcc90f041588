package members_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring/members"
)

// dnsServer is a minimal authoritative DNS server over UDP on 127.0.0.1: it answers A and AAAA
// questions from a table the test changes, NXDOMAIN for names it does not know. It exists so
// that one test runs the real net.Resolver end to end without the machine's resolver or any
// outside server.
type dnsServer struct {
	conn    net.PacketConn
	mu      sync.Mutex
	records map[string][]netip.Addr // lower-case name without the final dot
	queries int
	done    chan struct{}
}

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	conn, err := new(net.ListenConfig).ListenPacket(t.Context(), "udp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &dnsServer{conn: conn, records: map[string][]netip.Addr{}, done: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() {
		_ = conn.Close()
		<-s.done
	})
	return s
}

func (s *dnsServer) set(name string, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ips []netip.Addr
	for _, a := range addrs {
		ips = append(ips, netip.MustParseAddr(a))
	}
	s.records[name] = ips
}

// resolver returns a pure-Go net.Resolver whose every query goes to s.
func (s *dnsServer) resolver() *net.Resolver {
	addr := s.conn.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

func (s *dnsServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := s.answer(buf[:n]); resp != nil {
			_, _ = s.conn.WriteTo(resp, from)
		}
	}
}

const (
	typeA    = 1
	typeAAAA = 28
)

// answer builds the response to one query, or nil for a packet that is not one.
func (s *dnsServer) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	// The question: labels, then type and class.
	var labels []string
	i := 12
	for {
		if i >= len(q) {
			return nil
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l > 63 || i+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i:i+l]))
		i += l
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i:])
	question := q[12 : i+4]
	name := strings.ToLower(strings.Join(labels, "."))

	s.mu.Lock()
	s.queries++
	addrs, known := s.records[name]
	s.mu.Unlock()

	var answers [][]byte
	for _, a := range addrs {
		switch {
		case qtype == typeA && a.Is4():
			answers = append(answers, a.AsSlice())
		case qtype == typeAAAA && a.Is6():
			answers = append(answers, a.AsSlice())
		}
	}
	resp := make([]byte, 12, 512)
	copy(resp, q[:2])                           // id
	flags := uint16(0x8400) | uint16(q[2]&1)<<8 // QR, AA, RD copied
	if !known {
		flags |= 3 // NXDOMAIN
	}
	binary.BigEndian.PutUint16(resp[2:], flags)
	binary.BigEndian.PutUint16(resp[4:], 1)
	binary.BigEndian.PutUint16(resp[6:], uint16(len(answers)))
	resp = append(resp, question...)
	for _, rdata := range answers {
		rr := []byte{0xC0, 12} // the name: a pointer to the question's
		rr = binary.BigEndian.AppendUint16(rr, qtype)
		rr = binary.BigEndian.AppendUint16(rr, 1) // IN
		rr = binary.BigEndian.AppendUint32(rr, 0) // TTL
		rr = binary.BigEndian.AppendUint16(rr, uint16(len(rdata)))
		resp = append(resp, append(rr, rdata...)...)
	}
	return resp
}

// TestListWithARealDNSServer resolves through net.Resolver against an in-process DNS server:
// the headless Service grows, shrinks, and disappears (the last answer is kept).
func TestListWithARealDNSServer(t *testing.T) {
	t.Parallel()
	dns := startDNS(t)
	dns.set("origin.kraken.test", "127.0.0.12", "127.0.0.11")
	l, err := members.New(t.Context(), "ring.members", []string{"dns:///origin.kraken.test.:8080"},
		members.Deps{Resolver: dns.resolver()})
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.11:8080", "127.0.0.12:8080"}, l.Addrs())

	dns.set("origin.kraken.test", "127.0.0.12", "127.0.0.11", "127.0.0.13", "::1")
	changed, addrs := l.Refresh(t.Context())
	require.True(t, changed)
	require.Equal(t, []string{"127.0.0.11:8080", "127.0.0.12:8080", "127.0.0.13:8080", "[::1]:8080"}, addrs)

	dns.set("origin.kraken.test", "127.0.0.13")
	changed, addrs = l.Refresh(t.Context())
	require.True(t, changed)
	require.Equal(t, []string{"127.0.0.13:8080"}, addrs)

	dns.mu.Lock()
	delete(dns.records, "origin.kraken.test")
	dns.mu.Unlock()
	changed, addrs = l.Refresh(t.Context())
	require.False(t, changed, "NXDOMAIN keeps the last answer")
	require.Equal(t, []string{"127.0.0.13:8080"}, addrs)

	_, err = members.New(t.Context(), "trackers", []string{"dns:///missing.kraken.test.:1"},
		members.Deps{Resolver: dns.resolver()})
	var dnsErr *net.DNSError
	require.True(t, errors.As(err, &dnsErr) && dnsErr.IsNotFound, "NXDOMAIN reaches the caller: %v", err)

	dns.mu.Lock()
	defer dns.mu.Unlock()
	require.Positive(t, dns.queries, "every answer came from the test's server")
}
