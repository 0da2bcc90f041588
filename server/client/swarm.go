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

// Bounds of the swarm API documents read into memory. Decoded, a JSON document takes about
// five times its size, and top reads up to 16 hosts at once (some found through the tracker,
// so not chosen by the operator): an endless answer must cost a CLI tens of megabytes, not
// gigabytes. A host's stats are a few kilobytes plus its bans; its torrents with history are
// a few hundred bytes per torrent and per peer, live and past (64 past peers per torrent, 256
// retired torrents), so 64 MiB leaves room for tens of thousands of torrents.
const (
	maxHostDocument     = 4 << 20
	maxTorrentsDocument = 64 << 20
)

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
	err := c.getJSON(ctx, api.SwarmHostPath, "get host stats", maxHostDocument, &h)
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
	err := c.getJSON(ctx, path, "get torrents", maxTorrentsDocument, &out)
	return out, err
}

// getJSON GETs path and decodes the JSON answer, of at most limit bytes, into v.
func (c *Origin) getJSON(ctx context.Context, path, op string, limit int64, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		return responseError(op, resp)
	}
	defer func() { _ = resp.Body.Close() }() // read side
	lr := &io.LimitedReader{R: resp.Body, N: limit + 1}
	if err := json.NewDecoder(lr).Decode(v); err != nil {
		if lr.N == 0 {
			return fmt.Errorf("%s from %s: %w: larger than %d bytes", op, c.Addr(), ErrMalformed, limit)
		}
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
