package client

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
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// DefaultBuildIndexAttempt bounds one node's answer when BuildIndexesOptions.Attempt is zero. It
// is longer than a build-index node waits for an election before it answers 503 itself.
const DefaultBuildIndexAttempt = 15 * time.Second

// BuildIndexesOptions tune NewBuildIndexes.
type BuildIndexesOptions struct {
	// Attempt bounds each node's answer to one request, so that a node that accepts connections
	// but never answers passes the request on; DefaultBuildIndexAttempt when zero.
	Attempt time.Duration
	// OnFailure, when set, is called (synchronously) each time node failed a request in a way
	// that passes it on: next is the node asked next, "" when none is left. Roles count
	// failovers with it.
	OnFailure func(node, next string)
}

// BuildIndexes is a client of a build-index cluster: the API addresses of several nodes, any
// of which accepts every request. A request goes to the node that answered last; when that node
// cannot be reached, does not answer within the attempt bound, or answers with a server error
// (5xx: no leader, shutting down, ...), the next node in the configured order is asked, and so
// on, each node at most once. An answer about the request itself (404, 400, ...) is final.
//
// Reads, and writes that are harmless to apply twice (puts: the same value again), are passed on
// after any failure. A delete is passed on only when the node surely did not apply it (the
// connection was refused, or the node answered 503); a delete that may have been applied is not
// sent elsewhere, and its failure is 503 UNAVAILABLE.
//
// When every node failed, the error is 503 UNAVAILABLE (*errcode.Error) wrapping each node's
// error. A request ended by ctx returns an error wrapping ctx's. Other errors are the node's
// answer, as BuildIndex returns them (ErrNotFound for a 404). It is safe for concurrent use.
type BuildIndexes struct {
	nodes     atomic.Pointer[[]*BuildIndex]
	hc        *http.Client
	attempt   time.Duration
	onFailure func(node, next string)
	// first is where the next request starts: the node that answered last.
	first atomic.Int32
}

// NewBuildIndexes returns a client of the build-index nodes at addrs (as NewBuildIndex takes
// them), tried in that order. hc may be nil for http.DefaultClient; it is shared, not closed.
// With no addrs every call fails with ErrNoBuildIndex.
func NewBuildIndexes(addrs []string, hc *http.Client, opts BuildIndexesOptions) *BuildIndexes {
	b := &BuildIndexes{attempt: opts.Attempt, onFailure: opts.OnFailure, hc: hc}
	if b.attempt <= 0 {
		b.attempt = DefaultBuildIndexAttempt
	}
	b.SetAddrs(addrs)
	return b
}

// SetAddrs replaces the nodes (a role whose build-index nodes come from DNS calls it when the
// answer changes); requests already under way finish with the old ones.
func (b *BuildIndexes) SetAddrs(addrs []string) {
	nodes := make([]*BuildIndex, 0, len(addrs))
	for _, a := range addrs {
		nodes = append(nodes, NewBuildIndex(a, b.hc))
	}
	b.nodes.Store(&nodes)
}

func (b *BuildIndexes) list() []*BuildIndex { return *b.nodes.Load() }

// ErrNoBuildIndex is the error of a BuildIndexes without addresses (given none, or whose DNS
// name has not resolved yet): a 503 UNAVAILABLE where it reaches a client, since the addresses
// may come.
var ErrNoBuildIndex error = &errcode.Error{Status: http.StatusServiceUnavailable, Code: errcode.CodeUnavailable,
	Message: "no build-index node known yet; retry"}

// Addrs returns the nodes' addresses in the order they are tried from.
func (b *BuildIndexes) Addrs() []string {
	nodes := b.list()
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Addr()
	}
	return out
}

// repeat says which failures of a request pass it on to the next node.
type repeat int

const (
	// repeatAlways: reads and writes harmless to apply twice; any failure to answer, or 5xx.
	repeatAlways repeat = iota
	// repeatUnsent: writes that must not be applied twice; only when the node did not get it.
	repeatUnsent
)

// passOn reports whether err, one node's failure, passes the request on to the next node.
func passOn(err error, r repeat) bool {
	var re *errcode.Error
	if errors.As(err, &re) {
		if r == repeatUnsent {
			return re.Status == http.StatusServiceUnavailable
		}
		return re.Status >= http.StatusInternalServerError
	}
	if r == repeatUnsent {
		return NotSent(err)
	}
	// Not an answer of the API: the node could not be reached, or its answer was cut off or
	// unreadable.
	return true
}

// NotSent reports whether err, a request's failure to get an answer, surely left the request
// unsent: the connection to the node could not be made.
func NotSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func unavailable(msg string, err error) *errcode.Error {
	return &errcode.Error{Status: http.StatusServiceUnavailable, Code: errcode.CodeUnavailable, Message: msg, Err: err}
}

// call runs fn against the nodes of b as BuildIndexes describes.
func call[T any](ctx context.Context, b *BuildIndexes, r repeat, fn func(context.Context, *BuildIndex) (T, error)) (T, error) {
	var zero T
	nodes := b.list()
	if len(nodes) == 0 {
		return zero, ErrNoBuildIndex
	}
	start := int(b.first.Load()) % len(nodes)
	var errs []error
	for i := range nodes {
		k := (start + i) % len(nodes)
		node := nodes[k]
		actx, cancel := context.WithTimeout(ctx, b.attempt)
		v, err := fn(actx, node)
		cancel()
		if err == nil {
			if k != start {
				b.first.Store(int32(k))
			}
			return v, nil
		}
		if cerr := ctx.Err(); cerr != nil {
			if !errors.Is(err, cerr) {
				err = fmt.Errorf("%w: %w", cerr, err)
			}
			return zero, err
		}
		var re *errcode.Error
		answered := errors.As(err, &re)
		if !passOn(err, r) {
			if !answered {
				// A write that may have been applied: not repeated elsewhere.
				return zero, unavailable("the build-index did not answer; retry",
					fmt.Errorf("build-index %s: %w", node.Addr(), err))
			}
			if k != start {
				b.first.Store(int32(k))
			}
			return zero, err
		}
		errs = append(errs, fmt.Errorf("build-index %s: %w", node.Addr(), err))
		if b.onFailure != nil {
			next := ""
			if i+1 < len(nodes) {
				next = nodes[(k+1)%len(nodes)].Addr()
			}
			b.onFailure(node.Addr(), next)
		}
	}
	msg := "the build-index did not answer; retry"
	if len(nodes) > 1 {
		msg = fmt.Sprintf("none of the %d build-index nodes answered; retry", len(nodes))
	}
	return zero, unavailable(msg, errors.Join(errs...))
}

// GetTag returns the value of repo:tag, linearizably unless stale (as BuildIndex.GetTag).
func (b *BuildIndexes) GetTag(ctx context.Context, repo, tag string, stale bool) (api.Tag, error) {
	return call(ctx, b, repeatAlways, func(ctx context.Context, n *BuildIndex) (api.Tag, error) {
		return n.GetTag(ctx, repo, tag, stale)
	})
}

// GetStoredTag returns the store's own value of repo:tag (as BuildIndex.GetStoredTag).
func (b *BuildIndexes) GetStoredTag(ctx context.Context, repo, tag string) (api.Tag, error) {
	return call(ctx, b, repeatAlways, func(ctx context.Context, n *BuildIndex) (api.Tag, error) {
		return n.GetStoredTag(ctx, repo, tag)
	})
}

// PutTag points repo:tag at d (as BuildIndex.PutTag).
func (b *BuildIndexes) PutTag(ctx context.Context, repo, tag string, d digest.Digest) (api.Tag, error) {
	return call(ctx, b, repeatAlways, func(ctx context.Context, n *BuildIndex) (api.Tag, error) {
		return n.PutTag(ctx, repo, tag, d)
	})
}

// DeleteTag removes repo:tag and returns the value it had (as BuildIndex.DeleteTag).
func (b *BuildIndexes) DeleteTag(ctx context.Context, repo, tag string) (api.Tag, error) {
	return call(ctx, b, repeatUnsent, func(ctx context.Context, n *BuildIndex) (api.Tag, error) {
		return n.DeleteTag(ctx, repo, tag)
	})
}

// ListTags returns one page of repo's tags (as BuildIndex.ListTags).
func (b *BuildIndexes) ListTags(ctx context.Context, repo, last string, n int) ([]string, string, error) {
	p, err := call(ctx, b, repeatAlways, func(ctx context.Context, nd *BuildIndex) (page, error) {
		items, next, err := nd.ListTags(ctx, repo, last, n)
		return page{items, next}, err
	})
	return p.items, p.next, err
}

// TagsOf returns one page of repo's tags that point at d (as BuildIndex.TagsOf).
func (b *BuildIndexes) TagsOf(ctx context.Context, repo string, d digest.Digest, last string, n int) ([]string, string, error) {
	type answer struct {
		page
		unsupported error
	}
	a, err := call(ctx, b, repeatAlways, func(ctx context.Context, nd *BuildIndex) (answer, error) {
		items, next, err := nd.TagsOf(ctx, repo, d, last, n)
		if errors.Is(err, ErrUnsupported) {
			// An older node answered: not a failure to pass on to the next one.
			return answer{unsupported: err}, nil
		}
		return answer{page: page{items, next}}, err
	})
	if err == nil {
		err = a.unsupported
	}
	return a.items, a.next, err
}

// ListRepositories returns one page of repository names (as BuildIndex.ListRepositories).
func (b *BuildIndexes) ListRepositories(ctx context.Context, last string, n int) ([]string, string, error) {
	p, err := call(ctx, b, repeatAlways, func(ctx context.Context, nd *BuildIndex) (page, error) {
		items, next, err := nd.ListRepositories(ctx, last, n)
		return page{items, next}, err
	})
	return p.items, p.next, err
}

// page is one page of a listing and the last entry to pass for the next one ("" at the end).
type page struct {
	items []string
	next  string
}

// CollectTags lists repo's tags after last, reading as many pages as it takes to have n (n > 0)
// or reach the end; more reports whether tags remain after the ones returned. A repository
// without tags has none (no error). It is what registry.Reader.Tags needs.
func (b *BuildIndexes) CollectTags(ctx context.Context, repo, last string, n int) (tags []string, more bool, err error) {
	return collect(last, n, func(last string, n int) (page, error) {
		items, next, err := b.ListTags(ctx, repo, last, n)
		return page{items, next}, err
	})
}

// CollectRepositories lists repository names after last as CollectTags lists tags.
func (b *BuildIndexes) CollectRepositories(ctx context.Context, last string, n int) (repos []string, more bool, err error) {
	return collect(last, n, func(last string, n int) (page, error) {
		items, next, err := b.ListRepositories(ctx, last, n)
		return page{items, next}, err
	})
}

// VisibleScanPages bounds the pages CollectVisibleRepositories reads for one answer, so that a
// caller who may see few of many repositories cannot make one request scan them all.
const VisibleScanPages = 100

// CollectVisibleRepositories lists the repository names after last for which visible reports
// true (the catalog of a caller behind auth, with auth.PullFilter), reading on until it has n
// of those or has read VisibleScanPages pages; past that it answers what it found, with more
// set when it found any (the client asks again after the last).
func (b *BuildIndexes) CollectVisibleRepositories(ctx context.Context, last string, n int, visible func(string) bool) (repos []string, more bool, err error) {
	var out []string
	for range VisibleScanPages {
		page, more, err := b.CollectRepositories(ctx, last, n-len(out))
		if err != nil {
			return nil, false, err
		}
		for _, repo := range page {
			if visible(repo) {
				out = append(out, repo)
			}
		}
		if !more || len(page) == 0 {
			return out, false, nil
		}
		if len(out) == n {
			return out, true, nil
		}
		last = page[len(page)-1]
	}
	return out, len(out) > 0, nil
}

// collect reads pages after last until it has n entries or the listing ends. A listing that
// does not exist is empty.
func collect(last string, n int, read func(last string, n int) (page, error)) ([]string, bool, error) {
	if n <= 0 {
		return nil, false, fmt.Errorf("list: page size %d is not positive", n)
	}
	var out []string
	for len(out) < n {
		p, err := read(last, n-len(out))
		if err != nil {
			if IsNotFound(err) {
				return out, false, nil
			}
			return nil, false, fmt.Errorf("list: %w", err)
		}
		out = append(out, p.items...)
		if p.next == "" {
			if len(out) > n {
				return out[:n], true, nil
			}
			return out, false, nil
		}
		if len(p.items) == 0 || p.next <= last {
			return nil, false, fmt.Errorf("list: the build-index answered a page after %q that does not advance (next %q)", last, p.next)
		}
		last = p.next
	}
	return out[:n], true, nil
}

// GetLink returns the value of link name of repo, linearizably unless stale (as
// BuildIndex.GetLink).
func (b *BuildIndexes) GetLink(ctx context.Context, repo, name string, stale bool) (api.Link, error) {
	return call(ctx, b, repeatAlways, func(ctx context.Context, n *BuildIndex) (api.Link, error) {
		return n.GetLink(ctx, repo, name, stale)
	})
}

// PutLink sets link name of repo to d (as BuildIndex.PutLink).
func (b *BuildIndexes) PutLink(ctx context.Context, repo, name string, d digest.Digest) (api.Link, error) {
	return call(ctx, b, repeatAlways, func(ctx context.Context, n *BuildIndex) (api.Link, error) {
		return n.PutLink(ctx, repo, name, d)
	})
}

// DeleteLink removes link name of repo and returns the value it had (as BuildIndex.DeleteLink).
func (b *BuildIndexes) DeleteLink(ctx context.Context, repo, name string) (api.Link, error) {
	return call(ctx, b, repeatUnsent, func(ctx context.Context, n *BuildIndex) (api.Link, error) {
		return n.DeleteLink(ctx, repo, name)
	})
}

// ListLinks returns the links of repo under prefix, linearizably unless stale (as
// BuildIndex.ListLinks).
func (b *BuildIndexes) ListLinks(ctx context.Context, repo, prefix string, stale bool) ([]api.Link, error) {
	return call(ctx, b, repeatAlways, func(ctx context.Context, n *BuildIndex) ([]api.Link, error) {
		return n.ListLinks(ctx, repo, prefix, stale)
	})
}

// Ready reports whether any node answers /readyz with 200. It asks every node at once, so a
// node that accepts connections and never answers does not hide one that is ready, and returns
// as soon as one is.
func (b *BuildIndexes) Ready(ctx context.Context) error {
	nodes := b.list()
	if len(nodes) == 0 {
		return ErrNoBuildIndex
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the others need not finish once one is ready
	errc := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() { errc <- n.Ready(ctx) }()
	}
	var errs []error
	for range nodes {
		err := <-errc
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("no build-index node is ready: %w", errors.Join(errs...))
}
