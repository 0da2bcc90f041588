package agent

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/httpserve"
)

// TestAnnounceSource: the agent talks to its trackers from the address it announces when that
// address is one of the host's own (a hostNetwork agent on a node whose traffic to a tracker
// pod would leave from a CNI bridge's address, which the tracker refuses), and otherwise lets
// the kernel choose.
func TestAnnounceSource(t *testing.T) {
	t.Parallel()
	for _, adv := range []string{"", "nonsense", "127.0.0.1:16001", "0.0.0.0:16001", "node.example:16001", "192.0.2.7:16001"} {
		require.Nil(t, announceSource(adv), "%q", adv)
	}
	lab := os.Getenv("KRAKENCTL_LAB_ADDR") // scripts/lab-net.sh: an address of this host, not loopback
	if lab == "" {
		t.Skip("KRAKENCTL_LAB_ADDR is not set: run scripts/lab-net.sh up (make test does)")
	}
	src := announceSource(net.JoinHostPort(lab, "16001"))
	require.NotNil(t, src)
	require.Equal(t, lab, src.IP.String())

	// A tracker on loopback sees the call come from the announced address, not 127.0.0.1.
	seen := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		select {
		case seen <- host:
		default:
		}
	}))
	t.Cleanup(srv.Close)
	hc := httpserve.NewClient(httpserve.ClientOptions{LocalAddr: src})
	t.Cleanup(hc.CloseIdleConnections)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/health", nil)
	require.NoError(t, err)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, lab, <-seen)
}

// TestSourceFallback: when the announced address cannot be bound (here one no interface has, so
// the bind fails before anything is sent), the request goes out from the kernel's choice
// instead, body and all.
func TestSourceFallback(t *testing.T) {
	t.Parallel()
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
	}))
	t.Cleanup(srv.Close)
	bound := httpserve.NewClient(httpserve.ClientOptions{LocalAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7")}})
	free := httpserve.NewClient(httpserve.ClientOptions{})
	t.Cleanup(bound.CloseIdleConnections)
	t.Cleanup(free.CloseIdleConnections)
	f := &sourceFallback{bound: bound.Transport, free: free.Transport, log: slog.New(slog.DiscardHandler)}
	hc := &http.Client{Transport: f}
	for _, body := range []string{"first", "second"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/announce", strings.NewReader(body))
		require.NoError(t, err)
		resp, err := hc.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		require.NoError(t, resp.Body.Close())
	}
	require.True(t, f.warned.Load())
	require.Equal(t, []string{"first", "second"}, bodies)

	// A failure of the request's own (a name that does not resolve yet, a tracker that is
	// down) is not a reason to fall back: the tracker would refuse the other address.
	require.False(t, sourceUnusable(&net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "tracker-0", IsNotFound: true}}))
	require.False(t, sourceUnusable(&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}))
	require.True(t, sourceUnusable(&net.OpError{Op: "dial", Err: os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)}))
	require.True(t, sourceUnusable(&net.OpError{Op: "dial", Err: &net.AddrError{Err: "mismatched local address type", Addr: "10.0.0.1"}}))
}
