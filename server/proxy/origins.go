package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
)

// maxErrorBody bounds how much of an origin's error answer is read.
const maxErrorBody = 64 << 10

// origins is the proxy's side of the origin cluster: the ring (for ranking and health) and the
// HTTP calls of the origins' blob and upload API. It is safe for concurrent use.
type origins struct {
	ring      *ring.Ring
	hc        *http.Client
	failovers func()
}

// candidates returns every origin ordered for key: healthy members in rank order, then the
// others (trying one that may be down beats failing).
func (o *origins) candidates(key string) []string {
	up := map[string]bool{}
	for _, m := range o.ring.Members() {
		up[m.Addr] = m.Healthy
	}
	var healthy, sick []string
	for _, m := range o.ring.Rank(key) {
		if up[m] {
			healthy = append(healthy, m)
		} else {
			sick = append(sick, m)
		}
	}
	return append(healthy, sick...)
}

func (o *origins) client(addr string) *client.Origin { return client.NewOrigin(addr, o.hc) }

// each calls fn with the candidates for key in turn until one succeeds or fails in a way
// another origin would repeat (a client fault). notFound reports, when every origin that
// answered said 404, that the content is missing rather than the origins unavailable.
func (o *origins) each(ctx context.Context, key string, fn func(addr string) error) (notFound bool, err error) {
	var errs []error
	answered404 := 0
	cands := o.candidates(key)
	for i, a := range cands {
		if i > 0 {
			o.failovers()
		}
		err := fn(a)
		if err == nil {
			return false, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if client.IsNotFound(err) {
			answered404++
		} else if clientFault(err) {
			return false, err
		}
		errs = append(errs, fmt.Errorf("%s: %w", a, err))
	}
	if answered404 == len(cands) {
		return true, errors.Join(errs...)
	}
	return false, unavailable("no origin could answer", errors.Join(errs...))
}

// clientFault reports whether err is an origin's 4xx answer other than 404, 408, 409 and 429:
// the request is wrong, not the origin, so another origin would answer the same.
func clientFault(err error) bool {
	var re *registry.Error
	if !errors.As(err, &re) {
		return false
	}
	switch s := re.Status; {
	case s == http.StatusNotFound, s == http.StatusRequestTimeout, s == http.StatusConflict, s == http.StatusTooManyRequests:
		return false
	default:
		return s >= 400 && s < 500
	}
}

func unavailable(msg string, err error) *registry.Error {
	return &registry.Error{Status: http.StatusServiceUnavailable, Code: registry.CodeUnavailable, Message: msg + "; retry", Err: err}
}

// stat returns the size of stored blob s (a sha256 digest) in namespace ns.
func (o *origins) stat(ctx context.Context, ns string, s digest.Digest) (int64, error) {
	var size int64
	notFound, err := o.each(ctx, s.String(), func(a string) (err error) {
		size, err = o.client(a).Stat(ctx, ns, s)
		return err
	})
	if notFound {
		return 0, fmt.Errorf("stat %s: %w", s, registry.ErrBlobUnknown)
	}
	return size, err
}

// open starts reading stored blob s at off from the first origin that serves it.
func (o *origins) open(ctx context.Context, ns string, s digest.Digest, off int64) (io.ReadCloser, error) {
	var body io.ReadCloser
	notFound, err := o.each(ctx, s.String(), func(a string) (err error) {
		body, _, err = o.client(a).Open(ctx, ns, s, off)
		return err
	})
	if notFound {
		return nil, fmt.Errorf("open %s: %w", s, registry.ErrBlobUnknown)
	}
	return body, err
}

// readSmall reads stored blob s whole, when it is at most limit bytes, checking its SHA-256. An
// origin that sends corrupt bytes is skipped.
func (o *origins) readSmall(ctx context.Context, ns string, s digest.Digest, limit int64) ([]byte, error) {
	var data []byte
	notFound, err := o.each(ctx, s.String(), func(a string) error {
		body, size, err := o.client(a).Open(ctx, ns, s, 0)
		if err != nil {
			return err
		}
		defer body.Close()
		if size > limit {
			return registry.Errorf(http.StatusBadRequest, registry.CodeManifestInvalid, "%s is %d bytes, over the limit of %d", s, size, limit)
		}
		b, err := io.ReadAll(io.LimitReader(body, limit+1))
		if err != nil {
			return fmt.Errorf("read %s: %w", s, err)
		}
		if int64(len(b)) > limit {
			return registry.Errorf(http.StatusBadRequest, registry.CodeManifestInvalid, "%s is over the limit of %d bytes", s, limit)
		}
		if got := digest.FromBytes(b); got != s {
			return fmt.Errorf("read %s: origin %s sent bytes with digest %s", s, a, got)
		}
		data = b
		return nil
	})
	if notFound {
		return nil, fmt.Errorf("read %s: %w", s, registry.ErrManifestUnknown)
	}
	return data, err
}

// upload stores data (whose SHA-256 is s) in namespace ns.
func (o *origins) upload(ctx context.Context, ns string, s digest.Digest, data []byte) error {
	_, err := o.each(ctx, s.String(), func(a string) error {
		return o.client(a).Upload(ctx, ns, s, bytes.NewReader(data), int64(len(data)))
	})
	return err
}

// mount adds stored blob s to namespace ns (from names the namespace it was stored under, ""
// for ns itself) on the origins, so it is written back under ns too. ok is false when no origin
// and no storage backend has it: the first origin that answers has already asked the others and
// the storage, so its 404 is final.
func (o *origins) mount(ctx context.Context, ns, from string, s digest.Digest) (bool, error) {
	q := url.Values{"mount": {s.String()}}
	if from != "" {
		q.Set("from", from)
	}
	path := api.UploadsPath(ns) + "?" + q.Encode()
	missing := false
	_, err := o.each(ctx, s.String(), func(a string) error {
		resp, err := o.send(ctx, http.MethodPost, a, path, http.NoBody, 0, nil)
		if err != nil {
			return err
		}
		defer drain(resp)
		switch resp.StatusCode {
		case http.StatusCreated:
			return nil
		case http.StatusNotFound:
			missing = true
			return nil
		}
		return responseError("mount blob", resp)
	})
	if err != nil {
		return false, err
	}
	return !missing, nil
}

// send makes one request to the origin at addr. length is the body's size, -1 when unknown.
func (o *origins) send(ctx context.Context, method, addr, path string, body io.Reader, length int64, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
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
	resp, err := o.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, addr, err)
	}
	return resp, nil
}

// Upload session relay. The origin's session is addressed by the origin's address and its own
// id; the namespace in the path is the repository's.

// startUpload opens a session on the origin at addr and returns the origin's session id.
func (o *origins) startUpload(ctx context.Context, addr, ns string) (string, error) {
	resp, err := o.send(ctx, http.MethodPost, addr, api.UploadsPath(ns), http.NoBody, 0, nil)
	if err != nil {
		return "", err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusAccepted {
		return "", responseError("start upload", resp)
	}
	id := resp.Header.Get(api.HeaderUploadUUID)
	if !validOriginSession(id) {
		return "", fmt.Errorf("start upload: origin %s sent upload id %q", addr, id)
	}
	return id, nil
}

// uploadOffset returns how many bytes the session holds.
func (o *origins) uploadOffset(ctx context.Context, addr, ns, id string) (int64, error) {
	resp, err := o.send(ctx, http.MethodGet, addr, api.UploadPath(ns, id), nil, 0, nil)
	if err != nil {
		return 0, sessionUnreachable(err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusNoContent {
		return 0, sessionError("get upload status", resp)
	}
	return uploadOffsetOf(resp)
}

// appendUpload sends length bytes of r (to EOF when length < 0) as a chunk starting at offset.
// The request asks the origin to approve it before the body is sent (Expect: 100-continue), so
// a chunk the origin refuses at once (wrong offset, busy session) costs no bytes, and one
// refused because the session is busy is sent again after a pause, as sendIdle does.
func (o *origins) appendUpload(ctx context.Context, addr, ns, id string, offset int64, r *chunkReader, length int64) (int64, error) {
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	if length > 0 {
		hdr.Set(api.HeaderContentRange, fmt.Sprintf("%d-%d", offset, offset+length-1))
		hdr.Set("Expect", "100-continue")
	} else {
		hdr.Set(api.HeaderUploadOffset, strconv.FormatInt(offset, 10))
	}
	if length < 0 {
		hdr.Set("Expect", "100-continue")
	}
	delay := busyRetryInitial
	for i := 0; ; i++ {
		var body io.Reader = http.NoBody
		if length != 0 {
			body = io.NopCloser(r)
		}
		resp, err := o.send(ctx, http.MethodPatch, addr, api.UploadPath(ns, id), body, length, hdr)
		if err != nil {
			return 0, sessionUnreachable(err)
		}
		if resp.StatusCode == http.StatusConflict && r.n == 0 && i < busyRetries {
			drain(resp)
			if err := sleep(ctx, delay); err != nil {
				return 0, err
			}
			delay = min(2*delay, busyRetryMax)
			continue
		}
		defer drain(resp)
		if resp.StatusCode != http.StatusAccepted {
			return 0, sessionError("upload chunk", resp)
		}
		return uploadOffsetOf(resp)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// commitUpload finishes the session as d and returns the SHA-256 digest the blob is stored
// under.
func (o *origins) commitUpload(ctx context.Context, addr, ns, id string, d digest.Digest) (digest.Digest, error) {
	path := api.UploadPath(ns, id) + "?digest=" + url.QueryEscape(d.String())
	resp, err := o.sendIdle(ctx, http.MethodPut, addr, path)
	if err != nil {
		return "", err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return "", sessionError("commit upload", resp)
	}
	s := digest.Digest(resp.Header.Get(api.HeaderContentDigest))
	if !strings.HasPrefix(s.String(), string(digest.SHA256)+":") || s.Validate() != nil {
		return "", fmt.Errorf("commit upload: origin %s answered with %s %q, want a sha256 digest", addr, api.HeaderContentDigest, s)
	}
	if d.Algorithm() == digest.SHA256 && s != d {
		return "", fmt.Errorf("commit upload: origin %s stored %s as %s", addr, d, s)
	}
	return s, nil
}

// cancelUpload drops the session.
func (o *origins) cancelUpload(ctx context.Context, addr, ns, id string) error {
	resp, err := o.sendIdle(ctx, http.MethodDelete, addr, api.UploadPath(ns, id))
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusNoContent {
		return sessionError("cancel upload", resp)
	}
	return nil
}

// Busy sessions: an origin runs one request at a time on a session and answers 409 to the
// others. A chunk the proxy stopped relaying (its client went away or sent less than it
// declared) keeps its session busy on the origin until the origin notices and rolls it back,
// so a request that meets 409 before sending any byte of its body is retried for a short while.
const (
	busyRetryInitial = 20 * time.Millisecond
	busyRetryMax     = 500 * time.Millisecond
	busyRetries      = 12
)

// sendIdle sends a body-less session request, retrying while the session is busy. It returns
// the last answer (the caller checks its status), or a sessionUnreachable error.
func (o *origins) sendIdle(ctx context.Context, method, addr, path string) (*http.Response, error) {
	delay := busyRetryInitial
	for i := 0; ; i++ {
		resp, err := o.send(ctx, method, addr, path, http.NoBody, 0, nil)
		if err != nil {
			return nil, sessionUnreachable(err)
		}
		if resp.StatusCode != http.StatusConflict || i == busyRetries {
			return resp, nil
		}
		drain(resp)
		if err := sleep(ctx, delay); err != nil {
			return nil, err
		}
		delay = min(2*delay, busyRetryMax)
	}
}

// responseError turns an origin's non-success answer into an error wrapping *registry.Error
// (and client.ErrNotFound for a 404). It consumes the body.
func responseError(op string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	re := registry.DecodeError(resp.StatusCode, body)
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s: %w: %w", op, client.ErrNotFound, re)
	}
	return fmt.Errorf("%s: %w", op, re)
}

// sessionError maps an origin's answer about an upload session to the registry's errors: 404
// is an unknown session, 416 a chunk at the wrong offset, 400 DIGEST_INVALID on commit content
// that does not match; other client faults keep their status and code (413 SIZE_INVALID, 400
// BLOB_UPLOAD_INVALID, 409 for a session busy with another request); server faults become 503.
func sessionError(op string, resp *http.Response) error {
	err := responseError(op, resp)
	var re *registry.Error
	errors.As(err, &re)
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s: %w", op, registry.ErrUploadUnknown)
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%s: %w: %s", op, registry.ErrUploadOffset, re.Message)
	case re.Code == registry.CodeDigestInvalid:
		return fmt.Errorf("%s: %w", op, registry.ErrDigestMismatch)
	case resp.StatusCode == http.StatusInsufficientStorage:
		return &registry.Error{Status: re.Status, Code: re.Code, Message: re.Message, Err: err}
	case resp.StatusCode >= 500:
		return unavailable("the origin holding the upload failed", err)
	default:
		return &registry.Error{Status: re.Status, Code: re.Code, Message: re.Message, Err: err}
	}
}

// sessionUnreachable is the error for a session whose origin cannot be reached: the session is
// not lost, only unavailable until the origin is back.
func sessionUnreachable(err error) error {
	return unavailable("the origin holding the upload cannot be reached", fmt.Errorf("%w: %w", errUnreachable, err))
}

// errUnreachable marks a request to an origin that got no answer.
var errUnreachable = errors.New("no answer from the origin")

// uploadOffsetOf reads the exact size an origin reports for a session.
func uploadOffsetOf(resp *http.Response) (int64, error) {
	v := resp.Header.Get(api.HeaderUploadOffset)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("origin sent a bad %s header %q", api.HeaderUploadOffset, v)
	}
	return n, nil
}

// drain reads what is left of a body so the connection can be reused, then closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}
