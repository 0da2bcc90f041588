package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
)

// DefaultChunkSize is the size of each PATCH of a chunked upload.
const DefaultChunkSize = 32 << 20

// Origin is a client of one origin's blob API.
type Origin struct {
	addr string
	base string
	hc   *http.Client
}

// NewOrigin returns a client of the origin at addr ("host:port" or a full http(s) URL).
func NewOrigin(addr string, hc *http.Client) *Origin {
	if hc == nil {
		hc = http.DefaultClient
	}
	base := addr
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		base = "http://" + addr
	}
	return &Origin{addr: addr, base: strings.TrimRight(base, "/"), hc: hc}
}

// Addr returns the address the client was built with.
func (c *Origin) Addr() string { return c.addr }

// do makes one request without a body.
func (c *Origin) do(ctx context.Context, method, path string, hdr http.Header) (*http.Response, error) {
	return c.send(ctx, method, path, http.NoBody, 0, hdr)
}

// send makes one request with a body of length bytes (-1 when unknown).
func (c *Origin) send(ctx context.Context, method, path string, body io.Reader, length int64, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.ContentLength = length
	if length == 0 {
		req.Body = http.NoBody
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %w", method, c.addr, ErrNoAnswer, err)
	}
	return resp, nil
}

// Stat returns the size of a blob. The origin pulls it through from storage when it lacks it,
// so a nil error means the blob is available. A missing blob wraps ErrNotFound.
func (c *Origin) Stat(ctx context.Context, ns string, d digest.Digest) (int64, error) {
	return c.head(ctx, api.BlobPath(ns, d), "stat blob")
}

// StatLocal returns the size of a blob in the origin's own store, never pulling it through.
func (c *Origin) StatLocal(ctx context.Context, ns string, d digest.Digest) (int64, error) {
	return c.head(ctx, api.ReplicaPath(ns, d), "stat local blob")
}

func (c *Origin) head(ctx context.Context, path, op string) (int64, error) {
	resp, err := c.do(ctx, http.MethodHead, path, nil)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, responseError(op, resp)
	}
	drain(resp)
	return resp.ContentLength, nil
}

// Open starts reading a blob at offset. It returns the body and the blob's total size; the
// caller closes the body. A missing blob wraps ErrNotFound.
func (c *Origin) Open(ctx context.Context, ns string, d digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	return c.open(ctx, api.BlobPath(ns, d), offset)
}

// OpenLocal is Open restricted to the origin's own store (origin-to-origin repair and reads).
func (c *Origin) OpenLocal(ctx context.Context, ns string, d digest.Digest) (io.ReadCloser, int64, error) {
	return c.open(ctx, api.ReplicaPath(ns, d), 0)
}

func (c *Origin) open(ctx context.Context, path string, offset int64) (io.ReadCloser, int64, error) {
	var hdr http.Header
	if offset > 0 {
		hdr = http.Header{"Range": {fmt.Sprintf("bytes=%d-", offset)}}
	}
	resp, err := c.do(ctx, http.MethodGet, path, hdr)
	if err != nil {
		return nil, 0, fmt.Errorf("download blob: %w", err)
	}
	switch {
	case offset == 0 && resp.StatusCode == http.StatusOK:
		return resp.Body, resp.ContentLength, nil
	case offset > 0 && resp.StatusCode == http.StatusPartialContent:
		total, err := totalFromContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			_ = resp.Body.Close()
			return nil, 0, fmt.Errorf("download blob: %w", err)
		}
		return resp.Body, total, nil
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent:
		_ = resp.Body.Close()
		return nil, 0, fmt.Errorf("download blob: origin %s answered %d to a range request from %d", c.addr, resp.StatusCode, offset)
	default:
		return nil, 0, responseError("download blob", resp)
	}
}

func totalFromContentRange(s string) (int64, error) {
	_, total, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("bad Content-Range %q", s)
	}
	n, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad Content-Range %q", s)
	}
	return n, nil
}

// Metainfo returns a blob's metainfo (piece length and piece hashes).
func (c *Origin) Metainfo(ctx context.Context, ns string, d digest.Digest) (metainfo.MetaInfo, error) {
	resp, err := c.do(ctx, http.MethodGet, api.MetainfoPath(ns, d), nil)
	if err != nil {
		return metainfo.MetaInfo{}, fmt.Errorf("get metainfo: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return metainfo.MetaInfo{}, responseError("get metainfo", resp)
	}
	defer func() { _ = resp.Body.Close() }() // read side
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return metainfo.MetaInfo{}, fmt.Errorf("get metainfo: %w", err)
	}
	mi, err := metainfo.Decode(data)
	if err != nil {
		return metainfo.MetaInfo{}, fmt.Errorf("get metainfo: %w", err)
	}
	if mi.Digest != d {
		return metainfo.MetaInfo{}, fmt.Errorf("get metainfo: origin %s sent metainfo for %s, asked for %s", c.addr, mi.Digest, d)
	}
	return mi, nil
}

// Upload sends a blob in one request (POST with ?digest=). size may be -1 when unknown.
func (c *Origin) Upload(ctx context.Context, ns string, d digest.Digest, r io.Reader, size int64) error {
	path := api.UploadsPath(ns) + "?digest=" + url.QueryEscape(d.String())
	return c.put(ctx, http.MethodPost, path, r, size, "upload blob")
}

// Replicate stores a blob on the origin as a replica: no fan-out to other owners. Origins use it
// between themselves.
func (c *Origin) Replicate(ctx context.Context, ns string, d digest.Digest, r io.Reader, size int64) error {
	return c.put(ctx, http.MethodPut, api.ReplicaPath(ns, d), r, size, "replicate blob")
}

func (c *Origin) put(ctx context.Context, method, path string, r io.Reader, size int64, op string) error {
	resp, err := c.send(ctx, method, path, r, size, http.Header{"Content-Type": {"application/octet-stream"}})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return responseError(op, resp)
	}
	drain(resp)
	return nil
}

// Ring returns the origin's view of the hash ring; with a non-empty digest, its owners too.
func (c *Origin) Ring(ctx context.Context, d digest.Digest) (api.RingStatus, error) {
	path := api.RingPath
	if d != "" {
		path += "?digest=" + url.QueryEscape(d.String())
	}
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return api.RingStatus{}, fmt.Errorf("get ring: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return api.RingStatus{}, responseError("get ring", resp)
	}
	defer func() { _ = resp.Body.Close() }() // read side
	var st api.RingStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st); err != nil {
		return api.RingStatus{}, fmt.Errorf("decode ring status from %s: %w", c.addr, err)
	}
	return st, nil
}

// Ready reports whether the origin answers /readyz with 200.
func (c *Origin) Ready(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodGet, "/readyz", nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		return fmt.Errorf("origin %s not ready: %s", c.addr, bytes.TrimSpace(body))
	}
	drain(resp)
	return nil
}

// IsNotFound reports whether err says the blob or upload does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
