package ring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// ErrUnhealthy is wrapped by HTTPChecker when a member answers its health check with a
// non-2xx status.
var ErrUnhealthy = errors.New("member unhealthy")

// Checker probes one member.
//
// Check returns nil when member is healthy and an error saying why otherwise. It must return
// promptly once ctx is done (the Ring bounds every check with HealthTimeout through ctx) and be
// safe for concurrent use: the Ring checks all members at once.
type Checker interface {
	Check(ctx context.Context, member string) error
}

// maxDrain bounds how much of a health response body is read so the connection can be reused;
// a larger body is abandoned with its connection.
const maxDrain = 64 << 10

// HTTPChecker checks a member by sending GET Scheme://member/Path; any 2xx answer is healthy.
// The zero value is ready to use. It is safe for concurrent use.
type HTTPChecker struct {
	// Client sends the requests; nil means http.DefaultClient. Its own Timeout, if any, applies
	// on top of the ctx deadline.
	Client *http.Client
	// Path is the health endpoint; empty means "/health".
	Path string
	// Scheme is "http" (the default when empty) or "https".
	Scheme string
}

// Check implements Checker.
func (c HTTPChecker) Check(ctx context.Context, member string) error {
	if err := CheckMember(member); err != nil {
		return fmt.Errorf("check member: %w", err)
	}
	scheme := c.Scheme
	if scheme == "" {
		scheme = "http"
	}
	if scheme != "http" && scheme != "https" {
		return fmt.Errorf("check member %s: scheme %q is not http or https", member, scheme)
	}
	path := c.Path
	if path == "" {
		path = "/health"
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := url.URL{Scheme: scheme, Host: member, Path: path}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("check member %s: %w", member, err)
	}
	client := c.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("check member %s: %w", member, err)
	}
	defer func() { _ = resp.Body.Close() }()
	// Drain (a bounded amount) so the keep-alive connection goes back to the pool; the body's
	// content does not matter, and an error reading it does not change the verdict.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("check member %s: %w: GET %s: %s", member, ErrUnhealthy, u.Path, resp.Status)
	}
	return nil
}

// Interface guards
var _ Checker = HTTPChecker{}
