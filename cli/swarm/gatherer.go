package swarm

import (
	"context"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/observe"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// NewGatherer returns the gatherer of the cluster c, reading with hc. cfg's role lists are
// filled from c.
func NewGatherer(c endpoints.Cluster, hc *http.Client, cfg observe.Config) (*observe.Gatherer, error) {
	cfg.Agents, cfg.Origins, cfg.Trackers = c.Agents, c.Origins, c.Trackers
	deps := observe.Deps{
		Agent: func(addr string) observe.SwarmNode { return agentNode{client.NewAgent(addr, hc)} },
		Origin: func(addr string) interface {
			observe.SwarmNode
			observe.Ring
		} {
			return originNode{client.NewOrigin(addr, hc)}
		},
		Tracker:  func(addr string) observe.Tracker { return client.NewTracker(addr, hc) },
		NotFound: client.IsNotFound,
		Events: func(ctx context.Context, addr string, kinds []snapshot.EventKind, fn func(snapshot.Event) error) error {
			return client.NewAgent(addr, hc).EventsOf(ctx, "", kinds, fn)
		},
	}
	if len(c.BuildIndex) > 0 {
		deps.BuildIndex = client.NewBuildIndex(c.BuildIndex[0], hc)
		deps.Replication = func(ctx context.Context, addr string) (api.ReplicationStatus, error) {
			return client.NewBuildIndex(addr, hc).ReplicationStatus(ctx)
		}
	}
	return observe.New(cfg, deps)
}

// agentNode and originNode adapt the typed clients to observe's SwarmNode.
type agentNode struct{ c *client.Agent }

func (a agentNode) Torrents(ctx context.Context, d digest.Digest, history bool) ([]snapshot.TorrentStats, error) {
	if history {
		return a.c.TorrentsHistory(ctx, d)
	}
	return a.c.Torrents(ctx, d)
}

func (a agentNode) Host(ctx context.Context) (snapshot.HostStats, error) { return a.c.Host(ctx) }

type originNode struct{ *client.Origin }

func (o originNode) Torrents(ctx context.Context, d digest.Digest, history bool) ([]snapshot.TorrentStats, error) {
	if history {
		return o.TorrentsHistory(ctx, d)
	}
	return o.Origin.Torrents(ctx, d)
}
