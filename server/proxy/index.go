package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
)

// index is the build-index as the proxy uses it: several nodes' API addresses, tried in turn.
// A request goes to the node that last answered; when that node cannot be reached or answers
// 5xx the next is asked. Writes that may already have been applied are repeated elsewhere only
// when repeating them is harmless (puts of the same value); a delete is repeated only when the
// first node never got it (refused connection, or 503). It is safe for concurrent use.
type index struct {
	nodes     []*client.BuildIndex
	timeout   time.Duration
	preferred atomic.Int64 // index into nodes of the node that answered last
	failovers func()       // counts a switch to another node
}

func newIndex(addrs []string, hc *http.Client, timeout time.Duration, failovers func()) *index {
	ix := &index{timeout: timeout, failovers: failovers}
	for _, a := range addrs {
		ix.nodes = append(ix.nodes, client.NewBuildIndex(a, hc))
	}
	return ix
}

// retry says when a failed request goes to the next node.
type retry int

const (
	// retryAlways: reads and idempotent writes; any transport error or 5xx.
	retryAlways retry = iota
	// retryUnsent: writes that must not be applied twice; only when the node did not get it.
	retryUnsent
)

// do runs fn against the nodes, starting at the preferred one, until one answers with a
// success or a definite error. The error of the last node asked is returned, mapped: transport
// failures become 503 UNAVAILABLE; answers from the build-index keep their status and code.
func (ix *index) do(ctx context.Context, op string, r retry, fn func(context.Context, *client.BuildIndex) error) error {
	start := int(ix.preferred.Load())
	var err error
	for i := range ix.nodes {
		n := (start + i) % len(ix.nodes)
		if i > 0 {
			ix.failovers()
		}
		cctx, cancel := context.WithTimeout(ctx, ix.timeout)
		err = fn(cctx, ix.nodes[n])
		cancel()
		if err == nil || !ix.retriable(err, r) || ctx.Err() != nil {
			if err == nil || isAnswer(err) {
				ix.preferred.Store(int64(n))
			}
			break
		}
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
	if !isAnswer(err) {
		return &registry.Error{Status: http.StatusServiceUnavailable, Code: registry.CodeUnavailable,
			Message: "the build-index cannot be reached; retry", Err: fmt.Errorf("%s: %w", op, err)}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// isAnswer reports whether err carries a build-index answer (a status and code) rather than a
// transport failure.
func isAnswer(err error) bool {
	var re *registry.Error
	return errors.As(err, &re)
}

func (ix *index) retriable(err error, r retry) bool {
	var re *registry.Error
	if errors.As(err, &re) {
		if r == retryUnsent {
			return re.Status == http.StatusServiceUnavailable
		}
		return re.Status >= 500
	}
	if r == retryUnsent {
		var op *net.OpError
		return errors.As(err, &op) && op.Op == "dial"
	}
	return true
}

func (ix *index) getLink(ctx context.Context, repo, name string) (api.Link, error) {
	var l api.Link
	err := ix.do(ctx, "get link", retryAlways, func(ctx context.Context, c *client.BuildIndex) (err error) {
		l, err = c.GetLink(ctx, repo, name, false)
		return err
	})
	return l, err
}

func (ix *index) putLink(ctx context.Context, repo, name string, d digest.Digest) error {
	return ix.do(ctx, "put link", retryAlways, func(ctx context.Context, c *client.BuildIndex) error {
		_, err := c.PutLink(ctx, repo, name, d)
		return err
	})
}

func (ix *index) deleteLink(ctx context.Context, repo, name string) (api.Link, error) {
	var l api.Link
	err := ix.do(ctx, "delete link", retryUnsent, func(ctx context.Context, c *client.BuildIndex) (err error) {
		l, err = c.DeleteLink(ctx, repo, name)
		return err
	})
	return l, err
}

func (ix *index) listLinks(ctx context.Context, repo, prefix string) ([]api.Link, error) {
	var ls []api.Link
	err := ix.do(ctx, "list links", retryAlways, func(ctx context.Context, c *client.BuildIndex) (err error) {
		ls, err = c.ListLinks(ctx, repo, prefix, false)
		return err
	})
	return ls, err
}

func (ix *index) getTag(ctx context.Context, repo, tag string, stale bool) (api.Tag, error) {
	var t api.Tag
	err := ix.do(ctx, "get tag", retryAlways, func(ctx context.Context, c *client.BuildIndex) (err error) {
		t, err = c.GetTag(ctx, repo, tag, stale)
		return err
	})
	return t, err
}

func (ix *index) putTag(ctx context.Context, repo, tag string, d digest.Digest) error {
	return ix.do(ctx, "put tag", retryAlways, func(ctx context.Context, c *client.BuildIndex) error {
		_, err := c.PutTag(ctx, repo, tag, d)
		return err
	})
}

func (ix *index) deleteTag(ctx context.Context, repo, tag string) (api.Tag, error) {
	var t api.Tag
	err := ix.do(ctx, "delete tag", retryUnsent, func(ctx context.Context, c *client.BuildIndex) (err error) {
		t, err = c.DeleteTag(ctx, repo, tag)
		return err
	})
	return t, err
}

func (ix *index) listTags(ctx context.Context, repo, last string, n int) ([]string, string, error) {
	var (
		tags []string
		next string
	)
	err := ix.do(ctx, "list tags", retryAlways, func(ctx context.Context, c *client.BuildIndex) (err error) {
		tags, next, err = c.ListTags(ctx, repo, last, n)
		return err
	})
	return tags, next, err
}

func (ix *index) listRepositories(ctx context.Context, last string, n int) ([]string, string, error) {
	var (
		repos []string
		next  string
	)
	err := ix.do(ctx, "list repositories", retryAlways, func(ctx context.Context, c *client.BuildIndex) (err error) {
		repos, next, err = c.ListRepositories(ctx, last, n)
		return err
	})
	return repos, next, err
}

// ready reports whether any node answers /readyz.
func (ix *index) ready(ctx context.Context) error {
	var errs []error
	for _, c := range ix.nodes {
		err := c.Ready(ctx)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("no build-index node is ready: %w", errors.Join(errs...))
}
