package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// Bounds of the tracker's swarm documents as read. The list holds at most the tracker's cap of
// 10,000 swarms of a few hundred bytes each; one swarm about 250 bytes per member, so the
// bound leaves room for well over 100,000 members.
const (
	maxSwarmList = 16 << 20
	maxSwarm     = 64 << 20
)

// ErrMalformed is wrapped by client errors for an answer that is not the document asked for:
// not JSON, the wrong shape, larger than its bound, or about another blob.
var ErrMalformed = errors.New("malformed answer")

// Tracker is a client of one tracker's swarm list (api.SwarmsPath). Announces and metainfo go
// through swarm/announce's Client, which knows every tracker; this one reads one.
type Tracker struct {
	c *Origin
}

// NewTracker returns a client of the tracker at addr ("host:port" or a full http(s) URL). hc
// nil means http.DefaultClient.
func NewTracker(addr string, hc *http.Client) *Tracker { return &Tracker{c: NewOrigin(addr, hc)} }

// Addr returns the address the client was built with.
func (c *Tracker) Addr() string { return c.c.Addr() }

// Swarms returns the swarms the tracker knows (a live peer announced them), the most recently
// announced first, without members: at most limit of them, or the tracker's default (1,000)
// when limit is 0; the tracker caps it at 10,000.
func (c *Tracker) Swarms(ctx context.Context, limit int) ([]snapshot.TrackerSwarm, error) {
	if limit < 0 {
		return nil, fmt.Errorf("list swarms: limit %d: must not be negative", limit)
	}
	path := api.SwarmsPath
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	var out []snapshot.TrackerSwarm
	if err := c.get(ctx, "list swarms", path, maxSwarmList, &out); err != nil {
		return nil, err
	}
	for _, s := range out {
		if err := checkSwarm(s); err != nil {
			return nil, fmt.Errorf("list swarms from %s: %w: %w", c.Addr(), ErrMalformed, err)
		}
	}
	if out == nil {
		out = []snapshot.TrackerSwarm{}
	}
	return out, nil
}

// Swarm returns d's swarm with its members: the owning origins the tracker can reach, then the
// peers that announced d within the tracker's peer TTL. A digest no live peer announced wraps
// ErrNotFound.
func (c *Tracker) Swarm(ctx context.Context, d digest.Digest) (snapshot.TrackerSwarm, error) {
	if err := d.Validate(); err != nil {
		return snapshot.TrackerSwarm{}, fmt.Errorf("get swarm %q: %w", d, err)
	}
	var out snapshot.TrackerSwarm
	if err := c.get(ctx, "get swarm "+d.String(), api.SwarmsPath+"/"+d.String(), maxSwarm, &out); err != nil {
		return snapshot.TrackerSwarm{}, err
	}
	if out.Digest != d {
		return snapshot.TrackerSwarm{}, fmt.Errorf("get swarm %s from %s: %w: it sent the swarm of %q", d, c.Addr(), ErrMalformed, out.Digest)
	}
	if err := checkSwarm(out); err != nil {
		return snapshot.TrackerSwarm{}, fmt.Errorf("get swarm %s from %s: %w: %w", d, c.Addr(), ErrMalformed, err)
	}
	return out, nil
}

// get reads one JSON document of at most limit bytes into v.
func (c *Tracker) get(ctx context.Context, op, path string, limit int64, v any) error {
	resp, err := c.c.do(ctx, http.MethodGet, path, http.Header{"Accept": {"application/json"}})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		return responseError(op, resp)
	}
	defer drain(resp)
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("%s from %s: %w: %w", op, c.Addr(), ErrNoAnswer, err)
	}
	if int64(len(data)) > limit {
		return fmt.Errorf("%s from %s: %w: larger than %d bytes", op, c.Addr(), ErrMalformed, limit)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s from %s: %w: %w", op, c.Addr(), ErrMalformed, err)
	}
	return nil
}

// checkSwarm reports what makes s a document no tracker sends: a malformed digest, negative
// counts or an impossible progress. Addresses and ids are shown as sent, not dialled.
func checkSwarm(s snapshot.TrackerSwarm) error {
	if err := s.Digest.Validate(); err != nil {
		return fmt.Errorf("swarm digest %q: %w", s.Digest, err)
	}
	if s.Seeders < 0 || s.Leechers < 0 {
		return fmt.Errorf("swarm %s: negative peer counts", s.Digest)
	}
	for _, m := range s.Members {
		if m.Have < 0 || m.Pieces < 0 || m.Have > m.Pieces {
			return fmt.Errorf("swarm %s: member %s has %d of %d pieces", s.Digest, m.Addr, m.Have, m.Pieces)
		}
	}
	return nil
}
