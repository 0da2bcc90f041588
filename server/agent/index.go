package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
)

// indexNode is what the registry API reads from one build-index node. *client.BuildIndex
// implements it; every error of a missing tag or link wraps client.ErrNotFound.
type indexNode interface {
	Addr() string
	GetTag(ctx context.Context, repo, tag string, stale bool) (api.Tag, error)
	GetLink(ctx context.Context, repo, name string, stale bool) (api.Link, error)
	ListLinks(ctx context.Context, repo, prefix string, stale bool) ([]api.Link, error)
	ListTags(ctx context.Context, repo, last string, n int) ([]string, string, error)
	ListRepositories(ctx context.Context, last string, n int) ([]string, string, error)
}

// errNoBuildIndex answers the registry requests that need the build-index on an agent that has
// none configured.
var errNoBuildIndex = registry.Errorf(http.StatusServiceUnavailable, registry.CodeUnavailable,
	"this agent has no build_index configured: it cannot resolve tags, sha512 digests or referrers, "+
		"nor list tags and repositories; pull by sha256 digest, or list the build-index nodes under build_index in the agent's config")

// index sends each read to the build-index nodes, starting with the one that answered last and
// moving on to the next, in the configured order, when a node cannot be reached or answers with
// a server error (5xx: no leader, shutting down, ...). An answer about the request itself (404,
// 400) is final. When every node failed, the error is 503 UNAVAILABLE wrapping each node's. A
// request is never sent twice to the same node. A nil *index is an agent without build_index:
// every call fails with errNoBuildIndex.
type index struct {
	nodes []indexNode
	// attempt bounds each node's answer (indexAttempt).
	attempt time.Duration
	// first is where the next request starts: the node that answered last.
	first atomic.Int32
	// failures counts the requests each node could not answer; nil counts nothing.
	failures *prometheus.CounterVec
}

func newIndex(nodes []indexNode, failures *prometheus.CounterVec) *index {
	if len(nodes) == 0 {
		return nil
	}
	return &index{nodes: nodes, attempt: indexAttempt, failures: failures}
}

// retryable reports whether err, from one node, should pass the request on to the next node.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var re *registry.Error
	if errors.As(err, &re) {
		return re.Status >= http.StatusInternalServerError
	}
	// Not an answer of the API: the node could not be reached, or its answer was cut off or
	// unreadable.
	return true
}

// indexAttempt bounds one node's answer, so that a node that accepts connections but never
// answers passes the request on. It is longer than a build-index waits for an election before it
// answers 503 itself.
const indexAttempt = 15 * time.Second

// indexCall runs fn against the nodes of ix as index describes.
func indexCall[T any](ctx context.Context, ix *index, fn func(context.Context, indexNode) (T, error)) (T, error) {
	var zero T
	if ix == nil {
		return zero, errNoBuildIndex
	}
	start := int(ix.first.Load())
	var errs []error
	for i := range ix.nodes {
		k := (start + i) % len(ix.nodes)
		actx, cancel := context.WithTimeout(ctx, ix.attempt)
		v, err := fn(actx, ix.nodes[k])
		cancel()
		if err == nil || !retryable(ctx, err) {
			if err == nil && k != start {
				ix.first.Store(int32(k))
			}
			return v, err
		}
		errs = append(errs, fmt.Errorf("build-index %s: %w", ix.nodes[k].Addr(), err))
		if ix.failures != nil {
			ix.failures.WithLabelValues(ix.nodes[k].Addr()).Inc()
		}
	}
	msg := "the build-index did not answer; retry"
	if len(ix.nodes) > 1 {
		msg = fmt.Sprintf("none of the %d build-index nodes answered; retry", len(ix.nodes))
	}
	return zero, &registry.Error{Status: http.StatusServiceUnavailable, Code: registry.CodeUnavailable, Message: msg, Err: errors.Join(errs...)}
}

// getTag reads a tag, linearizably.
func (ix *index) getTag(ctx context.Context, repo, tag string) (api.Tag, error) {
	return indexCall(ctx, ix, func(ctx context.Context, n indexNode) (api.Tag, error) { return n.GetTag(ctx, repo, tag, false) })
}

// getLink reads a link, linearizably.
func (ix *index) getLink(ctx context.Context, repo, name string) (api.Link, error) {
	return indexCall(ctx, ix, func(ctx context.Context, n indexNode) (api.Link, error) { return n.GetLink(ctx, repo, name, false) })
}

// listLinks lists the links under prefix, linearizably.
func (ix *index) listLinks(ctx context.Context, repo, prefix string) ([]api.Link, error) {
	return indexCall(ctx, ix, func(ctx context.Context, n indexNode) ([]api.Link, error) {
		return n.ListLinks(ctx, repo, prefix, false)
	})
}

// page is one page of a listing and the last entry to pass for the next one ("" at the end).
type page struct {
	items []string
	next  string
}

// listTags reads one page of repo's tags.
func (ix *index) listTags(ctx context.Context, repo, last string, n int) (page, error) {
	return indexCall(ctx, ix, func(ctx context.Context, nd indexNode) (page, error) {
		items, next, err := nd.ListTags(ctx, repo, last, n)
		return page{items, next}, err
	})
}

// listRepositories reads one page of repository names.
func (ix *index) listRepositories(ctx context.Context, last string, n int) (page, error) {
	return indexCall(ctx, ix, func(ctx context.Context, nd indexNode) (page, error) {
		items, next, err := nd.ListRepositories(ctx, last, n)
		return page{items, next}, err
	})
}

// isNotFound reports whether err says the tag, link or repository does not exist.
func isNotFound(err error) bool { return errors.Is(err, client.ErrNotFound) }
