package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/krakenctl/krakenctl/server/api"
)

// maxPeerInfo bounds the PeerInfo document read from an origin.
const maxPeerInfo = 4 << 10

// Peer returns the origin's identity in the swarm: its peer id and the address where it accepts
// swarm connections. The document is returned as the origin sent it; callers validate it.
func (c *Origin) Peer(ctx context.Context) (api.PeerInfo, error) {
	resp, err := c.do(ctx, http.MethodGet, api.PeerPath, nil)
	if err != nil {
		return api.PeerInfo{}, fmt.Errorf("get peer info: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return api.PeerInfo{}, responseError("get peer info", resp)
	}
	defer func() { _ = resp.Body.Close() }() // read side
	var pi api.PeerInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxPeerInfo)).Decode(&pi); err != nil {
		return api.PeerInfo{}, fmt.Errorf("decode peer info from %s: %w", c.addr, err)
	}
	return pi, nil
}
