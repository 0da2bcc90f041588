package tracker

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// fetchTimeout bounds one shared metainfo fetch: the origins may pull a large blob from storage
// before they can answer. It is detached from the requests waiting for it, so one impatient
// client does not cancel the fetch for the others.
const fetchTimeout = 30 * time.Minute

// metainfoCache is an LRU cache of encoded metainfo by digest, bounded in entries. It is safe
// for concurrent use. Cached slices are shared and must not be modified.
type metainfoCache struct {
	max int

	mu sync.Mutex
	ll *list.List // front: most recently used; values are *cacheEntry
	m  map[digest.Digest]*list.Element
}

type cacheEntry struct {
	d    digest.Digest
	data []byte
}

func newMetainfoCache(max int) *metainfoCache {
	return &metainfoCache{max: max, ll: list.New(), m: map[digest.Digest]*list.Element{}}
}

func (c *metainfoCache) get(d digest.Digest) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[d]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*cacheEntry).data, true
}

func (c *metainfoCache) add(d digest.Digest, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[d]; ok {
		el.Value.(*cacheEntry).data = data
		c.ll.MoveToFront(el)
		return
	}
	c.m[d] = c.ll.PushFront(&cacheEntry{d: d, data: data})
	for c.ll.Len() > c.max {
		el := c.ll.Back()
		c.ll.Remove(el)
		delete(c.m, el.Value.(*cacheEntry).d)
	}
}

// metainfo returns the encoded metainfo of d, from the cache or from the origins, and whether it
// came from the cache. Concurrent misses for the same namespace and digest share one fetch.
func (s *Server) metainfo(ctx context.Context, ns string, d digest.Digest) ([]byte, bool, error) {
	if data, ok := s.cache.get(d); ok {
		return data, true, nil
	}
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	ch := s.fetches.DoChan(ns+"\x00"+d.String(), func() (any, error) {
		// A fetch that finished between our cache miss and now has filled the cache.
		if data, ok := s.cache.get(d); ok {
			return data, nil
		}
		fctx, cancel := s.detach(ctx, fetchTimeout)
		defer cancel()
		data, err := s.fetchMetainfo(fctx, ns, d)
		if err != nil {
			return nil, err
		}
		s.cache.add(d, data)
		return data, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, false, r.Err
		}
		return r.Val.([]byte), false, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// detach returns a context for work shared between requests: it keeps ctx's values but not its
// cancellation, and ends after timeout or when the server starts shutting down.
func (s *Server) detach(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-c.Done():
		}
	}()
	return c, cancel
}

// isTransport reports whether err is a failure to exchange an HTTP request and response with
// an origin (connection refused, reset, timed out), as opposed to an answer.
func isTransport(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue)
}

// fetchMetainfo asks the origins for d's metainfo in rendezvous order, the reachable ones
// first, until one answers. An origin's 4xx (404: the blob does not exist) ends the search and
// is returned as it came; when no origin answers the error is a 503, and when some answered
// with errors or malformed documents a 502.
func (s *Server) fetchMetainfo(ctx context.Context, ns string, d digest.Digest) ([]byte, error) {
	up, down := s.origins.ranked(d)
	if len(down) > 0 {
		s.origins.wanted()
	}
	var errs []error
	answered := false
	for _, addr := range append(up, down...) {
		mi, err := client.NewOrigin(addr, s.hc).Metainfo(ctx, ns, d)
		if err == nil {
			data, err := mi.Encode()
			if err != nil {
				return nil, fmt.Errorf("encode metainfo of %s from %s: %w", d, addr, err)
			}
			return data, nil
		}
		if ctx.Err() != nil {
			return nil, &errcode.Error{Status: http.StatusServiceUnavailable, Code: errcode.CodeUnavailable,
				Message: "gave up asking the origins for the metainfo (timed out or shutting down)", Err: err}
		}
		var re *errcode.Error
		if errors.As(err, &re) {
			if re.Status >= 400 && re.Status < 500 && re.Status != http.StatusRequestTimeout && re.Status != http.StatusTooManyRequests {
				return nil, err
			}
		}
		// Any HTTP answer counts as answered, and so does a document that failed to decode.
		answered = answered || re != nil || !isTransport(err)
		s.log.Warn("get metainfo from origin", "origin", addr, "digest", d, "err", err)
		errs = append(errs, err)
	}
	if answered {
		return nil, &errcode.Error{Status: http.StatusBadGateway, Code: errcode.CodeUnavailable,
			Message: "no origin served the metainfo", Err: errors.Join(errs...)}
	}
	return nil, &errcode.Error{Status: http.StatusServiceUnavailable, Code: errcode.CodeUnavailable,
		Message: "no origin could be reached", Err: errors.Join(errs...)}
}
