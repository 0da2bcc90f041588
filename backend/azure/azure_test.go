package azure_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/azure"
	"github.com/krakenctl/krakenctl/backend/backendtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Tests against Azurite, a real Blob service, configured the way Azure's tools are. CI
// (scripts/test.sh) starts it with scripts/azurite-server.sh, exports these variables and sets
// KRAKENCTL_REQUIRE_REAL_SERVERS=1, which turns the skip into a failure.

type realServer struct {
	endpoint, account, key, container string
}

func requireReal(t *testing.T) realServer {
	t.Helper()
	r := realServer{
		endpoint:  os.Getenv("AZURE_BLOB_ENDPOINT"),
		account:   os.Getenv("AZURE_STORAGE_ACCOUNT"),
		key:       os.Getenv("AZURE_STORAGE_KEY"),
		container: os.Getenv("AZURE_CONTAINER"),
	}
	if r.endpoint == "" {
		msg := "AZURE_BLOB_ENDPOINT is not set; start Azurite with `eval \"$(scripts/azurite-server.sh start 19400 krakenctl-test)\"` " +
			"(it exports AZURE_BLOB_ENDPOINT, AZURE_STORAGE_ACCOUNT, AZURE_STORAGE_KEY, AZURE_CONTAINER)"
		if os.Getenv("KRAKENCTL_REQUIRE_REAL_SERVERS") == "1" {
			t.Fatal(msg + " (KRAKENCTL_REQUIRE_REAL_SERVERS=1 forbids skipping)")
		}
		t.Skip(msg)
	}
	for k, v := range map[string]string{"AZURE_STORAGE_ACCOUNT": r.account, "AZURE_STORAGE_KEY": r.key, "AZURE_CONTAINER": r.container} {
		if v == "" {
			t.Fatalf("AZURE_BLOB_ENDPOINT is set but %s is not", k)
		}
	}
	return r
}

// config is a shared-key config for the real server, the key read from AZURE_STORAGE_KEY, with
// the smallest block size so the conformance suite's larger objects go through staged blocks.
func (r realServer) config(t *testing.T) azure.Config {
	return azure.Config{
		Account:       r.account,
		Container:     r.container,
		Endpoint:      r.endpoint,
		AccountKeyEnv: "AZURE_STORAGE_KEY",
		Prefix:        randomPrefix(t),
		BlockSize:     azure.MinBlockSize,
		Concurrency:   2,
	}
}

// raw is a client of the container that bypasses the backend.
func (r realServer) raw(t *testing.T) *container.Client {
	t.Helper()
	cred, err := container.NewSharedKeyCredential(r.account, r.key)
	require.NoError(t, err)
	c, err := container.NewClientWithSharedKeyCredential(r.endpoint+"/"+r.container, cred,
		&container.ClientOptions{ClientOptions: policyNoKeepAlive()})
	require.NoError(t, err)
	return c
}

func randomPrefix(t *testing.T) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "krakenctl-test-" + hex.EncodeToString(b[:])
}

func newBackend(t *testing.T, cfg azure.Config) *azure.Backend {
	t.Helper()
	b, err := azure.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

// rawNames lists every blob name under prefix, bypassing the backend.
func rawNames(ctx context.Context, t *testing.T, c *container.Client, prefix string) []string {
	t.Helper()
	var names []string
	pager := c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &prefix})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		require.NoError(t, err)
		for _, item := range page.Segment.BlobItems {
			names = append(names, *item.Name)
		}
	}
	return names
}

// deleteAll removes the blobs a test left under prefix, so repeated runs do not fill the
// emulator's storage.
func deleteAll(t *testing.T, c *container.Client, prefix string) {
	ctx := context.Background() // t.Context is already cancelled when cleanups run
	for _, name := range rawNames(ctx, t, c, prefix) {
		if _, err := c.NewBlobClient(name).Delete(ctx, nil); err != nil {
			t.Errorf("clean up test blob %s: %v", name, err)
			return
		}
	}
}

func TestConformanceSharedKey(t *testing.T) {
	r := requireReal(t)
	cfg := r.config(t)
	t.Cleanup(func() { deleteAll(t, r.raw(t), cfg.Prefix+"/") })
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b := newBackend(t, cfg)
		require.NoError(t, b.Check(t.Context()))
		return b
	})
}

// TestConformanceSAS runs the suite with a container SAS (generated from the account key with
// the SDK's sas package) read from a file, as a deployment that is given only a SAS would.
func TestConformanceSAS(t *testing.T) {
	r := requireReal(t)
	file := sasFile(t, r, &sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true})
	cfg := r.config(t)
	cfg.AccountKeyEnv, cfg.SASTokenFile = "", file
	t.Cleanup(func() { deleteAll(t, r.raw(t), cfg.Prefix+"/") })
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return newBackend(t, cfg)
	})
}

// TestReadOnlySAS checks that a SAS without write permission is refused as access denied, and
// still lists.
func TestReadOnlySAS(t *testing.T) {
	t.Parallel()
	r := requireReal(t)
	cfg := r.config(t)
	cfg.AccountKeyEnv, cfg.SASTokenFile = "", sasFile(t, r, &sas.ContainerPermissions{Read: true, List: true})
	b := newBackend(t, cfg)
	err := b.Upload(t.Context(), "ns", "x", strings.NewReader("x"), 1)
	require.ErrorIs(t, err, azure.ErrAccessDenied)
	_, err = b.List(t.Context(), "ns", "")
	require.NoError(t, err)
}

// sasFile writes a container SAS with perms, signed with the account key by the SDK's sas
// package, to a file and returns its path.
func sasFile(t *testing.T, r realServer, perms *sas.ContainerPermissions) string {
	t.Helper()
	cred, err := container.NewSharedKeyCredential(r.account, r.key)
	require.NoError(t, err)
	q, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		ExpiryTime:    time.Now().Add(2 * time.Hour).UTC(),
		ContainerName: r.container,
		Permissions:   perms.String(),
	}.SignWithSharedKey(cred)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "sas")
	require.NoError(t, os.WriteFile(file, []byte("?"+q.Encode()+"\n"), 0o600))
	return file
}

// TestKeyFileAndLayout reads the key from a file, as docs/origin.md shows, and checks the
// blob names the backend writes and that List sees only its own namespace's level.
func TestKeyFileAndLayout(t *testing.T) {
	t.Parallel()
	r := requireReal(t)
	keyFile := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(keyFile, []byte(r.key+"\n"), 0o600))
	cfg := r.config(t)
	cfg.AccountKeyEnv, cfg.AccountKeyFile = "", keyFile
	raw := r.raw(t)
	t.Cleanup(func() { deleteAll(t, raw, cfg.Prefix+"/") })
	b := newBackend(t, cfg)
	ctx := t.Context()

	require.NoError(t, b.Upload(ctx, "library", "ubuntu", strings.NewReader("a"), 1))
	require.NoError(t, b.Upload(ctx, "library/ubuntu", "abc", strings.NewReader("b"), 1))
	require.Equal(t, []string{cfg.Prefix + "/library/_objects/ubuntu", cfg.Prefix + "/library/ubuntu/_objects/abc"},
		rawNames(ctx, t, raw, cfg.Prefix+"/"))

	// Blobs outside the layout, or with names no object can have, are not listed.
	for _, name := range []string{"library/_objects/sub/x", "library/_objects/a~b", "library/stray"} {
		_, err := raw.NewBlockBlobClient(cfg.Prefix+"/"+name).UploadBuffer(ctx, []byte("x"), nil)
		require.NoError(t, err)
	}
	names, err := b.List(ctx, "library", "")
	require.NoError(t, err)
	require.Equal(t, []string{"ubuntu"}, names)

	// Stat reports the service's Last-Modified.
	info, err := b.Stat(ctx, "library", "ubuntu")
	require.NoError(t, err)
	props, err := raw.NewBlobClient(cfg.Prefix+"/library/_objects/ubuntu").GetProperties(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, int64(1), info.Size)
	require.False(t, info.ModTime.IsZero())
	require.True(t, props.LastModified.Equal(info.ModTime), "ModTime %v, Last-Modified %v", info.ModTime, *props.LastModified)
}

// requests counts the Blob service requests passing through a proxy to the real server.
type requests struct {
	mu                              sync.Mutex
	putBlob, putBlock, putBlockList int
}

func (c *requests) snapshot() requests {
	c.mu.Lock()
	defer c.mu.Unlock()
	return requests{putBlob: c.putBlob, putBlock: c.putBlock, putBlockList: c.putBlockList}
}

func (c *requests) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putBlob, c.putBlock, c.putBlockList = 0, 0, 0
}

// proxy puts a counting reverse proxy in front of the real server. The shared-key signature
// covers the path, not the host, so requests signed for the proxy are valid upstream.
func (c *requests) proxy(t *testing.T, endpoint string) string {
	t.Helper()
	up, err := url.Parse(endpoint)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: up.Scheme, Host: up.Host})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			c.mu.Lock()
			switch r.URL.Query().Get("comp") {
			case "block":
				c.putBlock++
			case "blocklist":
				c.putBlockList++
			case "":
				c.putBlob++
			}
			c.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + up.Path
}

// TestStagedBlocks checks which requests carry an upload: one Put Blob up to block_size bytes,
// staged blocks and one commit above it, and no commit when the reader fails or is short.
func TestStagedBlocks(t *testing.T) {
	t.Parallel()
	r := requireReal(t)
	var c requests
	cfg := r.config(t)
	cfg.Endpoint = c.proxy(t, r.endpoint)
	t.Cleanup(func() { deleteAll(t, r.raw(t), cfg.Prefix+"/") })
	b := newBackend(t, cfg)
	ctx := t.Context()

	data := bytes.Repeat([]byte("0123456789abcdef"), (3<<20+100)/16) // 3 MiB + 96: four blocks
	require.NoError(t, b.Upload(ctx, "ns", "big", bytes.NewReader(data), int64(len(data))))
	require.Equal(t, requests{putBlock: 4, putBlockList: 1}, c.snapshot())
	requireContent(t, b, "ns", "big", data)

	// Exactly one block's worth, of known size: one Put Blob.
	c.reset()
	require.NoError(t, b.Upload(ctx, "ns", "one", bytes.NewReader(data[:azure.MinBlockSize]), azure.MinBlockSize))
	require.Equal(t, requests{putBlob: 1}, c.snapshot())
	requireContent(t, b, "ns", "one", data[:azure.MinBlockSize])

	// Unknown size, ending at a block boundary: two blocks, no empty third.
	c.reset()
	two := data[:2*azure.MinBlockSize]
	require.NoError(t, b.Upload(ctx, "ns", "two", iotest.OneByteReader(bytes.NewReader(two)), -1))
	require.Equal(t, requests{putBlock: 2, putBlockList: 1}, c.snapshot())
	requireContent(t, b, "ns", "two", two)

	// A reader failing after two blocks, and one shorter than declared: no commit, and the
	// previous blob is intact.
	c.reset()
	err := b.Upload(ctx, "ns", "big", io.MultiReader(bytes.NewReader(data[:2<<20+1]), iotest.ErrReader(errors.New("boom"))), -1)
	require.ErrorContains(t, err, "boom")
	err = b.Upload(ctx, "ns", "big", bytes.NewReader(data[:3<<20]), int64(len(data)))
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	err = b.Upload(ctx, "ns", "big", bytes.NewReader(data), int64(len(data)-1))
	require.Error(t, err)
	got := c.snapshot()
	require.Zero(t, got.putBlockList)
	require.Zero(t, got.putBlob)
	require.NotZero(t, got.putBlock)
	requireContent(t, b, "ns", "big", data)
}

func requireContent(t *testing.T, b backend.Backend, ns, name string, want []byte) {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, b.Download(t.Context(), ns, name, &buf))
	require.True(t, bytes.Equal(want, buf.Bytes()), "%s/%s: got %d bytes, want %d", ns, name, buf.Len(), len(want))
}

func TestWrongKeyReal(t *testing.T) {
	t.Parallel()
	r := requireReal(t)
	keyFile := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(keyFile, []byte("d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="), 0o600))
	cfg := r.config(t)
	cfg.AccountKeyEnv, cfg.AccountKeyFile = "", keyFile
	b := newBackend(t, cfg)
	requireAccessDenied(t, b, r.account, r.container)
}

func TestMissingContainerReal(t *testing.T) {
	t.Parallel()
	r := requireReal(t)
	cfg := r.config(t)
	cfg.Container = "krakenctl-no-such-container"
	b := newBackend(t, cfg)
	ctx := t.Context()
	err := b.Check(ctx)
	require.ErrorIs(t, err, azure.ErrNoContainer)
	require.ErrorContains(t, err, "krakenctl-no-such-container")
	require.ErrorContains(t, err, r.account)
	var buf bytes.Buffer
	err = b.Download(ctx, "ns", "x", &buf)
	require.ErrorIs(t, err, azure.ErrNoContainer)
	require.NotErrorIs(t, err, backend.ErrNotFound)
	_, err = b.List(ctx, "ns", "")
	require.ErrorIs(t, err, azure.ErrNoContainer)
	require.ErrorIs(t, b.Upload(ctx, "ns", "x", strings.NewReader("x"), 1), azure.ErrNoContainer)
	// Not "this blob does not exist", which an origin would remember.
	_, err = b.Stat(ctx, "ns", "x")
	require.ErrorIs(t, err, azure.ErrNoContainer)
	require.NotErrorIs(t, err, backend.ErrNotFound)
	err = b.Delete(ctx, "ns", "x")
	require.ErrorIs(t, err, azure.ErrNoContainer)
	require.NotErrorIs(t, err, backend.ErrNotFound)
}

func requireAccessDenied(t *testing.T, b *azure.Backend, account, container string) {
	t.Helper()
	ctx := t.Context()
	_, err := b.Stat(ctx, "ns", "x")
	require.ErrorIs(t, err, azure.ErrAccessDenied)
	require.NotErrorIs(t, err, backend.ErrNotFound)
	require.ErrorContains(t, err, "account "+account)
	require.ErrorContains(t, err, "container "+container)
	var buf bytes.Buffer
	err = b.Download(ctx, "ns", "x", &buf)
	require.ErrorIs(t, err, azure.ErrAccessDenied)
	require.Zero(t, buf.Len())
	require.ErrorIs(t, b.Upload(ctx, "ns", "x", strings.NewReader("x"), 1), azure.ErrAccessDenied)
	_, err = b.List(ctx, "ns", "")
	require.ErrorIs(t, err, azure.ErrAccessDenied)
	require.ErrorIs(t, b.Delete(ctx, "ns", "x"), azure.ErrAccessDenied)
	require.ErrorIs(t, b.Check(ctx), azure.ErrAccessDenied)
}

// policyNoKeepAlive is client options whose connections end with each request, so goleak
// finds no idle connection goroutines of the raw clients at exit.
func policyNoKeepAlive() (o azcore.ClientOptions) {
	o.Transport = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	return o
}

// Interface guard: the backend deletes (garbage collection needs it).
var _ backend.Deleter = (*azure.Backend)(nil)
