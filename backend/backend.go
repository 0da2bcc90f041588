// Package backend defines the contract between krakenctl's origins and build-index (blobs, and
// the build-index's write-back copies of tags) and the durable storage behind them: a
// filesystem, S3, a plain HTTP server or an upstream Docker/OCI registry. Each implementation
// lives in its own sub-package, decodes its own strict configuration, and passes the shared
// conformance suite in backendtest.
//
// Objects are addressed by a namespace (for container images, the repository name, for example
// "library/ubuntu") and a name (for blobs, the hex digest without its algorithm). Backends treat
// both as opaque keys; the Router decides which backend serves which namespace.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Sentinel errors. Implementations wrap them with %w so callers test with errors.Is.
var (
	// ErrNotFound means the object does not exist in the backend.
	ErrNotFound = errors.New("backend: object not found")
	// ErrReadOnly means the backend does not accept uploads (an upstream registry, an HTTP
	// server that refuses PUT).
	ErrReadOnly = errors.New("backend: read-only")
	// ErrNoRoute means no configured backend matches the namespace.
	ErrNoRoute = errors.New("backend: no backend for namespace")
	// ErrThrottled means the store asked the caller to slow down (HTTP 429, a 503 that says
	// so, S3's SlowDown, Azure's ServerBusy, GCS's rateLimitExceeded): the same request may
	// succeed later. Backends return it inside a *Throttled, which carries how long the store
	// asked to wait.
	ErrThrottled = errors.New("backend: throttled")
)

// Throttled is the error of a request the store refused as too many or too fast. It matches
// ErrThrottled and the store's own error with errors.Is and errors.As.
type Throttled struct {
	// RetryAfter is how long the store asked the caller to wait (a Retry-After header); 0 when
	// it did not say.
	RetryAfter time.Duration
	// Err is the store's answer, naming the backend and the object.
	Err error
}

func (t *Throttled) Error() string {
	if t.RetryAfter > 0 {
		return fmt.Sprintf("%v (throttled; retry after %s)", t.Err, t.RetryAfter)
	}
	return fmt.Sprintf("%v (throttled)", t.Err)
}

// Unwrap returns ErrThrottled and the store's error.
func (t *Throttled) Unwrap() []error { return []error{ErrThrottled, t.Err} }

// Info describes a stored object.
type Info struct {
	// Size is the object's length in bytes.
	Size int64
	// ModTime is when the backend last changed the object, when it knows; zero otherwise.
	ModTime time.Time
}

// WriteChecker is implemented by a backend that knows, without any I/O, whether Upload can
// ever succeed for a namespace: an upstream registry never takes uploads, an HTTP backend
// without allow_put never sends one. Origins ask at the start of a push, so a push whose
// write-back could never happen is refused before any byte is taken instead of accepted and
// dropped at write-back.
type WriteChecker interface {
	// CheckWrite returns nil when Upload may succeed for namespace (it may still fail for other
	// reasons), else an error wrapping ErrReadOnly (or ErrNoRoute, ErrInvalidKey) whose
	// message says which backend refuses and why.
	CheckWrite(namespace string) error
}

// CheckWrite asks b whether Upload can ever succeed for namespace (WriteChecker); a backend
// that does not implement it is taken to be writable.
func CheckWrite(b Backend, namespace string) error {
	if wc, ok := b.(WriteChecker); ok {
		return wc.CheckWrite(namespace)
	}
	return nil
}

// Backend is durable object storage addressed by (namespace, name).
//
// Every method takes ctx first and stops promptly when it is cancelled, returning an error
// that wraps ctx.Err(). All methods are safe for concurrent use by multiple goroutines. A
// missing object is reported as an error wrapping ErrNotFound; a namespace or name that fails
// CheckNamespace or CheckName as an error wrapping ErrInvalidKey, before any I/O; a backend
// that cannot store objects returns an error wrapping ErrReadOnly from Upload. Every
// implementation passes the conformance suite in backend/backendtest.
type Backend interface {
	// Stat returns the object's size, or an error wrapping ErrNotFound.
	Stat(ctx context.Context, namespace, name string) (Info, error)
	// Download writes the whole object to w. It returns an error wrapping ErrNotFound when the
	// object does not exist, in which case nothing has been written to w. On any other error w
	// may have received a prefix of the object; the caller owns w and discards it.
	Download(ctx context.Context, namespace, name string, w io.Writer) error
	// Upload stores exactly the bytes of r, replacing any object of the same name. size is the
	// length of r when known, or -1. When size is not -1 and r yields a different number of
	// bytes, Upload fails. Readers never observe a partially uploaded object: either the previous
	// object or the whole new one. When Upload fails (a read error from r, which it wraps, a
	// cancelled ctx, a size mismatch) the previous object, if any, is left as it was. Upload does
	// not close r.
	Upload(ctx context.Context, namespace, name string, r io.Reader, size int64) error
	// List returns the names (as passed to Upload) of the objects in namespace whose names start
	// with prefix, in lexical order. Objects of other namespaces, including namespaces nested
	// under this one ("library/ubuntu" under "library"), are not listed. An empty namespace lists
	// nothing and is not an error. A backend that cannot enumerate objects returns an error
	// wrapping errors.ErrUnsupported.
	List(ctx context.Context, namespace, prefix string) ([]string, error)
}
