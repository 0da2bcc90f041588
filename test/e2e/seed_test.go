package e2e

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// TestSeedBeforeAnyPull: a multi-arch image pushed to `dev up`'s proxy and seeded with the real
// binary (`krakenctl seed REPO:TAG --agents all`) is, before anything pulls it, on every owning
// origin and in every agent's store: `swarm inspect` of each blob of its graph, as
// go-containerregistry lists it, finds every agent complete.
func TestSeedBeforeAnyPull(t *testing.T) {
	t.Parallel()
	c := devUp(t, 2)
	ep := filepath.Join(c.dir, "endpoints.yaml")
	idx, err := random.Index(256<<10, 2, 2)
	require.NoError(t, err)
	ref, err := name.ParseReference(c.proxy()+"/team/app:v1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.WriteIndex(ref, idx, remote.WithContext(t.Context())))

	// The graph as a registry client sees it: the index, each platform manifest, its config
	// and its layers.
	want := map[string]bool{}
	d, err := idx.Digest()
	require.NoError(t, err)
	want[d.String()] = true
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	for _, m := range im.Manifests {
		want[m.Digest.String()] = true
		img, err := idx.Image(m.Digest)
		require.NoError(t, err)
		cfg, err := img.ConfigName()
		require.NoError(t, err)
		want[cfg.String()] = true
		layers, err := img.Layers()
		require.NoError(t, err)
		for _, l := range layers {
			ld, err := l.Digest()
			require.NoError(t, err)
			want[ld.String()] = true
		}
	}

	out := runCmd(t, nil, bin, "seed", "team/app:v1", "--agents", "all", "--endpoints-file", ep, "-o", "json")
	var report struct {
		Blobs []struct {
			Digest  string `json:"digest"`
			Kind    string `json:"kind"`
			Error   string `json:"error"`
			Origins []struct {
				Addr  string `json:"addr"`
				Error string `json:"error"`
			} `json:"origins"`
			Agents []struct {
				Addr  string `json:"addr"`
				Error string `json:"error"`
			} `json:"agents"`
		} `json:"blobs"`
		Failed int `json:"failed"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &report), out)
	require.Zero(t, report.Failed, out)
	got := map[string]bool{}
	for _, b := range report.Blobs {
		got[b.Digest] = true
		require.Empty(t, b.Error, "%s", b.Digest)
		require.NotEmpty(t, b.Origins, "%s was warmed on its owners", b.Digest)
		require.Len(t, b.Agents, 2, "%s on both agents", b.Digest)
	}
	require.Equal(t, want, got, "the seeded graph is the image's")

	// Nothing has pulled the image; the agents hold every blob all the same.
	for dg := range want {
		js := runCmd(t, nil, bin, "swarm", "inspect", dg, "--endpoints-file", ep, "-o", "json")
		var s snapshot.Swarm
		require.NoError(t, json.Unmarshal([]byte(js), &s), js)
		agents := 0
		for _, p := range s.Peers {
			if p.Role == "agent" {
				agents++
				require.Equal(t, s.Pieces, p.Pieces, "agent %s holds %s", p.Addr, dg)
			}
		}
		require.Equal(t, 2, agents, "both agents are in the swarm of %s: %+v", dg, s.Peers)
	}
}
