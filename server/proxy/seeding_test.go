package proxy_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/proxy"
)

// imageBlobs lists every blob of img: its manifest, config and layers.
func imageBlobs(t *testing.T, img v1.Image) []digest.Digest {
	t.Helper()
	d, err := img.Digest()
	require.NoError(t, err)
	m, err := img.Manifest()
	require.NoError(t, err)
	out := []digest.Digest{digest.Digest(d.String()), digest.Digest(m.Config.Digest.String())}
	for _, l := range m.Layers {
		out = append(out, digest.Digest(l.Digest.String()))
	}
	return out
}

// hotOnAgent reports whether agent a has downloaded and committed d.
func hotOnAgent(t *testing.T, a string, d digest.Digest) bool {
	ts, err := client.NewAgent(a, nil).Torrents(t.Context(), d)
	return err == nil && len(ts) == 1 && ts[0].State == "seeding" && ts[0].Finished != nil
}

// TestSeedOnPushAndNotifications runs a cluster with agents and two proxies: one seeds on
// push, the other only on notifications. An image pushed to the first, and an image pushed to
// the second and then announced by a notification, each end up on their owning origins and
// committed on every agent, although nobody pulled them.
func TestSeedOnPushAndNotifications(t *testing.T) {
	c := clustertest.Start(t, cluster.Spec{
		Origins: 3, Replicas: 2, BuildIndexes: 1, Trackers: 1, Agents: 2,
		HealthInterval:   200 * time.Millisecond,
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{})
	st := &stack{t: t, c: c, hc: &http.Client{}, origins: c.Addrs(cluster.Origin), index: c.Addr(cluster.BuildIndex, 0)}
	agents := c.Addrs(cluster.Agent)
	onPush := st.newProxy(func(cfg *proxy.Config) {
		cfg.Seed = &proxy.SeedConfig{OnPush: true, Agents: agents}
	})
	notified := st.newProxy(func(cfg *proxy.Config) { cfg.Seed = &proxy.SeedConfig{Agents: agents} })

	pushImage := func(p *proxy.Server, repo string) []digest.Digest {
		img, err := random.Image(32<<10, 2)
		require.NoError(t, err)
		ref, err := name.ParseReference(p.Addr()+"/"+repo+":v1", name.Insecure)
		require.NoError(t, err)
		require.NoError(t, remote.Write(ref, img, remote.WithContext(t.Context())))
		return imageBlobs(t, img)
	}
	pushed := pushImage(onPush, "team/pushed")
	announced := pushImage(notified, "team/announced")

	// The proxy without on_push seeded nothing of its image: nothing is on the agents.
	for _, d := range announced {
		for _, a := range agents {
			require.False(t, hotOnAgent(t, a, d), "agent %s has %s before the notification", a, d)
		}
	}
	body, err := json.Marshal(map[string]any{"events": []map[string]any{
		{"id": "1", "action": "push", "target": map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": "team/announced",
			"digest": announced[0], "tag": "v1", "size": 1}},
		{"id": "2", "action": "push", "target": map[string]any{
			"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "repository": "team/announced",
			"digest": announced[2], "size": 1}},
	}})
	require.NoError(t, err)
	resp := send(t, st.hc, http.MethodPost, "http://"+notified.Addr()+proxy.NotificationsPath,
		"application/vnd.docker.distribution.events.v1+json", bytes.NewReader(body))
	var res proxy.NotificationResult
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&res))
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, proxy.NotificationResult{Events: 2, Queued: 1, Ignored: 1}, res)

	cl := client.NewCluster(st.origins, st.hc)
	for repo, blobs := range map[string][]digest.Digest{"team/pushed": pushed, "team/announced": announced} {
		for _, d := range blobs {
			for _, a := range agents {
				require.Eventually(t, func() bool { return hotOnAgent(t, a, d) }, 30*time.Second, 20*time.Millisecond,
					"%s of %s committed on agent %s without a pull", d, repo, a)
			}
			rs, err := cl.Ring(t.Context(), d)
			require.NoError(t, err)
			require.Len(t, rs.Owners, 2)
			for _, o := range rs.Owners {
				_, err := cl.Origin(o).StatLocal(t.Context(), repo, d)
				require.NoError(t, err, "%s of %s on owner %s", d, repo, o)
			}
		}
	}
}
