package ring_test

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
)

// testClient returns a client with its own transport, whose idle connections are closed when
// the test ends so goleak sees no stray goroutines.
func testClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// serve starts an httptest server with h and returns its "host:port".
func serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// closedAddr returns a loopback "host:port" nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestHTTPChecker(t *testing.T) {
	t.Parallel()
	var gotPath atomic.Value
	healthy := serve(t, func(w http.ResponseWriter, r *http.Request) {
		gotPath.Store(r.Method + " " + r.URL.Path)
		_, _ = w.Write([]byte("ok"))
	})
	noContent := serve(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	failing := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "disk full", http.StatusInternalServerError)
	})
	redirectLoop := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/health", http.StatusFound)
	})
	closed := closedAddr(t)

	c := ring.HTTPChecker{Client: testClient(t)}
	ctx := t.Context()

	require.NoError(t, c.Check(ctx, healthy))
	require.Equal(t, "GET /health", gotPath.Load())
	require.NoError(t, c.Check(ctx, noContent))

	err := c.Check(ctx, failing)
	require.ErrorIs(t, err, ring.ErrUnhealthy)
	require.ErrorContains(t, err, "500 Internal Server Error")
	require.ErrorContains(t, err, failing)

	err = c.Check(ctx, closed)
	require.Error(t, err)
	require.NotErrorIs(t, err, ring.ErrUnhealthy)
	require.ErrorContains(t, err, "connection refused")

	require.Error(t, c.Check(ctx, redirectLoop))

	custom := ring.HTTPChecker{Client: testClient(t), Path: "readyz"}
	require.NoError(t, custom.Check(ctx, healthy))
	require.Equal(t, "GET /readyz", gotPath.Load())
}

func TestHTTPCheckerTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	hanging := serve(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := ring.HTTPChecker{Client: testClient(t)}.Check(ctx, hanging)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestHTTPCheckerRejectsBadInput(t *testing.T) {
	t.Parallel()
	c := ring.HTTPChecker{Client: testClient(t)}
	for _, m := range []string{"http://a:1", "a:1/x", "a"} {
		require.Error(t, c.Check(t.Context(), m), m)
	}
	err := ring.HTTPChecker{Scheme: "ftp"}.Check(t.Context(), "127.0.0.1:1")
	require.ErrorContains(t, err, `scheme "ftp" is not http or https`)
}

func TestHTTPCheckerHTTPS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/health") {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	// The plain-HTTP probe below makes the server log a handshake error; keep test output clean.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := ring.HTTPChecker{Client: srv.Client(), Scheme: "https"}
	require.NoError(t, c.Check(t.Context(), srv.Listener.Addr().String()))
	// Plain HTTP against a TLS server fails rather than passing by accident.
	plain := ring.HTTPChecker{Client: testClient(t)}
	err := plain.Check(t.Context(), srv.Listener.Addr().String())
	require.ErrorIs(t, err, ring.ErrUnhealthy, "a TLS server answers plain HTTP with 400")
}
