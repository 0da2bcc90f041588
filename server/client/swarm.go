package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// maxSwarmDocument bounds a swarm API answer read into memory.
const maxSwarmDocument = 256 << 20

// Torrents returns the torrents the origin seeds, or only the one of d when d is not empty.
func (c *Origin) Torrents(ctx context.Context, d digest.Digest) ([]snapshot.TorrentStats, error) {
	return c.torrents(ctx, d, false)
}

// TorrentsHistory is Torrents followed by the torrents the origin retired, newest first, with
// Retired set (a bounded history).
func (c *Origin) TorrentsHistory(ctx context.Context, d digest.Digest) ([]snapshot.TorrentStats, error) {
	return c.torrents(ctx, d, true)
}

// Host returns the origin's swarm engine as a whole: identity, caps, connections, byte totals
// and bans in force. An origin that does not seed answers 404 (ErrNotFound).
func (c *Origin) Host(ctx context.Context) (snapshot.HostStats, error) {
	var h snapshot.HostStats
	err := c.getJSON(ctx, api.SwarmHostPath, "get host stats", &h)
	return h, err
}

func (c *Origin) torrents(ctx context.Context, d digest.Digest, history bool) ([]snapshot.TorrentStats, error) {
	q := url.Values{}
	if d != "" {
		q.Set("digest", d.String())
	}
	if history {
		q.Set(api.SwarmHistoryParam, "1")
	}
	path := api.SwarmTorrentsPath
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []snapshot.TorrentStats
	err := c.getJSON(ctx, path, "get torrents", &out)
	return out, err
}

// getJSON GETs path and decodes the JSON answer into v.
func (c *Origin) getJSON(ctx context.Context, path, op string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		return responseError(op, resp)
	}
	defer func() { _ = resp.Body.Close() }() // read side
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxSwarmDocument)).Decode(v); err != nil {
		return fmt.Errorf("%s: decode answer of %s: %w", op, c.Addr(), err)
	}
	return nil
}

// TorrentsHistory is Torrents followed by the torrents the agent retired (seeded long enough
// or failed), newest first, with Retired set (a bounded history).
func (c *Agent) TorrentsHistory(ctx context.Context, d digest.Digest) ([]snapshot.TorrentStats, error) {
	return c.blobs.torrents(ctx, d, true)
}

// Host returns the agent's swarm engine as a whole: identity, caps, connections, byte totals
// and bans in force.
func (c *Agent) Host(ctx context.Context) (snapshot.HostStats, error) {
	return c.blobs.Host(ctx)
}
