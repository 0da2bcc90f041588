package httpserve_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/httpserve"
)

// serve runs srv on a loopback listener until the test ends.
func serve(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- httpserve.Serve(ctx, srv, ln) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	return ln.Addr().String()
}

// TestStalledBodyFreesHandler: a request that declares a large body and then stops sending no
// longer holds its handler until the client gives up; the handler's read fails with a timeout
// while the client still holds the connection open.
func TestStalledBodyFreesHandler(t *testing.T) {
	t.Parallel()
	readErr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		readErr <- fmt.Errorf("read %d bytes: %w", n, err)
		w.WriteHeader(http.StatusBadRequest)
	})
	addr := serve(t, httpserve.NewServer(h, httpserve.ServerOptions{BodyReadTimeout: 200 * time.Millisecond}))
	conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })
	_, err = fmt.Fprintf(conn, "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\nab")
	require.NoError(t, err)
	// The client never sends more and never closes; only the server's timeout can end this.
	err = <-readErr
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "%v", err)
	require.Contains(t, err.Error(), "read 2 bytes")
}

// TestSlowButSteadyBodyPasses: the timeout bounds each read, not the body: a body that keeps
// arriving, slower in total than the timeout, is read whole.
func TestSlowButSteadyBodyPasses(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(b)
	})
	addr := serve(t, httpserve.NewServer(h, httpserve.ServerOptions{BodyReadTimeout: 300 * time.Millisecond}))
	pr, pw := io.Pipe()
	go func() {
		for range 6 {
			_, _ = pw.Write([]byte("abc"))
			time.Sleep(100 * time.Millisecond)
		}
		_ = pw.Close() // a PipeWriter's Close is always nil
	}()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+addr+"/x", pr)
	require.NoError(t, err)
	req.ContentLength = 18
	hc := httpserve.NewClient(httpserve.ClientOptions{})
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, strings.Repeat("abc", 6), <-got)
}

// TestHandlerOutlivesBody: after the body ended, a handler may take longer than the body
// timeout (hashing, fsync, replication) without its request being cancelled, even when it reads
// the ended body again (net/http watches the idle connection from then on, and a read deadline
// set after that would cancel the request).
func TestHandlerOutlivesBody(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = r.Body.Read(make([]byte, 1)) // EOF again
		select {
		case <-r.Context().Done():
			w.WriteHeader(http.StatusServiceUnavailable)
		case <-time.After(400 * time.Millisecond):
			w.WriteHeader(http.StatusCreated)
		}
	})
	addr := serve(t, httpserve.NewServer(h, httpserve.ServerOptions{BodyReadTimeout: 100 * time.Millisecond}))
	hc := httpserve.NewClient(httpserve.ClientOptions{})
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/x", strings.NewReader("payload"))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := hc.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusCreated, resp.StatusCode)
}

// TestHeaderLimit: a header block over MaxHeaderBytes is refused with 431 before any handler.
func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	called := false
	addr := serve(t, httpserve.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }), httpserve.ServerOptions{}))
	conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })
	_, err = fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", httpserve.DefaultMaxHeaderBytes*2))
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	require.False(t, called)
}

// TestClientBoundsHeaders: the client gives up on a server that accepts but never
// answers, instead of waiting forever.
func TestClientBoundsHeaders(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ln.Close()) })
	go func() {
		c, err := ln.Accept()
		if err == nil {
			// Read the request, never answer; the copy ends when the client gives up, and
			// then the connection has nothing left to say.
			_, _ = io.Copy(io.Discard, c)
			_ = c.Close()
		}
	}()
	hc := httpserve.NewClient(httpserve.ClientOptions{ResponseHeaderTimeout: 200 * time.Millisecond})
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
	require.NoError(t, err)
	_, err = hc.Do(req) //nolint:bodyclose // it times out before any answer: there is no body
	require.ErrorContains(t, err, "timeout awaiting response headers")
}

// TestRefusedExpectContinue: a handler that refuses a request whose client waits for "100
// Continue" before sending its body answers at once and closes the connection, as net/http does
// without the body wrapper; the client is never made to send a body nobody reads. (With the
// server's own request body replaced, net/http kept the connection and waited for that body:
// every refused chunk of a docker push stalled for the client's expect-continue timeout.)
func TestRefusedExpectContinue(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "offset mismatch", http.StatusRequestedRangeNotSatisfiable)
	})
	addr := serve(t, httpserve.NewServer(h, httpserve.ServerOptions{}))
	conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() }) // the server closes it first
	_, err = fmt.Fprintf(conn, "PATCH /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
	require.NoError(t, err)
	// A bound, not a measurement: without the fix the answer never comes while the body is owed.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusRequestedRangeNotSatisfiable, resp.StatusCode)
	require.True(t, resp.Close, "the connection is not kept for a body that was never asked for")
}
