package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/gc"
)

// TestGCTouchFailoverKeepsBlob runs two origins, a build-index node and a proxy as `krakenctl
// serve` processes over one fs backend. A GC pauses between its mark and its sweep; meanwhile
// the first owner of an old, unreferenced layer is killed (SIGKILL), an image referencing the
// layer is pushed (the proxy's touch fails over to the other origin), and the owner is started
// again. The sweep then asks that owner about the backend copy: it holds none and touched none,
// but the other origin touched it, so the copy stays. After both origins' copies are gone (as
// eviction would take them) the image still pulls, from the backend.
func TestGCTouchFailoverKeepsBlob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	storage := filepath.Join(dir, "storage")
	hc := &http.Client{Timeout: time.Minute}
	addrs := []string{freeAddr(t), freeAddr(t)}
	var origins []*proc
	for i, a := range addrs {
		cfg := fmt.Sprintf(`listen: %s
admin_listen: 127.0.0.1:0
store:
  dir: %s
ring:
  members: [%s]
  replicas: 2
  health_interval: 500ms
  health_timeout: 500ms
  fail_threshold: 2
  pass_threshold: 1
backends:
  - namespace: ".*"
    fs: {root: %s}
writeback:
  retry_initial: 100ms
  retry_max: 500ms
  replica_delay: 100ms
  touch_hold: 2s
`, a, filepath.Join(dir, fmt.Sprintf("origin-%d", i)), strings.Join(addrs, ", "), storage)
		path := filepath.Join(dir, fmt.Sprintf("origin-%d.yaml", i))
		require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("origin-%d.log", i)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = logf.Close() }) // the child process wrote it; nothing is buffered here
		p := originProc(t, a, path, logf)
		p.start()
		t.Cleanup(p.kill)
		origins = append(origins, p)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range origins {
				b, _ := os.ReadFile(p.log.Name())
				t.Logf("log of origin %s (last 4 KiB):\n%s", p.addr, tail(b, 4096))
			}
		}
	})
	bi := buildIndexCluster(t, filepath.Join(dir, "bi"), 1, strings.Join(addrs, ", "), storage)
	bi[0].start()
	waitLeader(t, bi, 1)

	proxyAddr := freeAddr(t)
	pcfg := filepath.Join(dir, "proxy.yaml")
	require.NoError(t, os.WriteFile(pcfg, []byte(fmt.Sprintf(`listen: %s
admin_listen: 127.0.0.1:0
origins: [%s]
build_index: [%s]
`, proxyAddr, strings.Join(addrs, ", "), bi[0].addr)), 0o644))
	plog, err := os.Create(filepath.Join(dir, "proxy.log"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = plog.Close() })
	proxy := &proc{t: t, role: "proxy", name: proxyAddr, addr: proxyAddr, config: pcfg, log: plog,
		ready: func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+proxyAddr+"/v2/", nil)
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET /v2/: %s", resp.Status)
			}
			return nil
		}}
	proxy.start()
	t.Cleanup(proxy.kill)
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(proxyAddr+"/"+s, name.Insecure)
		require.NoError(t, err)
		return r
	}

	// An old layer in team/race that nothing references, written back and held by nobody.
	victim, err := random.Layer(8192, "application/vnd.oci.image.layer.v1.tar")
	require.NoError(t, err)
	require.NoError(t, remote.WriteLayer(ref("team/race").Context(), victim, remote.WithContext(t.Context())))
	vh, err := victim.Digest()
	require.NoError(t, err)
	vd := digest.Digest(vh.String())
	inBackend := func() bool {
		names, err := client.NewOrigin(addrs[0], hc).GCBackendList(t.Context(), "team/race", vd.Encoded()[:1])
		return err == nil && slices.Contains(names, vd.Encoded())
	}
	require.Eventually(t, inBackend, time.Minute, 50*time.Millisecond, "written back")
	for _, a := range addrs {
		require.Eventually(t, func() bool {
			res, err := client.NewOrigin(a, hc).GCDelete(t.Context(), vd, time.Now().Add(time.Hour), true)
			return err == nil && res.Kept != api.GCKeptInUse
		}, time.Minute, 50*time.Millisecond, "nothing holds it on %s", a)
	}
	img, err := mutate.AppendLayers(empty.Image, victim)
	require.NoError(t, err)

	cl := client.NewCluster(addrs, hc)
	st, err := cl.Ring(t.Context(), vd)
	require.NoError(t, err)
	owner := origins[slices.Index(addrs, st.Owners[0])]
	firstOwnerEverywhere := func() bool {
		for _, a := range addrs {
			st, err := client.NewOrigin(a, hc).Ring(t.Context(), vd)
			if err != nil || len(st.Owners) == 0 || st.Owners[0] != owner.addr {
				return false
			}
		}
		return true
	}

	ix := client.NewBuildIndexes([]string{bi[0].addr}, hc, client.BuildIndexesOptions{})
	w, err := gc.NewWalker(cl, ix, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	deps := gc.ClusterDeps(cl, ix, w)
	deps.AfterMark = func(context.Context) error {
		owner.kill()
		require.NoError(t, remote.Write(ref("team/race:v1"), img, remote.WithContext(t.Context())))
		owner.start()
		require.Eventually(t, firstOwnerEverywhere, time.Minute, 50*time.Millisecond, "every origin sees the owner back")
		return nil
	}
	col, err := gc.New(gc.Config{Backends: true}, deps)
	require.NoError(t, err)
	rep, err := col.Run(t.Context())
	require.NoError(t, err)
	require.Zero(t, rep.Totals().Errors, "%+v", rep.Rows)

	// Both copies go, as eviction would take them (first the touch's write-back lets go).
	for _, a := range addrs {
		require.Eventually(t, func() bool {
			res, err := client.NewOrigin(a, hc).GCDelete(t.Context(), vd, time.Now().Add(time.Hour), false)
			return err == nil && (res.Deleted || res.Kept == api.GCKeptAbsent)
		}, time.Minute, 50*time.Millisecond, "evict the copy on %s", a)
	}
	require.True(t, inBackend(), "the backend copy stayed: %+v", rep.Rows)
	pulled, err := remote.Image(ref("team/race:v1"), remote.WithContext(t.Context()))
	require.NoError(t, err)
	layers, err := pulled.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	rc, err := layers[0].Compressed()
	require.NoError(t, err)
	got := digest.Canonical.Digester()
	_, err = io.Copy(got.Hash(), rc)
	require.NoError(t, rc.Close())
	require.NoError(t, err)
	require.Equal(t, vd, got.Digest(), "the layer pulls whole")
}
