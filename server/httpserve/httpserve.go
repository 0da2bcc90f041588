// Package httpserve runs an http.Server on a listener the caller owns until a context ends, then
// shuts it down gracefully. Every role uses it, so shutdown behaves the same everywhere.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ShutdownTimeout bounds how long in-flight requests may take to finish after the context ends.
const ShutdownTimeout = 10 * time.Second

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
		return fmt.Errorf("shut down http on %s: %w", ln.Addr(), err)
	}
	return nil
}

// NewServer returns an http.Server with timeouts suitable for a blob server: headers must arrive
// promptly, but bodies (multi-GiB blobs) may take as long as they need.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}
