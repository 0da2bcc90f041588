package registrytest

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// ShortPatch sends, on a raw connection to addr, a PATCH of the upload at path whose body (3
// bytes) stops 7 bytes short of its Content-Length, half-closes the connection and returns the
// whole answer. It shows how a real net/http server sees a client that goes quiet mid-chunk,
// which httptest's in-process requests cannot.
func ShortPatch(ctx context.Context, addr, path string) (string, error) {
	conn, err := new(net.Dialer).DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }() // the answer is read in full, or its error returned
	if _, err := fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"+
		"Content-Length: 10\r\nContent-Range: 0-9\r\n\r\nabc", path, addr); err != nil {
		return "", err
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return "", err
	}
	answer, err := io.ReadAll(conn)
	return string(answer), err
}
