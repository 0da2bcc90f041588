package gc_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/gc"
	"github.com/krakenctl/krakenctl/server/origin"
)

// realCluster is two origins (every blob on both), a build-index node and a proxy, in
// process, over a memory backend the test can look into.
type realCluster struct {
	t  *testing.T
	c  *cluster.Cluster
	be *memory.Backend
	hc *http.Client
}

func startCluster(t *testing.T) *realCluster { return startClusterWith(t, nil) }

// startClusterWith is startCluster with the spec changed by tweak.
func startClusterWith(t *testing.T, tweak func(*cluster.Spec)) *realCluster {
	t.Helper()
	be := memory.New()
	spec := cluster.Spec{Origins: 2, Replicas: 2, BuildIndexes: 1, Proxies: 1, Backend: be,
		BuildIndexConfig: func(_ int, cfg *buildindexConfig) { clustertest.FastRaft(cfg) },
		// A replica (and a touched blob) holds its copy until its own delayed write-back finds
		// the blob stored; make that quick so the runs below find nothing awaiting write-back
		// (a touch's hold soon enough, leaving the backend decisions a second to ask the
		// members: half of it).
		OriginConfig: func(_ int, cfg *origin.Config) {
			cfg.Writeback.ReplicaDelay, cfg.Writeback.TouchHold = 10*time.Millisecond, 2*time.Second
		},
	}
	if tweak != nil {
		tweak(&spec)
	}
	c := clustertest.Start(t, spec, cluster.Deps{})
	return &realCluster{t: t, c: c, be: be, hc: &http.Client{Timeout: time.Minute}}
}

func (rc *realCluster) ref(s string) name.Reference {
	rc.t.Helper()
	ref, err := name.ParseReference(rc.c.Addr(cluster.Proxy, 0)+"/"+s, name.Insecure)
	require.NoError(rc.t, err)
	return ref
}

// push pushes img as repo:tag through the proxy and returns its manifest digest.
func (rc *realCluster) push(img v1.Image, repoTag string) digest.Digest {
	rc.t.Helper()
	require.NoError(rc.t, remote.Write(rc.ref(repoTag), img, remote.WithContext(rc.t.Context())))
	d, err := img.Digest()
	require.NoError(rc.t, err)
	return digest.Digest(d.String())
}

// pullAll reads every blob of repo:tag through the proxy, verified by go-containerregistry.
func (rc *realCluster) pullAll(repoTag string) error {
	img, err := remote.Image(rc.ref(repoTag), remote.WithContext(rc.t.Context()))
	if err != nil {
		return err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		r, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, r)
		_ = r.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// blobsOf are the stored digests of an image: config, layers, manifest.
func blobsOf(t *testing.T, img v1.Image) []digest.Digest {
	t.Helper()
	m, err := img.Manifest()
	require.NoError(t, err)
	out := []digest.Digest{digest.Digest(m.Config.Digest.String())}
	for _, l := range m.Layers {
		out = append(out, digest.Digest(l.Digest.String()))
	}
	d, err := img.Digest()
	require.NoError(t, err)
	return append(out, digest.Digest(d.String()))
}

// onOrigins counts the origins whose own store holds d. Reading a blob is a use: call it only
// where a use cannot change what a run decides.
func (rc *realCluster) onOrigins(ns string, d digest.Digest) int {
	n := 0
	for _, a := range rc.c.Addrs(cluster.Origin) {
		if _, err := client.NewOrigin(a, rc.hc).StatLocal(rc.t.Context(), ns, d); err == nil {
			n++
		}
	}
	return n
}

// waitWrittenBack waits until the backend holds each blob under ns: until then an origin holds
// it for its write-back and a GC keeps it, which would make the runs below depend on timing.
func (rc *realCluster) waitWrittenBack(ns string, ds ...digest.Digest) {
	rc.t.Helper()
	for _, d := range ds {
		require.Eventually(rc.t, func() bool { _, ok := rc.be.Peek(ns, d.Encoded()); return ok },
			time.Minute, 20*time.Millisecond, "write-back of %s", d)
	}
	// The write-back task releases its hold just after the upload returns.
	require.Eventually(rc.t, func() bool {
		for _, a := range rc.c.Addrs(cluster.Origin) {
			for _, d := range ds {
				res, err := client.NewOrigin(a, rc.hc).GCDelete(rc.t.Context(), d, time.Now().Add(time.Hour), true)
				if err != nil || res.Kept == "in use" {
					return false
				}
			}
		}
		return true
	}, time.Minute, 20*time.Millisecond)
}

func (rc *realCluster) collector(cfg gc.Config, afterMark func(context.Context) error) *gc.Collector {
	rc.t.Helper()
	cl := client.NewCluster(rc.c.Addrs(cluster.Origin), rc.hc)
	ix := client.NewBuildIndexes(rc.c.Addrs(cluster.BuildIndex), rc.hc, client.BuildIndexesOptions{})
	w, err := gc.NewWalker(cl, ix, slog.New(slog.DiscardHandler))
	require.NoError(rc.t, err)
	deps := gc.ClusterDeps(cl, ix, w)
	deps.AfterMark = afterMark
	c, err := gc.New(cfg, deps)
	require.NoError(rc.t, err)
	return c
}

// Against real origins, a build-index and a proxy: a dry run reports what the run then does;
// the run deletes an untagged, deleted image's blobs and a lone blob from both origins and
// the backend, and the tagged image still pulls.
func TestClusterDryRunAndRunAgree(t *testing.T) {
	rc := startCluster(t)
	keep, err := random.Image(2048, 2)
	require.NoError(t, err)
	drop, err := random.Image(2048, 2)
	require.NoError(t, err)
	rc.push(keep, "team/keep:v1")
	dropDigest := rc.push(drop, "team/drop:v1")
	lone, err := random.Layer(1024, "application/vnd.oci.image.layer.v1.tar")
	require.NoError(t, err)
	require.NoError(t, remote.WriteLayer(rc.ref("team/drop").Context(), lone, remote.WithContext(t.Context())))
	loneDigest, err := lone.Digest()
	require.NoError(t, err)
	// Deleting the manifest leaves its blobs (and the lone one) referenced by nothing.
	dref, err := name.NewDigest(rc.c.Addr(cluster.Proxy, 0)+"/team/drop@"+dropDigest.String(), name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Delete(dref, remote.WithContext(t.Context())))

	garbage := append(blobsOf(t, drop), digest.Digest(loneDigest.String()))
	rc.waitWrittenBack("team/keep", blobsOf(t, keep)...)
	rc.waitWrittenBack("team/drop", garbage...)

	// Grace 0: everything pushed before the run is old enough.
	dry, err := rc.collector(gc.Config{DryRun: true, Backends: true}, nil).Run(t.Context())
	require.NoError(t, err)
	for _, d := range garbage {
		require.Equal(t, 2, rc.onOrigins("team/drop", d), "the dry run deleted nothing")
	}
	real, err := rc.collector(gc.Config{Backends: true}, nil).Run(t.Context())
	require.NoError(t, err)
	require.Equal(t, comparable(dry), comparable(real))

	tot := real.Totals()
	require.Zero(t, tot.Errors)
	require.Equal(t, 3*len(garbage), tot.Collected, "each garbage blob from two origins and the backend: %+v", real.Rows)
	for _, d := range garbage {
		require.Zero(t, rc.onOrigins("team/drop", d), d)
		_, ok := rc.be.Peek("team/drop", d.Encoded())
		require.False(t, ok, d)
	}
	for _, d := range blobsOf(t, keep) {
		require.Equal(t, 2, rc.onOrigins("team/keep", d))
		_, ok := rc.be.Peek("team/keep", d.Encoded())
		require.True(t, ok)
	}
	require.NoError(t, rc.pullAll("team/keep:v1"))

	// The lone blob's link is still in team/drop; a manifest put now that references it (a
	// client that did not check) is refused before it is linked, and nothing is tagged.
	ld := digest.Digest(loneDigest.String())
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":1024},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":1024}]}`, ld, ld)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+rc.c.Addr(cluster.Proxy, 0)+"/v2/team/drop/manifests/v2", strings.NewReader(m))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := rc.hc.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s", body)
	require.Contains(t, string(body), "MANIFEST_BLOB_UNKNOWN")
	require.Contains(t, string(body), "garbage-collected")
	_, err = remote.Head(rc.ref("team/drop:v2"), remote.WithContext(t.Context()))
	require.Error(t, err, "no tag was put")
}

// The fault the issue names: a GC races a push of a blob it was about to collect. The run
// pauses between its mark and its sweep; meanwhile a client pushes a manifest that references
// an old blob nothing referenced when the mark read the build-index (the client finds the
// blob in the repository and does not upload it again). The proxy's touch makes the blob
// newer than the run's cutoff on its owner, so the sweep keeps it there and in the backend,
// and the image pulls.
func TestClusterPushDuringRunKeepsBlob(t *testing.T) {
	rc := startCluster(t)
	victim, err := random.Layer(4096, "application/vnd.oci.image.layer.v1.tar")
	require.NoError(t, err)
	repo := rc.ref("team/race").Context()
	require.NoError(t, remote.WriteLayer(repo, victim, remote.WithContext(t.Context())))
	vd, err := victim.Digest()
	require.NoError(t, err)
	victimDigest := digest.Digest(vd.String())
	rc.waitWrittenBack("team/race", victimDigest)

	img, err := mutate.AppendLayers(empty.Image, victim)
	require.NoError(t, err)
	var pushed bool
	rep, err := rc.collector(gc.Config{Backends: true}, func(context.Context) error {
		rc.push(img, "team/race:v1")
		pushed = true
		return nil
	}).Run(t.Context())
	require.NoError(t, err)
	require.True(t, pushed)
	require.Zero(t, rep.Totals().Errors)
	require.Positive(t, rc.onOrigins("team/race", victimDigest), "the blob survives on an origin: %+v", rep.Rows)
	_, ok := rc.be.Peek("team/race", victimDigest.Encoded())
	require.True(t, ok, "and in the backend")
	require.NoError(t, rc.pullAll("team/race:v1"))

	// The next run marks it through the new manifest.
	again, err := rc.collector(gc.Config{Backends: true}, nil).Run(t.Context())
	require.NoError(t, err)
	require.Zero(t, again.Totals().Collected)
	require.NoError(t, rc.pullAll("team/race:v1"))
}

// The gap a review found: a push's touch fails over from the blob's first owner (down at that
// moment) to the other origin, which touches its copy; the owner comes back, had no copy
// touched, so the origins' sweep deletes its copy and, asked as the deciding owner, it used
// to delete the backend copy too, for it held none itself. The other origin's copy was a
// plain cache copy: once evicted, the acknowledged image referenced a blob stored nowhere.
// Now the owner asks every ring member before deleting, and the member that touched the blob
// since its cutoff keeps the backend copy: after every origin's copy is gone (evicted), the
// image still pulls, from the backend.
func TestClusterTouchFailoverKeepsBackendCopy(t *testing.T) {
	rc := startClusterWith(t, func(s *cluster.Spec) { s.HealthInterval = 100 * time.Millisecond })
	victim, err := random.Layer(4096, "application/vnd.oci.image.layer.v1.tar")
	require.NoError(t, err)
	require.NoError(t, remote.WriteLayer(rc.ref("team/race").Context(), victim, remote.WithContext(t.Context())))
	vd, err := victim.Digest()
	require.NoError(t, err)
	victimDigest := digest.Digest(vd.String())
	rc.waitWrittenBack("team/race", victimDigest)
	img, err := mutate.AppendLayers(empty.Image, victim)
	require.NoError(t, err)

	addrs := rc.c.Addrs(cluster.Origin)
	cl := client.NewCluster(addrs, rc.hc)
	firstOwner := func(o string) string {
		st, err := client.NewOrigin(o, rc.hc).Ring(t.Context(), victimDigest)
		if err != nil || len(st.Owners) == 0 {
			return ""
		}
		return st.Owners[0]
	}
	st, err := cl.Ring(t.Context(), victimDigest)
	require.NoError(t, err)
	owner := st.Owners[0]
	ownerIdx := slices.Index(addrs, owner)
	require.GreaterOrEqual(t, ownerIdx, 0)

	rep, err := rc.collector(gc.Config{Backends: true}, func(ctx context.Context) error {
		// Between the mark and the sweep: the owner is down while the image is pushed, so the
		// proxy's touch of the victim goes to the other origin; then the owner is back, and
		// every origin sees it as the first owner again before the sweep asks it.
		require.NoError(t, rc.c.Stop(cluster.Origin, ownerIdx))
		rc.push(img, "team/race:v1")
		require.NoError(t, rc.c.Restart(ctx, cluster.Origin, ownerIdx))
		require.Eventually(t, func() bool {
			for _, a := range addrs {
				if firstOwner(a) != owner {
					return false
				}
			}
			return true
		}, time.Minute, 20*time.Millisecond)
		return nil
	}).Run(t.Context())
	require.NoError(t, err)
	require.Zero(t, rep.Totals().Errors, "%+v", rep.Rows)

	// Every origin's copy goes, as LRU eviction would take a cache copy: first the touch's
	// write-back runs and lets go of it.
	for _, a := range addrs {
		o := client.NewOrigin(a, rc.hc)
		require.Eventually(t, func() bool {
			res, err := o.GCDelete(t.Context(), victimDigest, time.Now().Add(time.Hour), false)
			return err == nil && (res.Deleted || res.Kept == "absent")
		}, time.Minute, 20*time.Millisecond)
	}
	require.Zero(t, rc.onOrigins("team/race", victimDigest))
	_, ok := rc.be.Peek("team/race", victimDigest.Encoded())
	require.True(t, ok, "the backend copy stays: %+v", rep.Rows)
	require.NoError(t, rc.pullAll("team/race:v1"))
}

type buildindexConfig = buildindex.Config
