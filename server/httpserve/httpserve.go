// Package httpserve is the one place where krakenctl builds HTTP servers and clients for links
// between components. NewServer and NewClient carry every timeout and limit (dial, TLS
// handshake, response header, request header, body read, idle), so a role cannot forget one and
// TLS is added here once. Serve runs a server on a listener until a context ends, then shuts it
// down gracefully, so shutdown behaves the same in every role.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ShutdownTimeout bounds how long in-flight requests may take to finish after the context ends.
const ShutdownTimeout = 10 * time.Second

// ErrCutOff is wrapped by Serve's error when requests were still in flight after
// ShutdownTimeout and their connections were closed. The server did stop; what the caller
// makes of the cut-off requests (a warning, usually) is its business.
var ErrCutOff = errors.New("requests in flight were cut off")

// Server defaults.
const (
	// DefaultReadHeaderTimeout bounds how long a client may take to send a request's headers.
	DefaultReadHeaderTimeout = 30 * time.Second
	// DefaultBodyReadTimeout bounds how long one read of a request body may wait for bytes. A
	// body as a whole may take as long as it needs (multi-GiB blobs), but a client that
	// declares a length and then stops sending holds a handler no longer than this.
	DefaultBodyReadTimeout = 60 * time.Second
	// DefaultIdleTimeout is how long a kept-alive connection may wait for its next request.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxHeaderBytes bounds a request's header block. Registry clients send bearer
	// tokens of a few KiB; nothing legitimate comes near this.
	DefaultMaxHeaderBytes = 64 << 10
)

// ServerOptions tune NewServer; the zero value gives the defaults above. A negative duration
// disables that timeout.
type ServerOptions struct {
	ReadHeaderTimeout time.Duration
	BodyReadTimeout   time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

// pick returns v, or def when v is zero, or 0 (no limit) when v is negative.
func pick(v, def time.Duration) time.Duration {
	switch {
	case v < 0:
		return 0
	case v == 0:
		return def
	default:
		return v
	}
}

// NewServer returns an http.Server for h with timeouts suited to a blob server: headers must
// arrive promptly and every body read must make progress, but a body may take as long as it
// needs. The returned server is not yet serving; pass it to Serve.
func NewServer(h http.Handler, o ServerOptions) *http.Server {
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if d := pick(o.BodyReadTimeout, DefaultBodyReadTimeout); d > 0 {
		h = bodyReadTimeout(h, d)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: pick(o.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		IdleTimeout:       pick(o.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    o.MaxHeaderBytes,
	}
}

// bodyReadTimeout gives every read of a request body d to return: before each read the
// connection's read deadline moves to now+d. A stalled body then fails the handler's read with
// a timeout instead of holding the handler until the client gives up. Once the body has ended
// (or failed) the wrapper stops touching the deadline, because net/http clears it to watch the
// idle connection in the background, and a deadline set after that would cancel the request.
func bodyReadTimeout(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			// A copy of the request carries the wrapper: net/http looks at the body of the
			// request it made (its own type) after the handler, to see whether a client that
			// asked "Expect: 100-continue" was ever told to send. Replaced there, a refused
			// upload would keep the connection and wait for a body the client never sends.
			r = r.WithContext(r.Context())
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: http.NewResponseController(w), d: d}
		}
		h.ServeHTTP(w, r)
	})
}

type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	d    time.Duration
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	// An error means the connection cannot take deadlines (an in-memory test writer): read
	// without one rather than fail the request.
	_ = b.rc.SetReadDeadline(time.Now().Add(b.d))
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.done = true
	}
	return n, err
}

// Serve serves srv on ln until ctx is cancelled, then stops accepting, waits up to
// ShutdownTimeout for in-flight requests, and returns nil. It returns an error when serving fails
// for any other reason. Serve closes ln.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), serr)
	}
	if err != nil {
		// In-flight requests outlived the timeout: cut them off rather than hang shutdown.
		_ = srv.Close()
		return fmt.Errorf("shut down http on %s: %w after %s: %w", ln.Addr(), ErrCutOff, ShutdownTimeout, err)
	}
	return nil
}
