package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/azure"
	"github.com/krakenctl/krakenctl/backend/gcs"
	"github.com/krakenctl/krakenctl/backend/webhdfs"
	"github.com/krakenctl/krakenctl/backend/webhdfs/webhdfstest"
	"github.com/krakenctl/krakenctl/server/client"
)

// TestOriginThreeBackends runs one origin process whose config routes three namespaces to
// three stores: gcs/* to fake-gcs-server, azure/* to Azurite (both separate processes that
// scripts/test.sh starts) and hdfs/* to the WebHDFS spec server (in this test process; no real
// HDFS can be installed here). It pushes one blob into each namespace, waits until each store
// holds it (read back through the backend package, byte for byte), kills the origin, wipes its
// store and starts it again, then pulls each blob through from its store.
func TestOriginThreeBackends(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	for _, v := range []string{"GCS_ENDPOINT", "GCS_BUCKET", "AZURE_BLOB_ENDPOINT", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_CONTAINER"} {
		if os.Getenv(v) == "" {
			requireReal(t, v+" is not set: start the stores with scripts/gcs-server.sh and scripts/azurite-server.sh (scripts/test.sh does)")
		}
	}
	hdfs := webhdfstest.Start(t, webhdfstest.Options{})
	prefix := fmt.Sprintf("e2e-three-%d", time.Now().UnixNano())
	gcsCfg := gcs.Config{Bucket: os.Getenv("GCS_BUCKET"), Endpoint: os.Getenv("GCS_ENDPOINT"), Prefix: prefix}
	azCfg := azure.Config{Account: os.Getenv("AZURE_STORAGE_ACCOUNT"), Container: os.Getenv("AZURE_CONTAINER"),
		Endpoint: os.Getenv("AZURE_BLOB_ENDPOINT"), AccountKeyEnv: "AZURE_STORAGE_KEY", Prefix: prefix}
	hdfsCfg := webhdfs.Config{Namenodes: hdfs.NamenodeURLs(), Root: "/" + prefix, UserName: "krakenctl"}

	dir := t.TempDir()
	addr := freeAddr(t)
	storeDir := filepath.Join(dir, "origin")
	cfg := filepath.Join(dir, "origin.yaml")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, `listen: %s
admin_listen: 127.0.0.1:0
store:
  dir: %s
backends:
  - namespace: "gcs/.*"
    name: gcs-store
    gcs: {bucket: %q, endpoint: %q, prefix: %q}
  - namespace: "azure/.*"
    name: azure-store
    azure: {account: %q, container: %q, endpoint: %q, account_key_env: AZURE_STORAGE_KEY, prefix: %q}
  - namespace: "hdfs/.*"
    name: hdfs-store
    webhdfs: {namenodes: [%q], root: %q, user_name: krakenctl}
writeback:
  retry_initial: 100ms
  retry_max: 1s
`, addr, storeDir, gcsCfg.Bucket, gcsCfg.Endpoint, prefix, azCfg.Account, azCfg.Container, azCfg.Endpoint, prefix,
		hdfsCfg.Namenodes[0], hdfsCfg.Root), 0o644))
	logf, err := os.Create(filepath.Join(dir, "origin.log"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = logf.Close() })
	p := originProc(t, addr, cfg, logf)
	p.start()
	t.Cleanup(p.kill)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("origin log (last 8 KiB):\n%s", tail(b, 8<<10))
		}
	})

	ctx := t.Context()
	stores := map[string]backend.Backend{}
	g, err := gcs.New(ctx, gcsCfg)
	require.NoError(t, err)
	stores["gcs/app"] = g
	az, err := azure.New(azCfg)
	require.NoError(t, err)
	stores["azure/app"] = az
	hd, err := webhdfs.New(hdfsCfg)
	require.NoError(t, err)
	stores["hdfs/app"] = hd

	o := client.NewOrigin(addr, &http.Client{Timeout: time.Minute})
	blobs := map[string][]byte{}
	for ns := range stores {
		data := make([]byte, 3<<20+17) // over one chunk or block of no store: the plain path
		_, err := rand.Read(data)
		require.NoError(t, err)
		blobs[ns] = data
		require.NoError(t, o.Upload(ctx, ns, digest.FromBytes(data), bytes.NewReader(data), int64(len(data))), "push into %s", ns)
	}
	for ns, st := range stores {
		d := digest.FromBytes(blobs[ns])
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			var buf bytes.Buffer
			err := st.Download(ctx, ns, d.Encoded(), &buf)
			assert.NoError(c, err)
			assert.True(c, bytes.Equal(buf.Bytes(), blobs[ns]), "the store's copy in %s is the pushed blob", ns)
		}, 60*time.Second, 100*time.Millisecond, "write-back into %s", ns)
	}

	p.kill()
	require.NoError(t, os.RemoveAll(storeDir))
	p.start()
	for ns, data := range blobs {
		d := digest.FromBytes(data)
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		rc, _, err := o.Open(pctx, ns, d, 0)
		require.NoError(t, err, "pull %s through from its store", ns)
		got, err := io.ReadAll(rc)
		_ = rc.Close()
		cancel()
		require.NoError(t, err, "pull %s through from its store", ns)
		require.True(t, bytes.Equal(got, data), "%s pulled through whole", ns)
	}
}
