package client

import (
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

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/castore"
)

// Upload sessions. An origin runs one request at a time on a session and answers 409 to the
// others; a chunk whose sender stopped (it went away, or sent less than it declared) keeps its
// session busy until the origin notices and rolls the chunk back. So a session request that
// meets 409 before sending any byte of its body is sent again after a pause, for a short
// while (busyRetries times, backing off from busyRetryInitial to busyRetryMax).
//
// Errors of the session calls (UploadOffset, AppendUpload, CommitUpload, CancelUpload) map the
// origin's answer back to the content store's sentinels, which are also the registry's
// (registry.ErrUploadUnknown is castore.ErrUploadUnknown, and so on), so the proxy passes them
// to the registry handler untranslated: 404 wraps castore.ErrUploadUnknown (and ErrNotFound),
// 416 castore.ErrBadOffset, DIGEST_INVALID castore.ErrDigestMismatch; any other answer wraps
// the origin's *errcode.Error (413 SIZE_INVALID, 409 when the session stayed busy, 5xx, ...).
// A request that got no answer wraps ErrNoAnswer.
const (
	busyRetryInitial = 20 * time.Millisecond
	busyRetryMax     = 500 * time.Millisecond
	busyRetries      = 12
)

// maxUploadID bounds an upload session id.
const maxUploadID = 128

// ValidUploadID reports whether id has the form of an origin's upload session id, as
// StartUpload guarantees: 1 to 128 characters of [A-Za-z0-9_-], so it goes in a path unescaped.
func ValidUploadID(id string) bool {
	if id == "" || len(id) > maxUploadID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !uploadIDByte(id[i]) {
			return false
		}
	}
	return true
}

// uploadIDByte reports whether c is in [A-Za-z0-9_-].
func uploadIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// StartUpload opens an upload session in namespace ns and returns its id (ValidUploadID holds).
func (c *Origin) StartUpload(ctx context.Context, ns string) (string, error) {
	resp, err := c.do(ctx, http.MethodPost, api.UploadsPath(ns), nil)
	if err != nil {
		return "", fmt.Errorf("start upload: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		return "", responseError("start upload", resp)
	}
	drain(resp)
	id := resp.Header.Get(api.HeaderUploadUUID)
	if !ValidUploadID(id) {
		return "", fmt.Errorf("start upload: origin %s sent upload id %q", c.addr, id)
	}
	return id, nil
}

// UploadOffset returns how many bytes session id of namespace ns holds.
func (c *Origin) UploadOffset(ctx context.Context, ns, id string) (int64, error) {
	resp, err := c.do(ctx, http.MethodGet, api.UploadPath(ns, id), nil)
	if err != nil {
		return 0, fmt.Errorf("get upload status: %w", err)
	}
	if resp.StatusCode != http.StatusNoContent {
		return 0, sessionError("get upload status", resp)
	}
	drain(resp)
	return uploadOffsetOf(resp)
}

// AppendUpload sends length bytes of r (to EOF when length < 0) as a chunk of session id
// starting at offset, and returns the session's new size. The origin checks that offset is the
// session's end (castore.ErrBadOffset, alias registry.ErrUploadOffset, otherwise) and rolls back a chunk that fails or is
// shorter than length, so a failed call leaves the session as it was.
//
// A chunk with a body asks the origin to approve it before the body is sent (Expect:
// 100-continue, which needs the http.Client's Transport.ExpectContinueTimeout), so a chunk the
// origin refuses at once costs no bytes, and one refused because the session is busy is sent
// again after a pause. A chunk of unknown length carries its offset in Upload-Offset instead of
// Content-Range. r is not closed.
func (c *Origin) AppendUpload(ctx context.Context, ns, id string, offset int64, r io.Reader, length int64) (int64, error) {
	op := fmt.Sprintf("upload chunk at %d", offset)
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	if length > 0 {
		hdr.Set(api.HeaderContentRange, fmt.Sprintf("%d-%d", offset, offset+length-1))
	} else {
		hdr.Set(api.HeaderUploadOffset, strconv.FormatInt(offset, 10))
	}
	if length != 0 {
		hdr.Set("Expect", "100-continue")
	}
	var body *countingReader
	if length != 0 {
		body = &countingReader{r: r}
	}
	resp, err := c.sendWhileBusy(ctx, http.MethodPatch, api.UploadPath(ns, id), body, length, hdr)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode != http.StatusAccepted {
		return 0, sessionError(op, resp)
	}
	drain(resp)
	return uploadOffsetOf(resp)
}

// countingReader counts the bytes read through it. It hides r's other methods (Close, WriteTo)
// from the transport.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// CommitUpload finishes session id as d (sha256 or sha512; the origin checks the content) and
// returns the SHA-256 digest the blob is stored under: d itself for a sha256 d, the content's
// SHA-256 for a sha512 one (the origin answers it in Docker-Content-Digest).
func (c *Origin) CommitUpload(ctx context.Context, ns, id string, d digest.Digest) (digest.Digest, error) {
	path := api.UploadPath(ns, id) + "?digest=" + url.QueryEscape(d.String())
	resp, err := c.sendWhileBusy(ctx, http.MethodPut, path, nil, 0, nil)
	if err != nil {
		return "", fmt.Errorf("commit upload: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		return "", sessionError("commit upload", resp)
	}
	drain(resp)
	s := digest.Digest(resp.Header.Get(api.HeaderContentDigest))
	if !strings.HasPrefix(s.String(), string(digest.SHA256)+":") || s.Validate() != nil {
		return "", fmt.Errorf("commit upload: origin %s answered with %s %q, want a sha256 digest", c.addr, api.HeaderContentDigest, s)
	}
	if d.Algorithm() == digest.SHA256 && s != d {
		return "", fmt.Errorf("commit upload: origin %s stored %s as %s", c.addr, d, s)
	}
	return s, nil
}

// CancelUpload drops session id and what it holds.
func (c *Origin) CancelUpload(ctx context.Context, ns, id string) error {
	resp, err := c.sendWhileBusy(ctx, http.MethodDelete, api.UploadPath(ns, id), nil, 0, nil)
	if err != nil {
		return fmt.Errorf("cancel upload: %w", err)
	}
	if resp.StatusCode != http.StatusNoContent {
		return sessionError("cancel upload", resp)
	}
	drain(resp)
	return nil
}

// Mount adds blob d (stored under namespace from, or "" to look under ns itself) to namespace
// ns without sending its bytes, so it is written back under ns too. ok is false, with no error,
// when the origin answers 404: it has already asked the other origins and the storage, so no
// one has the blob.
func (c *Origin) Mount(ctx context.Context, ns, from string, d digest.Digest) (ok bool, err error) {
	q := url.Values{"mount": {d.String()}}
	if from != "" {
		q.Set("from", from)
	}
	resp, err := c.do(ctx, http.MethodPost, api.UploadsPath(ns)+"?"+q.Encode(), nil)
	if err != nil {
		return false, fmt.Errorf("mount blob: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		drain(resp)
		return true, nil
	case http.StatusNotFound:
		drain(resp)
		return false, nil
	}
	return false, responseError("mount blob", resp)
}

// sendWhileBusy sends a session request with length bytes of body (nil for none), sending it
// again after a pause while the origin answers 409 (the session is busy) before any byte of
// body was read. It returns the last answer; the caller checks its status.
func (c *Origin) sendWhileBusy(ctx context.Context, method, path string, body *countingReader, length int64, hdr http.Header) (*http.Response, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = body
	}
	delay := busyRetryInitial
	for i := 0; ; i++ {
		resp, err := c.send(ctx, method, path, rd, length, hdr)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusConflict || i == busyRetries || body != nil && body.n > 0 {
			return resp, nil
		}
		drain(resp)
		if err := sleep(ctx, delay); err != nil {
			return nil, err
		}
		delay = min(2*delay, busyRetryMax)
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

// sessionError maps an origin's non-success answer about an upload session as the session
// calls promise. It consumes and closes the body.
func sessionError(op string, resp *http.Response) error {
	err := responseError(op, resp)
	var re *errcode.Error
	errors.As(err, &re)
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s: %w: %w", op, ErrNotFound, castore.ErrUploadUnknown)
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%s: %w: %s", op, castore.ErrBadOffset, re.Message)
	case re.Code == errcode.CodeDigestInvalid:
		return fmt.Errorf("%s: %w", op, castore.ErrDigestMismatch)
	}
	return err
}

// uploadOffsetOf reads how many bytes an upload session holds: the exact Upload-Offset header
// when the server sends it, else the spec's Range "0-<last>".
func uploadOffsetOf(resp *http.Response) (int64, error) {
	if v := resp.Header.Get(api.HeaderUploadOffset); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad %s header %q", api.HeaderUploadOffset, v)
		}
		return n, nil
	}
	return parseRangeEnd(resp.Header.Get(api.HeaderRange))
}

// parseRangeEnd turns the upload Range header "0-<last>" into the next offset (last+1).
func parseRangeEnd(s string) (int64, error) {
	_, end, ok := strings.Cut(s, "-")
	if !ok {
		return 0, fmt.Errorf("bad upload Range header %q", s)
	}
	n, err := strconv.ParseInt(end, 10, 64)
	if err != nil || n < -1 {
		return 0, fmt.Errorf("bad upload Range header %q", s)
	}
	return n + 1, nil
}

// UploadOptions tune UploadChunked.
type UploadOptions struct {
	// ChunkSize is the size of each PATCH; DefaultChunkSize when zero.
	ChunkSize int64
	// Progress, when set, is called with the number of bytes the origin has accepted so far.
	Progress func(done int64)
	// Retries is how many times a failed chunk is resumed from the origin's upload state.
	Retries int
}

// UploadChunked uploads size bytes of src as a chunked upload session: StartUpload,
// AppendUpload chunks, then CommitUpload with the digest. A chunk that fails is resumed from
// the offset the origin reports, so a flaky link costs a chunk, not the blob. A session that
// cannot be finished is cancelled.
func (c *Origin) UploadChunked(ctx context.Context, ns string, d digest.Digest, src io.ReaderAt, size int64, opts UploadOptions) error {
	chunk := opts.ChunkSize
	if chunk <= 0 {
		chunk = DefaultChunkSize
	}
	id, err := c.StartUpload(ctx, ns)
	if err != nil {
		return err
	}
	var offset int64
	retries := opts.Retries
	for offset < size {
		n := min(chunk, size-offset)
		next, err := c.AppendUpload(ctx, ns, id, offset, io.NewSectionReader(src, offset, n), n)
		if err != nil {
			if ctx.Err() != nil || retries <= 0 {
				_ = c.CancelUpload(context.WithoutCancel(ctx), ns, id)
				return err
			}
			retries--
			if next, err = c.UploadOffset(ctx, ns, id); err != nil {
				_ = c.CancelUpload(context.WithoutCancel(ctx), ns, id)
				return err
			}
		}
		offset = next
		if opts.Progress != nil {
			opts.Progress(offset)
		}
	}
	_, err = c.CommitUpload(ctx, ns, id, d)
	return err
}
