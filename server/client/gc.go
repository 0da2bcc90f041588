package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
)

// gcMaxAnswer bounds a GC answer: a page of 10,000 blobs with their namespaces fits easily.
const gcMaxAnswer = 64 << 20

// gcCall makes one GC API call and decodes its JSON answer into out (nil: none expected).
func (c *Origin) gcCall(ctx context.Context, method, path string, want int, out any, op string) error {
	resp, err := c.do(ctx, method, path, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode != want {
		return responseError(op, resp)
	}
	if out == nil {
		drain(resp)
		return nil
	}
	defer func() { _ = resp.Body.Close() }() // read side
	if err := json.NewDecoder(io.LimitReader(resp.Body, gcMaxAnswer)).Decode(out); err != nil {
		return fmt.Errorf("%s: decode the answer of %s: %w", op, c.addr, err)
	}
	return nil
}

// GCBlobs returns one page of up to n of the origin's committed blobs after the digest after
// ("" for the first). n = 0 returns no blobs, only the origin's clock.
func (c *Origin) GCBlobs(ctx context.Context, after string, n int) (api.GCBlobPage, error) {
	q := url.Values{"n": {strconv.Itoa(n)}}
	if after != "" {
		q.Set(api.QueryAfter, after)
	}
	var p api.GCBlobPage
	err := c.gcCall(ctx, http.MethodGet, api.GCBlobsPath+"?"+q.Encode(), http.StatusOK, &p, "list blobs for gc")
	return p, err
}

// GCTouch makes blob d count as used now on the origin, which pulls it through first when it
// lacks it. A blob nobody has wraps ErrNotFound.
func (c *Origin) GCTouch(ctx context.Context, ns string, d digest.Digest) error {
	q := url.Values{api.QueryNS: {ns}}
	return c.gcCall(ctx, http.MethodPost, api.GCTouchPath(d)+"?"+q.Encode(), http.StatusNoContent, nil, "touch blob")
}

func gcQuery(cutoff time.Time, dryRun bool) string {
	q := url.Values{api.QueryCutoff: {cutoff.UTC().Format(time.RFC3339Nano)}}
	if dryRun {
		q.Set(api.QueryDryRun, "true")
	}
	return q.Encode()
}

// GCDelete deletes the origin's local copy of d if nothing used it at or after cutoff (with
// dryRun, says whether it would).
func (c *Origin) GCDelete(ctx context.Context, d digest.Digest, cutoff time.Time, dryRun bool) (api.GCDeleteResult, error) {
	var r api.GCDeleteResult
	err := c.gcCall(ctx, http.MethodDelete, api.GCBlobPath(d)+"?"+gcQuery(cutoff, dryRun), http.StatusOK, &r, "delete blob")
	return r, err
}

// GCBackendList lists the names of namespace ns's backend objects that start with prefix.
func (c *Origin) GCBackendList(ctx context.Context, ns, prefix string) ([]string, error) {
	q := url.Values{api.QueryPrefix: {prefix}}
	var l api.GCBackendList
	err := c.gcCall(ctx, http.MethodGet, api.GCBackendNSPath(ns)+"?"+q.Encode(), http.StatusOK, &l, "list backend objects")
	return l.Names, err
}

// GCBackendDelete deletes namespace ns's backend object of d through the origin, unless the
// origin holds a local copy, a ring member holds or touched d since its own cutoff (members:
// address to cutoff; a member missing from it keeps the object), or the object changed at or
// after cutoff.
func (c *Origin) GCBackendDelete(ctx context.Context, ns string, d digest.Digest, cutoff time.Time, members map[string]time.Time, dryRun bool) (api.GCDeleteResult, error) {
	q := gcQuery(cutoff, dryRun)
	for _, a := range slices.Sorted(maps.Keys(members)) {
		q += "&" + url.Values{api.QueryMember: {a + "@" + members[a].UTC().Format(time.RFC3339Nano)}}.Encode()
	}
	var r api.GCDeleteResult
	err := c.gcCall(ctx, http.MethodDelete, api.GCBackendBlobPath(ns, d)+"?"+q, http.StatusOK, &r, "delete backend object")
	return r, err
}

// GCUse asks a ring member whether it holds d (with dryRun: a copy its sweep at cutoff would
// keep) or touched it at or after cutoff.
func (c *Origin) GCUse(ctx context.Context, d digest.Digest, cutoff time.Time, dryRun bool) (api.GCUse, error) {
	var u api.GCUse
	err := c.gcCall(ctx, http.MethodGet, api.GCUsePath(d)+"?"+gcQuery(cutoff, dryRun), http.StatusOK, &u, "ask about a blob for gc")
	return u, err
}

// GCWriteback asks a ring member to queue a write-back of its copy of d to ns's storage. A
// member without a copy wraps ErrNotFound.
func (c *Origin) GCWriteback(ctx context.Context, ns string, d digest.Digest) error {
	q := url.Values{api.QueryNS: {ns}}
	return c.gcCall(ctx, http.MethodPost, api.GCWritebackPath(d)+"?"+q.Encode(), http.StatusAccepted, nil, "write back a blob for gc")
}
