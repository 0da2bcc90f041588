package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/krakenctl/krakenctl/server/api"
)

// maxCacheDocument bounds a cache status or eviction report: 10,000 listed blobs (the most
// ?blobs= takes) at a few hundred bytes each, and an eviction of a large store.
const maxCacheDocument = 64 << 20

// CacheStatus returns what the origin's store holds and what its cleanup policy would remove
// now, with the blobs least recently used blobs (0: none listed).
func (c *Origin) CacheStatus(ctx context.Context, blobs int) (api.CacheStatus, error) {
	path := api.CachePath
	if blobs > 0 {
		path += "?" + url.Values{api.CacheBlobsParam: {strconv.Itoa(blobs)}}.Encode()
	}
	var st api.CacheStatus
	err := c.getJSON(ctx, path, "get cache status", maxCacheDocument, &st)
	return st, err
}

// CacheEvict asks the origin to evict blobs (or run its policy now), or with req.DryRun what it
// would evict, and returns its report.
func (c *Origin) CacheEvict(ctx context.Context, req api.CacheEvictRequest) (api.CacheEvictReport, error) {
	const op = "evict from the cache"
	body, err := json.Marshal(req)
	if err != nil {
		return api.CacheEvictReport{}, fmt.Errorf("%s: %w", op, err)
	}
	resp, err := c.send(ctx, http.MethodPost, api.CacheEvictPath, bytes.NewReader(body), int64(len(body)),
		http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		return api.CacheEvictReport{}, fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		return api.CacheEvictReport{}, responseError(op, resp)
	}
	defer func() { _ = resp.Body.Close() }() // read side
	var rep api.CacheEvictReport
	if err := decodeLimited(resp.Body, maxCacheDocument, &rep); err != nil {
		return api.CacheEvictReport{}, fmt.Errorf("%s: decode the answer of %s: %w", op, c.addr, err)
	}
	return rep, nil
}

// CacheStatus returns what the agent's store holds and what its cleanup policy would remove
// now, with the blobs least recently used blobs (0: none listed).
func (c *Agent) CacheStatus(ctx context.Context, blobs int) (api.CacheStatus, error) {
	return c.blobs.CacheStatus(ctx, blobs)
}

// CacheEvict asks the agent to evict blobs (or run its policy now), or with req.DryRun what it
// would evict, and returns its report.
func (c *Agent) CacheEvict(ctx context.Context, req api.CacheEvictRequest) (api.CacheEvictReport, error) {
	return c.blobs.CacheEvict(ctx, req)
}

// decodeLimited decodes one JSON document of at most limit bytes from r into v.
func decodeLimited(r io.Reader, limit int64, v any) error {
	lr := &io.LimitedReader{R: r, N: limit + 1}
	if err := json.NewDecoder(lr).Decode(v); err != nil {
		if lr.N == 0 {
			return fmt.Errorf("%w: larger than %d bytes", ErrMalformed, limit)
		}
		return err
	}
	return nil
}
