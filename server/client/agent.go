package client

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// AgentResumes is how many times Agent.Pull resumes a transfer that broke off, from the byte
// where it stopped, before giving up.
const AgentResumes = 3

// maxEvent bounds one line of an agent's event stream.
const maxEvent = 1 << 20

// DigestMismatchError says that the bytes received do not hash to the digest asked for. It
// wraps ErrDigestMismatch.
type DigestMismatchError struct {
	Want, Got digest.Digest
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("%v: expected %s, got %s", ErrDigestMismatch, e.Want, e.Got)
}

// Unwrap lets errors.Is(err, ErrDigestMismatch) see through.
func (e *DigestMismatchError) Unwrap() error { return ErrDigestMismatch }

// Agent is a client of one agent's API: blobs downloaded through the swarm, and the agent's
// view of the swarm. Its blob paths have the shape of the origins' (server/api.BlobPath).
type Agent struct {
	blobs *Origin
}

// NewAgent returns a client of the agent at addr ("host:port" or a full http(s) URL). hc nil
// means http.DefaultClient; it should have no overall timeout, since a blob streams for as
// long as its download takes.
func NewAgent(addr string, hc *http.Client) *Agent {
	return &Agent{blobs: NewOrigin(addr, hc)}
}

// Addr returns the address the client was built with.
func (c *Agent) Addr() string { return c.blobs.Addr() }

// Stat returns the size of a blob. The agent starts downloading it if it has not yet. A blob
// that the swarm does not know wraps ErrNotFound; other failures wrap *errcode.Error.
func (c *Agent) Stat(ctx context.Context, ns string, d digest.Digest) (int64, error) {
	return c.blobs.Stat(ctx, ns, d)
}

// Open starts reading a blob at offset. It returns the body, which streams while the agent
// downloads, and the blob's total size; the caller closes the body. A body that ends early
// (the agent's download failed) returns an error from Read, never a clean io.EOF. A missing
// blob wraps ErrNotFound.
func (c *Agent) Open(ctx context.Context, ns string, d digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	return c.blobs.Open(ctx, ns, d, offset)
}

// Pull writes the blob to w and checks that what was written hashes to d. When the transfer
// breaks off it resumes from the byte where it stopped (up to AgentResumes times); a failure
// to write to w is not retried. progress, when set, is called with the bytes written so far
// and the blob's size. It returns the bytes written to w. A mismatch returns a
// *DigestMismatchError (after all the bytes were written: callers writing to a file delete it).
func (c *Agent) Pull(ctx context.Context, ns string, d digest.Digest, w io.Writer, progress func(done, total int64)) (int64, error) {
	h := sha256.New()
	dst := &checkedWriter{w: w}
	pw := &progressWriter{w: io.MultiWriter(dst, h), total: -1, fn: progress}
	for attempt := 0; ; attempt++ {
		err := c.pullFrom(ctx, ns, d, pw)
		if err == nil {
			break
		}
		if dst.err != nil || ctx.Err() != nil || attempt == AgentResumes || !resumable(err) {
			return pw.n, fmt.Errorf("pull %s from agent %s: %w", d, c.Addr(), err)
		}
	}
	if got := digest.NewDigest(digest.SHA256, h); got != d {
		return pw.n, fmt.Errorf("pull %s from agent %s: %w", d, c.Addr(), &DigestMismatchError{Want: d, Got: got})
	}
	return pw.n, nil
}

// errReadBody marks an attempt whose body broke off: it is worth resuming. Error answers (404,
// 503, ...) and unreachable agents are final.
var errReadBody = errors.New("read blob")

func resumable(err error) bool { return errors.Is(err, errReadBody) }

func (c *Agent) pullFrom(ctx context.Context, ns string, d digest.Digest, pw *progressWriter) error {
	body, total, err := c.Open(ctx, ns, d, pw.n)
	if err != nil {
		return err
	}
	defer func() { _ = body.Close() }() // read side
	if pw.total >= 0 && total != pw.total {
		return fmt.Errorf("agent %s changed the size of %s from %d to %d bytes", c.Addr(), d, pw.total, total)
	}
	pw.total = total
	if pw.fn != nil {
		pw.fn(pw.n, total)
	}
	if _, err := io.Copy(pw, body); err != nil {
		return fmt.Errorf("%w: %w", errReadBody, err)
	}
	if total >= 0 && pw.n != total {
		return fmt.Errorf("%w: got %d of %d bytes", errReadBody, pw.n, total)
	}
	return nil
}

// checkedWriter remembers the first error of the writer it wraps, so that a failure to write
// (a full disk) is told apart from a failure to read (a broken transfer).
type checkedWriter struct {
	w   io.Writer
	err error
}

func (c *checkedWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// Torrents returns the agent's torrents (downloads and seeds), or only the one of d when d is
// not empty.
func (c *Agent) Torrents(ctx context.Context, d digest.Digest) ([]snapshot.TorrentStats, error) {
	return c.blobs.torrents(ctx, d, false)
}

// Events calls fn with each swarm event the agent reports (only those of d when d is not
// empty), from now until ctx ends, fn returns an error, or the agent closes the stream. It
// returns nil when ctx ends or the agent closes the stream, else fn's or the stream's error.
// The agent drops events for a client that reads too slowly; it never stalls the swarm.
func (c *Agent) Events(ctx context.Context, d digest.Digest, fn func(snapshot.Event) error) error {
	return c.EventsOf(ctx, d, nil, fn)
}

// EventsOf is Events keeping only the events of the given kinds (every kind when kinds is
// empty): the agent filters, so the events left out cost no encoding or bandwidth.
func (c *Agent) EventsOf(ctx context.Context, d digest.Digest, kinds []snapshot.EventKind, fn func(snapshot.Event) error) error {
	q := url.Values{}
	if d != "" {
		q.Set("digest", d.String())
	}
	if len(kinds) > 0 {
		ks := make([]string, len(kinds))
		for i, k := range kinds {
			ks[i] = string(k)
		}
		q.Set(api.SwarmKindParam, strings.Join(ks, ","))
	}
	path := api.SwarmEventsPath
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	resp, err := c.blobs.do(ctx, http.MethodGet, path, http.Header{"Accept": {"application/x-ndjson"}})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("get events: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return responseError("get events", resp)
	}
	defer func() { _ = resp.Body.Close() }() // read side
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEvent)
	for sc.Scan() {
		var e snapshot.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("decode event from %s: %w", c.Addr(), err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("read events from %s: %w", c.Addr(), err)
	}
	return nil
}
