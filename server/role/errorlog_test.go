package role

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/krakenctl/krakenctl/server/pki"
)

// lockedBuffer is a bytes.Buffer safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStrangersDoNotFloodTheLog: fifty clients that speak no TLS of a TLS listener, each a failed
// handshake that net/http reports, make at most errorLogBurst lines (and one more, should the
// limiter refill meanwhile), and the next line logged counts those left out.
func TestStrangersDoNotFloodTheLog(t *testing.T) {
	var out lockedBuffer
	b := &Base{log: slog.New(slog.NewJSONHandler(&out, nil))}
	ca, err := pki.NewCA("test")
	require.NoError(t, err)
	cfg, err := ca.IssueFiles(t.TempDir(), "srv", pki.Leaf{Name: "srv", Hosts: []string{"127.0.0.1"}})
	require.NoError(t, err)
	p, err := pki.Load(cfg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.NotFoundHandler(), ErrorLog: b.errorLog(ln)} //nolint:gosec // closed below; no client sends a header
	go func() { _ = srv.Serve(tls.NewListener(ln, p.ServerConfig())) }()
	t.Cleanup(func() { _ = srv.Close() })

	const strangers = 50
	for range strangers {
		c, err := new(net.Dialer).DialContext(t.Context(), "tcp", ln.Addr().String())
		require.NoError(t, err)
		_, _ = c.Write([]byte("not a TLS record\n")) // (plain HTTP would get a quiet 400 instead)
		_ = c.Close()
	}
	require.Eventually(t, func() bool { return strings.Count(out.String(), "TLS handshake error") >= errorLogBurst }, 10*time.Second, 10*time.Millisecond)
	lines := strings.Count(out.String(), "TLS handshake error")
	require.LessOrEqual(t, lines, errorLogBurst+1, "fifty strangers, a handful of lines")

	// Once the limiter allows again, the next line says how many were left out.
	s := &sampledLog{log: b.log, lim: rate.NewLimiter(rate.Inf, 1)}
	s.dropped.Store(7)
	_, _ = s.Write([]byte("http: TLS handshake error from x: EOF\n"))
	require.Contains(t, out.String(), `"suppressed_before":7`)
}
