// Package client holds typed HTTP clients of krakenctl's server APIs, used by the CLI and by
// roles that call other roles. Clients are safe for concurrent use; they own nothing but
// configuration, and the *http.Client they are given is shared, not closed.
package client

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/castore"
)

// ErrNotFound is wrapped by every client error for a blob or upload that the server does not have.
var ErrNotFound = errors.New("not found")

// ErrUnsupported is wrapped by client errors of requests the server does not implement (it
// predates them); the caller falls back to what older servers offer.
var ErrUnsupported = errors.New("not supported by the server")

// ErrNoAnswer is wrapped by client errors of requests that got no answer: the server could
// not be reached, the connection broke, the request's body failed, or ctx ended first. The
// request may or may not have been applied.
var ErrNoAnswer = errors.New("no answer from the server")

// IsClientFault reports whether err says the request itself is wrong (a 4xx other than 404,
// 408, 409 and 429), so another server would answer the same and it is not worth sending
// elsewhere. It reads the errors this package returns with the statuses registry.FromError
// gives them: the server's answer (*errcode.Error), the upload-session sentinels (see
// sessionError), a request body over its limit (*http.MaxBytesError, 413). Anything else, such
// as ErrNoAnswer, is no fault of the request.
func IsClientFault(err error) bool {
	switch s := statusOf(err); s {
	case http.StatusNotFound, http.StatusRequestTimeout, http.StatusConflict, http.StatusTooManyRequests:
		return false
	default:
		return s >= 400 && s < 500
	}
}

// statusOf is the HTTP status err stands for, 0 for none.
func statusOf(err error) int {
	var e *errcode.Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &e):
		return e.Status
	case errors.Is(err, castore.ErrUploadUnknown):
		return http.StatusNotFound
	case errors.Is(err, castore.ErrBadOffset):
		return http.StatusRequestedRangeNotSatisfiable
	case errors.Is(err, castore.ErrDigestMismatch):
		return http.StatusBadRequest
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	}
	return 0
}

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// responseError turns a non-success response into an error that wraps *errcode.Error (and
// ErrNotFound for 404s). It consumes and closes the body.
func responseError(op string, resp *http.Response) error {
	defer func() { _ = resp.Body.Close() }() // read side
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	apiErr := errcode.DecodeError(resp.StatusCode, body)
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s: %w: %w", op, ErrNotFound, apiErr)
	}
	return fmt.Errorf("%s: %w", op, apiErr)
}

// drain reads what is left of a body so the connection can be reused, then closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
}
