package announce

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
)

// Client defaults.
const (
	// DefaultBackoff is how long a tracker that failed is asked only after the others.
	DefaultBackoff = 10 * time.Second
	// DefaultAnnounceTimeout bounds one announce attempt against one tracker.
	DefaultAnnounceTimeout = 5 * time.Second
	// DefaultMetainfoTimeout bounds one metainfo attempt against one tracker. It is long: on a
	// miss the tracker waits for an origin, which may first pull the blob from storage.
	DefaultMetainfoTimeout = 5 * time.Minute
)

// maxResponse bounds an announce response; maxErrorBody bounds what is read of an error.
const (
	maxResponse  = 4 << 20
	maxErrorBody = 64 << 10
)

// Client talks to a set of trackers that share the digest space. For each digest it asks the
// trackers in rendezvous order (see the package doc) and fails over to the next one on
// connection errors, timeouts, 5xx, 408 and 429 answers and malformed documents. A tracker that
// failed is marked down for the backoff: until then it is asked only after every tracker that
// is not down. A Client is safe for concurrent use; it owns nothing but its configuration and
// that state, and does not close the *http.Client it is given.
type Client struct {
	set       atomic.Pointer[trackerSet] // replaced whole by SetTrackers
	hc        *http.Client
	backoff   time.Duration
	announceT time.Duration
	metaT     time.Duration
	now       func() time.Time
	failover  func(d digest.Digest, tracker string, err error)

	mu   sync.Mutex
	down map[string]time.Time // ring key -> end of its backoff
}

// endpoint is one tracker.
type endpoint struct {
	key  string // host:port, the member name in the rendezvous ring
	base string // URL prefix of its API, without a trailing slash
}

// Option tunes a Client.
type Option func(*Client)

// WithBackoff sets how long a tracker that failed is asked only after the others
// (DefaultBackoff when not set).
func WithBackoff(d time.Duration) Option { return func(c *Client) { c.backoff = d } }

// WithAnnounceTimeout bounds one announce attempt against one tracker; the next tracker is
// tried after it (DefaultAnnounceTimeout when not set).
func WithAnnounceTimeout(d time.Duration) Option { return func(c *Client) { c.announceT = d } }

// WithMetainfoTimeout bounds one metainfo attempt against one tracker; the next tracker is tried
// after it (DefaultMetainfoTimeout when not set).
func WithMetainfoTimeout(d time.Duration) Option { return func(c *Client) { c.metaT = d } }

// WithFailover sets a function called each time a tracker fails a request (announce or
// metainfo) and the next tracker of the digest is asked: with the digest, the failed
// tracker's ring key (host:port) and why it failed. It is not called for the last tracker
// tried, nor for a final answer (4xx). It runs on the request's goroutine, so it must be quick;
// the agent turns it into a swarm event (snapshot.EventTrackerFailover).
func WithFailover(fn func(d digest.Digest, tracker string, err error)) Option {
	return func(c *Client) { c.failover = fn }
}

// NewClient returns a client of the trackers, each given as "host:port" or as an http(s) URL
// ("https://tracker.example:8443", optionally with a path prefix). Trackers are placed in the
// rendezvous ring by host:port (the URL's default port when it has none), so every agent must
// list the same trackers, in any order and either form. hc nil means http.DefaultClient. Errors
// wrap ErrInvalid. With no trackers (an agent whose trackers' DNS name has no address yet) every
// call fails with ErrUnavailable until SetTrackers gives some.
func NewClient(trackers []string, hc *http.Client, opts ...Option) (*Client, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	c := &Client{
		hc:        hc,
		backoff:   DefaultBackoff,
		announceT: DefaultAnnounceTimeout,
		metaT:     DefaultMetainfoTimeout,
		now:       time.Now,
		down:      map[string]time.Time{},
	}
	for _, o := range opts {
		o(c)
	}
	if c.backoff < 0 || c.announceT <= 0 || c.metaT <= 0 {
		return nil, fmt.Errorf("new announce client: %w: timeouts must be positive and the backoff not negative", ErrInvalid)
	}
	set, err := newTrackerSet(trackers)
	if err != nil {
		return nil, fmt.Errorf("new announce client: %w", err)
	}
	c.set.Store(set)
	return c, nil
}

// errNoTrackers is every call's error while the client knows no tracker.
var errNoTrackers = fmt.Errorf("%w: no trackers known yet", ErrUnavailable)

// trackerSet is the trackers a Client asks: an immutable snapshot, so that one request ranks
// and reaches the same set even while SetTrackers replaces it.
type trackerSet struct {
	endpoints map[string]endpoint // by ring key (host:port)
	keys      []string
}

func newTrackerSet(trackers []string) (*trackerSet, error) {
	set := &trackerSet{endpoints: make(map[string]endpoint, len(trackers))}
	for _, t := range trackers {
		ep, err := parseEndpoint(t)
		if err != nil {
			return nil, err
		}
		if _, dup := set.endpoints[ep.key]; dup {
			return nil, fmt.Errorf("%w: tracker %s listed twice", ErrInvalid, ep.key)
		}
		set.endpoints[ep.key] = ep
		set.keys = append(set.keys, ep.key)
	}
	return set, nil
}

// SetTrackers replaces the trackers (an agent whose trackers come from DNS calls it when the
// answer changes), as NewClient takes them; requests under way finish with the old set. It
// returns an error wrapping ErrInvalid, and changes nothing, when trackers is empty or holds
// a bad or repeated address.
func (c *Client) SetTrackers(trackers []string) error {
	if len(trackers) == 0 {
		return fmt.Errorf("set trackers: %w: no trackers", ErrInvalid)
	}
	set, err := newTrackerSet(trackers)
	if err != nil {
		return fmt.Errorf("set trackers: %w", err)
	}
	c.set.Store(set)
	return nil
}

// parseEndpoint turns "host:port" or an http(s) URL into an endpoint.
func parseEndpoint(s string) (endpoint, error) {
	key, base, err := ring.ParseEndpoint(s)
	if err != nil {
		return endpoint{}, fmt.Errorf("%w: tracker %w", ErrInvalid, err)
	}
	return endpoint{key: key, base: base}, nil
}

// Trackers returns the ring keys (host:port) of the trackers in the order they would be asked
// about d now: by rendezvous rank, the ones marked down last.
func (c *Client) Trackers(d digest.Digest) []string {
	return c.trackersOf(c.set.Load(), d)
}

func (c *Client) trackersOf(set *trackerSet, d digest.Digest) []string {
	ranked := ring.Rank(d.String(), set.keys)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	up := make([]string, 0, len(ranked))
	var down []string
	for _, k := range ranked {
		if until, ok := c.down[k]; ok && now.Before(until) {
			down = append(down, k)
			continue
		}
		up = append(up, k)
	}
	return append(up, down...)
}

// Announce sends req to the trackers of req.Digest in order until one answers. The returned
// peers are checked: entries with a malformed id or address, duplicates and the announcing peer
// itself are dropped. Errors wrap ErrInvalid (req is malformed; nothing was sent), ErrRejected
// (a tracker answered 4xx), ErrUnavailable (no tracker answered) or ctx's error.
func (c *Client) Announce(ctx context.Context, req Request) (Response, error) {
	if err := req.Validate(); err != nil {
		return Response{}, fmt.Errorf("announce %s: %w", req.Digest, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Response{}, fmt.Errorf("announce %s: %w", req.Digest, err)
	}
	var out Response
	err = c.try(ctx, req.Digest, c.announceT, func(ctx context.Context, ep endpoint) error {
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.base+AnnouncePath, bytes.NewReader(body))
		if err != nil {
			return err
		}
		hreq.Header.Set("Content-Type", "application/json")
		resp, err := c.hc.Do(hreq)
		if err != nil {
			return err
		}
		defer closeBody(resp)
		if resp.StatusCode != http.StatusOK {
			return statusError(ep, resp, false)
		}
		var r Response
		if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(&r); err != nil {
			return fmt.Errorf("tracker %s: decode response: %w", ep.key, err)
		}
		out = Response{Peers: cleanPeers(r.Peers, req.PeerID), IntervalSeconds: r.IntervalSeconds}
		return nil
	})
	if err != nil {
		return Response{}, fmt.Errorf("announce %s: %w", req.Digest, err)
	}
	return out, nil
}

// cleanPeers drops malformed entries, duplicates and self from a tracker's list, in place.
func cleanPeers(peers []Peer, self string) []Peer {
	seen := make(map[string]bool, len(peers))
	out := peers[:0]
	for _, p := range peers {
		if p.ID == self || seen[p.ID] || p.Validate() != nil {
			continue
		}
		seen[p.ID] = true
		out = append(out, p)
	}
	if out == nil {
		out = []Peer{}
	}
	return out
}

// Metainfo fetches the metainfo of d from the trackers of d in order until one answers. The
// document is decoded with metainfo.Decode and must describe d; a tracker that sends anything
// else counts as failed. Errors wrap ErrInvalid (bad namespace or digest; nothing was sent),
// ErrNotFound (a tracker answered 404), ErrRejected (another 4xx), ErrUnavailable or ctx's
// error.
func (c *Client) Metainfo(ctx context.Context, ns string, d digest.Digest) (metainfo.MetaInfo, error) {
	if err := CheckNamespace(ns); err != nil {
		return metainfo.MetaInfo{}, fmt.Errorf("get metainfo %s: %w", d, err)
	}
	if err := CheckDigest(d); err != nil {
		return metainfo.MetaInfo{}, fmt.Errorf("get metainfo %s: %w", d, err)
	}
	var out metainfo.MetaInfo
	err := c.try(ctx, d, c.metaT, func(ctx context.Context, ep endpoint) error {
		hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.base+MetainfoPath(ns, d), nil)
		if err != nil {
			return err
		}
		resp, err := c.hc.Do(hreq)
		if err != nil {
			return err
		}
		defer closeBody(resp)
		if resp.StatusCode != http.StatusOK {
			return statusError(ep, resp, true)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, metainfo.MaxEncodedSize+1))
		if err != nil {
			return fmt.Errorf("tracker %s: read metainfo: %w", ep.key, err)
		}
		if len(data) > metainfo.MaxEncodedSize {
			return fmt.Errorf("tracker %s: metainfo larger than %d bytes", ep.key, metainfo.MaxEncodedSize)
		}
		mi, err := metainfo.Decode(data)
		if err != nil {
			return fmt.Errorf("tracker %s: %w", ep.key, err)
		}
		if mi.Digest != d {
			return fmt.Errorf("tracker %s: sent the metainfo of %s", ep.key, mi.Digest)
		}
		out = mi
		return nil
	})
	if err != nil {
		return metainfo.MetaInfo{}, fmt.Errorf("get metainfo %s: %w", d, err)
	}
	return out, nil
}

// Ping reports whether some tracker answers its /health with 200. It asks them all at once,
// each for at most timeout, so one tracker that accepts connections and never answers does not
// hide another that works, and returns as soon as one answers. The error lists why each failed.
func (c *Client) Ping(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the others need not finish once one answered
	set := c.set.Load()
	if len(set.keys) == 0 {
		return errNoTrackers
	}
	errc := make(chan error, len(set.keys))
	for _, key := range set.keys {
		ep := set.endpoints[key]
		go func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			errc <- c.ping(pctx, ep)
		}()
	}
	var errs []error
	for range set.keys {
		err := <-errc
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
}

func (c *Client) ping(ctx context.Context, ep endpoint) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.base+"/health", nil)
	if err != nil {
		return fmt.Errorf("tracker %s: %w", ep.key, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("tracker %s: %w", ep.key, err)
	}
	defer closeBody(resp)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("tracker %s answered %s", ep.key, resp.Status)
	}
	return nil
}

// try runs attempt against the trackers of d in order until one succeeds, one gives a final
// answer (an error wrapping ErrRejected or ErrNotFound) or ctx ends. Each attempt gets its own
// timeout. Trackers that fail are marked down; one that succeeds is marked up.
func (c *Client) try(ctx context.Context, d digest.Digest, timeout time.Duration, attempt func(context.Context, endpoint) error) error {
	var errs []error
	set := c.set.Load()
	if len(set.keys) == 0 {
		return errNoTrackers
	}
	keys := c.trackersOf(set, d)
	for i, key := range keys {
		ep := set.endpoints[key]
		actx, cancel := context.WithTimeout(ctx, timeout)
		err := attempt(actx, ep)
		cancel()
		if err == nil {
			c.markUp(key)
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if errors.Is(err, ErrRejected) || errors.Is(err, ErrNotFound) {
			// The tracker works; the request is what is wrong.
			c.markUp(key)
			return err
		}
		c.markDown(key)
		errs = append(errs, err)
		if c.failover != nil && i+1 < len(keys) {
			c.failover(d, key, err)
		}
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
}

func (c *Client) markDown(key string) {
	if c.backoff == 0 {
		return
	}
	until := c.now().Add(c.backoff)
	c.mu.Lock()
	c.down[key] = until
	c.mu.Unlock()
}

func (c *Client) markUp(key string) {
	c.mu.Lock()
	delete(c.down, key)
	c.mu.Unlock()
}

// closeBody reads a little of what is left of a body, so that the connection can be reused
// after a document that was decoded without reading to EOF, and closes it.
func closeBody(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
}

// statusError turns a tracker's non-200 answer into an error: final (ErrNotFound for a 404 when
// notFound is set, else ErrRejected) for a 4xx other than 408 and 429, and retryable otherwise.
// It reads the tracker's error document, when it sent one, into the message.
func statusError(ep endpoint, resp *http.Response, notFound bool) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	msg := errorMessage(body)
	err := fmt.Errorf("tracker %s answered %s", ep.key, resp.Status)
	if msg != "" {
		err = fmt.Errorf("tracker %s answered %s: %s", ep.key, resp.Status, msg)
	}
	switch s := resp.StatusCode; {
	case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s < 400 || s >= 500:
		return err
	case s == http.StatusNotFound && notFound:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	default:
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
}

// errorMessage extracts "CODE: message" from an OCI-style error document
// ({"errors":[{"code":..., "message":...}]}), or returns "" when body is not one.
func errorMessage(body []byte) string {
	var doc struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &doc) != nil || len(doc.Errors) == 0 {
		return ""
	}
	var parts []string
	for _, e := range doc.Errors {
		parts = append(parts, strings.TrimPrefix(e.Code+": "+e.Message, ": "))
	}
	return strings.Join(parts, "; ")
}
