package azure

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/krakenctl/krakenctl/backend"
)

var (
	// ErrAccessDenied means the service refused the credentials or their permissions (HTTP 401
	// or 403): a wrong account key, an expired SAS token or one without the needed permissions,
	// or a managed identity without a data role on the container.
	ErrAccessDenied = errors.New("access denied")
	// ErrNoContainer means the configured container does not exist in the account. It is not
	// backend.ErrNotFound: a missing container is a configuration error, not a missing object,
	// and must not be cached as "this blob does not exist".
	ErrNoContainer = errors.New("container does not exist")
)

// fail turns an error of operation op on object (the namespace/name, or the namespace) into
// the backend's error: the backend's sentinels where one applies, the service's answer in one
// line, and always the backend kind, the operation and the object.
func (b *Backend) fail(ctx context.Context, op, object string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		err = fmt.Errorf("%w: %w", ctxErr, err)
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		// A transport error (*url.Error) quotes the request's URL, SAS signature included.
		return fmt.Errorf("azure: %s %s: %w", op, object, &redacted{err: err})
	}
	svc := &serviceError{re: re}
	code := bloberror.Code(re.ErrorCode)
	switch {
	case code == bloberror.ContainerNotFound:
		return fmt.Errorf("azure: %s %s: %w: container %s in account %s: %w", op, object, ErrNoContainer, b.container, b.account, svc)
	case re.StatusCode == http.StatusNotFound:
		return fmt.Errorf("azure: %s %s: %w: %w", op, object, backend.ErrNotFound, svc)
	case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
		return fmt.Errorf("azure: %s %s: %w to container %s of account %s (check the account key, the SAS token's expiry and permissions, or the managed identity's role on the container): %w",
			op, object, ErrAccessDenied, b.container, b.account, svc)
	case throttled(re):
		return &backend.Throttled{RetryAfter: retryAfter(re.RawResponse), Err: fmt.Errorf("azure: %s %s: %w", op, object, svc)}
	}
	return fmt.Errorf("azure: %s %s: %w", op, object, svc)
}

// throttled reports whether the service asked the caller to slow down: 429, or a 503 that
// says ServerBusy (Azure's code for an account over its request or bandwidth targets) or
// carries a Retry-After.
func throttled(re *azcore.ResponseError) bool {
	switch re.StatusCode {
	case http.StatusTooManyRequests:
		return true
	case http.StatusServiceUnavailable:
		return bloberror.Code(re.ErrorCode) == bloberror.ServerBusy || retryAfter(re.RawResponse) > 0
	}
	return false
}

// retryAfter is how long the response asks the caller to wait: Azure's millisecond headers
// first, then Retry-After in seconds or as an HTTP date; 0 when it does not say.
func retryAfter(resp *http.Response) time.Duration {
	if resp == nil {
		return 0
	}
	for _, h := range []string{"x-ms-retry-after-ms", "retry-after-ms"} {
		// At most a day, as backend.ParseRetryAfter caps it: a huge value must not overflow
		// into a negative wait (which also read as "no Retry-After" above).
		if ms, err := strconv.ParseInt(resp.Header.Get(h), 10, 64); err == nil && ms > 0 {
			return min(time.Duration(min(ms, int64(24*time.Hour/time.Millisecond)))*time.Millisecond, 24*time.Hour)
		}
	}
	return backend.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
}

// serviceError is the service's answer in one line ("GET /container/blob: HTTP 404
// BlobNotFound"). The SDK's own message spans many lines and repeats the response body; the
// SDK's error stays reachable with errors.As.
type serviceError struct {
	re *azcore.ResponseError
}

func (e *serviceError) Error() string {
	status := fmt.Sprintf("HTTP %d", e.re.StatusCode)
	if e.re.ErrorCode != "" {
		status += " " + e.re.ErrorCode
	}
	if resp := e.re.RawResponse; resp != nil && resp.Request != nil && resp.Request.URL != nil {
		// The path only: the query may hold a SAS signature.
		return fmt.Sprintf("%s %s: %s", resp.Request.Method, resp.Request.URL.EscapedPath(), status)
	}
	return status
}

func (e *serviceError) Unwrap() error { return e.re }

// sasSignature matches the signature of a SAS token in a URL's query.
var sasSignature = regexp.MustCompile(`(?i)([?&]sig=)[^&\s"']*`)

// redacted is err with any SAS signature in its message blanked out; err stays reachable with
// errors.Is and errors.As.
type redacted struct {
	err error
}

func (e *redacted) Error() string {
	return sasSignature.ReplaceAllString(e.err.Error(), "${1}REDACTED")
}

func (e *redacted) Unwrap() error { return e.err }
