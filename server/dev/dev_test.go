package dev_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/dev"
	"github.com/krakenctl/krakenctl/server/dev/devtest"
	"github.com/krakenctl/krakenctl/server/pki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, tagstoretest.IgnoreLeftovers())
}

// httpClient returns a client whose idle connections are closed when the test ends.
func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// reply is an answer whose body send has read and closed: its status and body.
type reply struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

// send makes a request with the test's context; contentType, when set, is both the body's type
// and the one accepted.
func send(t *testing.T, hc *http.Client, method, url, contentType string, body []byte) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Accept", contentType)
	}
	resp, err := hc.Do(req)
	require.NoError(t, err)
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return reply{StatusCode: resp.StatusCode, Header: resp.Header, Body: got}
}

func randomBlob(t *testing.T, n int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b, digest.FromBytes(b)
}

// run runs c until the test ends and returns once it is ready.
func run(t *testing.T, c *dev.Cluster) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	stopped := false
	var runErr error
	stop = func() error {
		if !stopped {
			cancel()
			runErr, stopped = <-errc, true
		}
		return runErr
	}
	t.Cleanup(func() { require.NoError(t, stop()) })
	select {
	case <-c.Ready():
	case err := <-errc:
		stopped, runErr = true, err
		t.Fatalf("dev cluster stopped before it was ready: %v", err)
	}
	return stop
}

func TestPushPullThroughCluster(t *testing.T) {
	t.Parallel()
	c := devtest.Start(t, 3)
	addrs := c.Endpoints()
	require.Len(t, addrs, 3)
	cl := client.NewCluster(addrs, httpClient(t))

	st, err := cl.Ring(t.Context(), "")
	require.NoError(t, err)
	require.Equal(t, 3, st.Replicas)
	var members []string
	for _, m := range st.Members {
		members = append(members, m.Addr)
	}
	require.ElementsMatch(t, addrs, members)

	data, d := randomBlob(t, 5<<20)
	res, err := cl.Push(t.Context(), "dev-test", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{ChunkSize: 1 << 20})
	require.NoError(t, err)
	require.Equal(t, d, res.Digest)
	require.Len(t, res.Owners, 3, "each blob is on min(3, N) origins")

	var got bytes.Buffer
	n, err := cl.Pull(t.Context(), "dev-test", d, &got, nil)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), n)
	require.True(t, bytes.Equal(data, got.Bytes()), "pulled bytes differ from pushed bytes")

	// Every origin serves it, owner or not.
	for _, a := range addrs {
		size, err := cl.Origin(a).Stat(t.Context(), "dev-test", d)
		require.NoError(t, err, a)
		require.Equal(t, int64(len(data)), size)
	}
}

func TestOneOriginHoldsEverything(t *testing.T) {
	t.Parallel()
	c := devtest.Start(t, 1)
	require.Equal(t, 1, c.Replicas())
	cl := client.NewCluster(c.Endpoints(), httpClient(t))
	data, d := randomBlob(t, 1000)
	res, err := cl.Push(t.Context(), "ns", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	require.Equal(t, c.Endpoints(), res.Owners)
}

func TestEndpointsFileWrittenWhenReadyAndRemovedOnExit(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "state", "endpoints.yaml")
	c, err := dev.New(dev.Config{Origins: 2, Dir: t.TempDir(), EndpointsFile: file}, dev.Deps{})
	require.NoError(t, err)
	_, err = os.Stat(file)
	require.ErrorIs(t, err, fs.ErrNotExist, "the file appears only once the origins are ready")

	stop := run(t, c)
	e, err := api.ReadEndpoints(file)
	require.NoError(t, err)
	require.Equal(t, c.Endpoints(), e.Origins)

	require.NoError(t, stop())
	_, err = os.Stat(file)
	require.ErrorIs(t, err, fs.ErrNotExist, "the file is removed on exit")
}

func TestExitLeavesAnotherClustersEndpointsFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	c, err := dev.New(dev.Config{Origins: 1, Dir: t.TempDir(), EndpointsFile: file}, dev.Deps{})
	require.NoError(t, err)
	stop := run(t, c)
	other := api.Endpoints{Origins: []string{"127.0.0.1:1"}}
	require.NoError(t, api.WriteEndpoints(file, other))
	require.NoError(t, stop())
	e, err := api.ReadEndpoints(file)
	require.NoError(t, err, "a file written by someone else since must survive")
	require.Equal(t, other, e)
}

func TestDirInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, err := dev.New(dev.Config{Origins: 1, Dir: dir}, dev.Deps{})
	require.NoError(t, err)

	_, err = dev.New(dev.Config{Origins: 1, Dir: dir}, dev.Deps{})
	require.ErrorIs(t, err, dev.ErrDirInUse)
	require.ErrorContains(t, err, "krakenctl dev up")

	require.NoError(t, c.Close())
	c2, err := dev.New(dev.Config{Origins: 1, Dir: dir}, dev.Deps{})
	require.NoError(t, err, "Close releases the directory")
	require.NoError(t, c2.Close())
}

func TestRunAfterCloseFails(t *testing.T) {
	t.Parallel()
	c, err := dev.New(dev.Config{Origins: 1, Dir: t.TempDir()}, dev.Deps{})
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.ErrorIs(t, c.Run(t.Context()), dev.ErrAlreadyRun)
	require.NoError(t, c.Close(), "a second Close does nothing")
}

func TestPortInUseReleasesEverything(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ln.Close()) })
	port := ln.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()

	_, err = dev.New(dev.Config{Origins: 1, Dir: dir, Port: port}, dev.Deps{})
	require.ErrorIs(t, err, syscall.EADDRINUSE)
	require.ErrorContains(t, err, "127.0.0.1:"+strconv.Itoa(port))

	c, err := dev.New(dev.Config{Origins: 1, Dir: dir}, dev.Deps{})
	require.NoError(t, err, "a failed New leaves the directory unlocked")
	require.NoError(t, c.Close())
}

func TestConsecutivePorts(t *testing.T) {
	t.Parallel()
	// Find three free consecutive ports; other processes may take ports meanwhile, so retry.
	for attempt := 0; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		base := ln.Addr().(*net.TCPAddr).Port
		require.NoError(t, ln.Close())
		if base+2 > 65535 {
			continue
		}
		c, err := dev.New(dev.Config{Origins: 3, Dir: t.TempDir(), Port: base}, dev.Deps{})
		if errors.Is(err, syscall.EADDRINUSE) && attempt < 20 {
			continue
		}
		require.NoError(t, err)
		want := []string{
			fmt.Sprintf("127.0.0.1:%d", base), fmt.Sprintf("127.0.0.1:%d", base+1), fmt.Sprintf("127.0.0.1:%d", base+2),
		}
		require.Equal(t, want, c.Endpoints())
		require.NoError(t, c.Close())
		return
	}
}

func TestBlobsSurviveRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hc := httpClient(t)
	data, d := randomBlob(t, 300<<10)

	c, err := dev.New(dev.Config{Origins: 3, Dir: dir}, dev.Deps{})
	require.NoError(t, err)
	stop := run(t, c)
	_, err = client.NewCluster(c.Endpoints(), hc).Push(t.Context(), "ns", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	require.NoError(t, stop())

	// Ephemeral ports: the restarted origins have new addresses, and still find the blob.
	c2, err := dev.New(dev.Config{Origins: 3, Dir: dir}, dev.Deps{})
	require.NoError(t, err)
	run(t, c2)
	var got bytes.Buffer
	_, err = client.NewCluster(c2.Endpoints(), hc).Pull(t.Context(), "ns", d, &got, nil)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got.Bytes()))
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  dev.Config
		want string
	}{
		{"negative origins", dev.Config{Origins: -1, Dir: "d"}, "origins must be between 1 and 64, got -1"},
		{"too many origins", dev.Config{Origins: 65, Dir: "d"}, "origins must be between 1 and 64, got 65"},
		{"no dir", dev.Config{Origins: 1}, "dir is required"},
		{"negative port", dev.Config{Origins: 1, Dir: "d", Port: -1}, "ports must not be negative, got -1 and 16000"},
		{"port out of range", dev.Config{Origins: 1, Dir: "d", Port: 70000}, "leaves no room for the ports up to 70400"},
		{"no room for the proxy", dev.Config{Origins: 1, Dir: "d", Port: 65200}, "leaves no room for the ports up to 65600"},
		{"negative agent port", dev.Config{Origins: 1, Dir: "d", AgentPort: -1}, "ports must not be negative, got 0 and -1"},
		{"no room for agents", dev.Config{Origins: 1, Dir: "d", Port: 15000, Agents: 10, AgentPort: 65500}, "agent port 65500 leaves no room for 10 agents"},
		// The tracker would take port 16000, the first agent's.
		{"agents inside the plan", dev.Config{Origins: 1, Dir: "d", Port: 15700, Agents: 1}, "agent ports 16000-16002 overlap ports 15700-16100"},
		{"the plan inside the agents", dev.Config{Origins: 1, Dir: "d", Port: 16015, Agents: 3}, "agent ports 16000-16022 overlap ports 16015-16415"},
		{"negative health interval", dev.Config{Origins: 1, Dir: "d", HealthInterval: -1}, "health interval must not be negative"},
		{"proxy without build-index", dev.Config{Origins: 1, Dir: "d", Proxy: true}, "the proxy needs the build-index"},
		{"auth without tls", dev.Config{Origins: 1, Dir: "d", BuildIndex: true, Proxy: true, Auth: true}, "auth needs TLS and the proxy"},
		{"auth without proxy", dev.Config{Origins: 1, Dir: "d", BuildIndex: true, TLS: true, Auth: true}, "auth needs TLS and the proxy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := dev.New(tt.cfg, dev.Deps{})
			require.ErrorIs(t, err, dev.ErrInvalidConfig)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// With agents, a blob pushed to the origins is pulled through each agent from the swarm the
// origins seed, and the endpoints file names the tracker and the agents.
func TestPullThroughAgents(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	c, err := dev.New(dev.Config{Origins: 2, Agents: 2, Dir: t.TempDir(), EndpointsFile: file}, dev.Deps{})
	require.NoError(t, err)
	run(t, c)
	require.Len(t, c.Agents(), 2)
	require.NotEmpty(t, c.TrackerAddr())
	e, err := api.ReadEndpoints(file)
	require.NoError(t, err)
	require.Equal(t, c.Agents(), e.Agents)
	require.Equal(t, []string{c.TrackerAddr()}, e.Trackers)

	// Every role's admin listener is in the file, apart from its data API, and serves the
	// role's metrics.
	hc := httpClient(t)
	require.NotNil(t, e.Admin)
	require.Equal(t, c.Addrs().Admin, e.Admin)
	require.Len(t, e.Admin.Origins, 2)
	require.Len(t, e.Admin.Agents, 2)
	require.Len(t, e.Admin.Trackers, 1)
	require.Empty(t, e.Admin.Proxy)
	for _, a := range slices.Concat(e.Admin.Origins, e.Admin.Agents, e.Admin.Trackers) {
		require.NotContains(t, slices.Concat(e.Origins, e.Agents, e.Trackers), a)
		resp := send(t, hc, http.MethodGet, "http://"+a+"/metrics", "", nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, a)
		require.Contains(t, string(resp.Body), "krakenctl_", a)
	}

	data, d := randomBlob(t, 3<<20+5)
	_, err = client.NewCluster(c.Endpoints(), hc).Push(t.Context(), "dev-test", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	for _, a := range c.Agents() {
		var got bytes.Buffer
		_, err := client.NewAgent(a, hc).Pull(t.Context(), "dev-test", d, &got, nil)
		require.NoError(t, err, a)
		require.True(t, bytes.Equal(data, got.Bytes()), "agent %s returned other bytes", a)
	}
}

func TestAgentsOutOfRange(t *testing.T) {
	_, err := dev.New(dev.Config{Origins: 1, Agents: dev.MaxAgents + 1, Dir: t.TempDir()}, dev.Deps{})
	require.ErrorIs(t, err, dev.ErrInvalidConfig)
	require.ErrorContains(t, err, "agents")
}

// With a build-index, a tag put on content the origins hold resolves, is listed in the
// endpoints file, and survives a restart of the whole cluster on other (ephemeral) ports.
func TestBuildIndexTagsSurviveRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	hc := httpClient(t)
	// A tag names a manifest: an empty index, made unique so runs do not share it.
	data := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"run":%q}}`, t.Name()+time.Now().String())
	d := digest.FromBytes(data)

	c, err := dev.New(dev.Config{Origins: 2, BuildIndex: true, Dir: dir, EndpointsFile: file}, dev.Deps{})
	require.NoError(t, err)
	stop := run(t, c)
	require.NotEmpty(t, c.BuildIndexAddr())
	e, err := api.ReadEndpoints(file)
	require.NoError(t, err)
	require.Equal(t, []string{c.BuildIndexAddr()}, e.BuildIndex)

	bi := client.NewBuildIndex(c.BuildIndexAddr(), hc)
	_, err = bi.PutTag(t.Context(), "dev/app", "v1", d)
	require.Error(t, err, "the build-index checks that the origins hold the tagged content")
	_, err = client.NewCluster(c.Endpoints(), hc).Push(t.Context(), "dev/app", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	_, err = bi.PutTag(t.Context(), "dev/app", "v1", d)
	require.NoError(t, err)
	require.NoError(t, stop())

	c2, err := dev.New(dev.Config{Origins: 2, BuildIndex: true, Dir: dir}, dev.Deps{})
	require.NoError(t, err)
	run(t, c2)
	require.NotEqual(t, c.BuildIndexAddr(), c2.BuildIndexAddr())
	tag, err := client.NewBuildIndex(c2.BuildIndexAddr(), hc).GetTag(t.Context(), "dev/app", "v1", false)
	require.NoError(t, err)
	require.Equal(t, d, tag.Digest)
}

// With the proxy, an image pushed with the distribution API is pulled through every agent: the
// proxy stores it on the origins and tags it on the build-index, the agents resolve the tag
// there and fetch the content through the swarm.
func TestImageThroughProxyAndAgents(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	c, err := dev.New(dev.Config{Origins: 2, Agents: 2, BuildIndex: true, Proxy: true, Dir: t.TempDir(), EndpointsFile: file}, dev.Deps{})
	require.NoError(t, err)
	run(t, c)
	e, err := api.ReadEndpoints(file)
	require.NoError(t, err)
	require.Equal(t, []string{c.ProxyAddr()}, e.Proxy)
	require.Equal(t, []string{c.BuildIndexAddr()}, e.BuildIndex)

	hc := httpClient(t)
	proxy := "http://" + c.ProxyAddr()
	push := func(b []byte) digest.Digest {
		d := digest.FromBytes(b)
		resp := send(t, hc, http.MethodPost, proxy+"/v2/dev/app/blobs/uploads/?digest="+d.String(), "application/octet-stream", b)
		require.Equal(t, http.StatusCreated, resp.StatusCode)
		return d
	}
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer, _ := randomBlob(t, 200<<10)
	const mt = "application/vnd.oci.image.manifest.v1+json"
	manifest := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`,
		mt, push(config), len(config), push(layer), len(layer))
	resp := send(t, hc, http.MethodPut, proxy+"/v2/dev/app/manifests/v1", mt, manifest)
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	for _, a := range c.Agents() {
		resp := send(t, hc, http.MethodGet, "http://"+a+"/v2/dev/app/manifests/v1", mt, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, a)
		require.Equal(t, manifest, resp.Body, "manifest through agent %s", a)
		resp = send(t, hc, http.MethodGet, "http://"+a+"/v2/dev/app/blobs/"+digest.FromBytes(layer).String(), "", nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, a)
		require.True(t, bytes.Equal(layer, resp.Body), "layer through agent %s", a)
	}
}

// With TLS every role serves TLS with a certificate from a CA made for the run, and the
// endpoints file names the CA and an admin's certificate, with which a client reaches every
// role; the build-index's certificate names its Raft server id. A restart makes a new CA and
// keeps the tags.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir, file := t.TempDir(), filepath.Join(t.TempDir(), "endpoints.yaml")
	cfg := dev.Config{Origins: 1, Agents: 1, BuildIndex: true, Proxy: true, TLS: true, Dir: dir, EndpointsFile: file}
	c, err := dev.New(cfg, dev.Deps{})
	require.NoError(t, err)
	stop := run(t, c)
	e, err := api.ReadEndpoints(file)
	require.NoError(t, err)
	require.Equal(t, &api.EndpointsTLS{
		CAFile:   filepath.Join(dir, dev.TLSDir, "ca.pem"),
		CertFile: filepath.Join(dir, dev.TLSDir, "admin.pem"),
		KeyFile:  filepath.Join(dir, dev.TLSDir, "admin-key.pem"),
	}, e.TLS)
	require.Equal(t, e, c.Addrs())
	ca1, err := os.ReadFile(e.TLS.CAFile)
	require.NoError(t, err)

	hc := tlsClient(t, e.TLS)
	caOnly := tlsClient(t, &api.EndpointsTLS{CAFile: e.TLS.CAFile})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+c.Endpoints()[0]+"/health", nil)
	require.NoError(t, err)
	_, err = caOnly.Do(req) //nolint:bodyclose // refused: there is no body
	require.Error(t, err, "an origin refuses a client without a certificate")
	// A tag names a manifest: an empty index, made unique so runs do not share it.
	data := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"run":%q}}`, t.Name()+time.Now().String())
	d := digest.FromBytes(data)
	_, err = client.NewCluster(c.Endpoints(), hc).Push(t.Context(), "dev/app", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	_, err = client.NewBuildIndex(c.BuildIndexAddr(), hc).PutTag(t.Context(), "dev/app", "v1", d)
	require.NoError(t, err)
	var got bytes.Buffer
	_, err = client.NewAgent(c.Agents()[0], hc).Pull(t.Context(), "dev/app", d, &got, nil)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got.Bytes()))
	resp := send(t, hc, http.MethodGet, "http://"+c.ProxyAddr()+"/v2/", "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	bi := peerName(t, e.TLS.CAFile, c.BuildIndexAddr())
	require.Equal(t, "dev", bi, "the build-index's certificate names its Raft server id")
	require.NoError(t, stop())

	c2, err := dev.New(cfg, dev.Deps{})
	require.NoError(t, err)
	run(t, c2)
	ca2, err := os.ReadFile(e.TLS.CAFile)
	require.NoError(t, err)
	require.NotEqual(t, ca1, ca2, "every run has a CA of its own")
	tag, err := client.NewBuildIndex(c2.BuildIndexAddr(), tlsClient(t, e.TLS)).GetTag(t.Context(), "dev/app", "v1", false)
	require.NoError(t, err)
	require.Equal(t, d, tag.Digest)
}

// tlsClient trusts the endpoints file's CA and presents its certificate, if it names one.
func tlsClient(t *testing.T, e *api.EndpointsTLS) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	if e.CertFile != "" {
		p, err := pki.Load(pki.Config{CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile})
		require.NoError(t, err)
		tr.DialTLSContext = p.Dialer(&net.Dialer{}).DialContext
	} else {
		tr.TLSClientConfig = &tls.Config{RootCAs: caPool(t, e.CAFile), MinVersion: tls.VersionTLS12}
	}
	t.Cleanup(tr.CloseIdleConnections)
	// The roles' addresses are written without a scheme; this client speaks TLS to them.
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.URL.Scheme = "https"
		return tr.RoundTrip(r)
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// peerName is the common name of the certificate the server at addr presents.
func peerName(t *testing.T, caFile, addr string) string {
	t.Helper()
	conn, err := (&tls.Dialer{Config: &tls.Config{RootCAs: caPool(t, caFile), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}).DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err)
	defer func() { require.NoError(t, conn.Close()) }()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName
}

func caPool(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	caPEM, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	return pool
}

// With Auth the proxy refuses anonymous callers and a wrong password with a Bearer challenge,
// and serves the user, with Basic credentials or a token from its token endpoint, and the
// admin's certificate; the login's files are the owner's alone, and the password outlives a
// restart while the token secret does not.
func TestAuth(t *testing.T) {
	t.Parallel()
	dir, file := t.TempDir(), filepath.Join(t.TempDir(), "endpoints.yaml")
	cfg := dev.Config{Origins: 1, BuildIndex: true, Proxy: true, TLS: true, Auth: true, Dir: dir, EndpointsFile: file}
	c, err := dev.New(cfg, dev.Deps{})
	require.NoError(t, err)
	creds := c.Credentials()
	require.Equal(t, dev.Username, creds.Username)
	require.GreaterOrEqual(t, len(creds.Password), dev.MinPasswordLen)
	require.Regexp(t, `^[!-~]+$`, creds.Password, "printable, no space")
	require.Equal(t, filepath.Join(dir, dev.AuthDir, "password"), creds.PasswordFile)
	pw, err := os.ReadFile(creds.PasswordFile)
	require.NoError(t, err)
	require.Equal(t, creds.Password, string(pw), "the file holds the password alone, for --password-stdin")
	st, err := os.Stat(filepath.Join(dir, dev.AuthDir))
	require.NoError(t, err)
	require.Equal(t, fs.ModeDir|0o700, st.Mode())
	for _, f := range []string{"password", "htpasswd", "token-secret"} {
		st, err := os.Stat(filepath.Join(dir, dev.AuthDir, f))
		require.NoError(t, err)
		require.Equal(t, fs.FileMode(0o600), st.Mode(), f)
	}
	htpasswd, err := os.ReadFile(filepath.Join(dir, dev.AuthDir, "htpasswd"))
	require.NoError(t, err)
	require.Regexp(t, `^dev:\$2a\$10\$\S+\n$`, string(htpasswd), "bcrypt, never the password")
	secret1, err := os.ReadFile(filepath.Join(dir, dev.AuthDir, "token-secret"))
	require.NoError(t, err)
	stop := run(t, c)

	e := c.Addrs()
	proxy := "https://" + c.ProxyAddr()
	caOnly := tlsClient(t, &api.EndpointsTLS{CAFile: e.TLS.CAFile})
	get := func(url string, setup func(*http.Request)) reply {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		require.NoError(t, err)
		if setup != nil {
			setup(req)
		}
		resp, err := caOnly.Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return reply{StatusCode: resp.StatusCode, Header: resp.Header, Body: body}
	}
	basic := func(user, pw string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(user, pw) }
	}

	resp := get(proxy+"/v2/", nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "anonymous")
	require.Contains(t, resp.Header.Get("WWW-Authenticate"), `Bearer realm="`+proxy+`/v2/token"`)
	resp = get(proxy+"/v2/dev/app/tags/list", nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "no anonymous pulls")
	require.Equal(t, http.StatusUnauthorized, get(proxy+"/v2/", basic(dev.Username, creds.Password+"x")).StatusCode, "a wrong password")
	require.Equal(t, http.StatusUnauthorized, get(proxy+"/v2/", basic("root", creds.Password)).StatusCode, "another user")
	require.Equal(t, http.StatusOK, get(proxy+"/v2/", basic(dev.Username, creds.Password)).StatusCode, "Basic credentials")

	// The token flow, as docker goes through it.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, proxy+"/v2/token?service=krakenctl&scope=repository:dev/app:pull,push,delete", nil)
	require.NoError(t, err)
	req.SetBasicAuth(dev.Username, creds.Password)
	tr, err := caOnly.Do(req)
	require.NoError(t, err)
	var tok struct{ Token string }
	require.NoError(t, json.NewDecoder(tr.Body).Decode(&tok))
	require.NoError(t, tr.Body.Close())
	require.Equal(t, http.StatusOK, tr.StatusCode)
	require.NotEmpty(t, tok.Token)
	bearer := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok.Token) }
	require.Equal(t, http.StatusOK, get(proxy+"/v2/dev/app/tags/list", bearer).StatusCode, "the token pulls")
	require.Equal(t, http.StatusUnauthorized, get(proxy+"/v2/dev/other/tags/list", bearer).StatusCode, "the token is for dev/app only")

	// The admin's certificate, which operator commands present, may do everything.
	require.Equal(t, http.StatusOK, send(t, tlsClient(t, e.TLS), http.MethodGet, proxy+"/v2/_catalog", "", nil).StatusCode)
	require.NoError(t, stop())

	c2, err := dev.New(cfg, dev.Deps{})
	require.NoError(t, err)
	require.Equal(t, creds, c2.Credentials(), "the password outlives a restart")
	secret2, err := os.ReadFile(filepath.Join(dir, dev.AuthDir, "token-secret"))
	require.NoError(t, err)
	require.NotEqual(t, secret1, secret2, "tokens of the last run are no good in this one")
	require.NoError(t, c2.Close())

	// A password file someone emptied is an error that says what to do, not a login nobody
	// can use.
	require.NoError(t, os.WriteFile(creds.PasswordFile, []byte("short\n"), 0o600))
	_, err = dev.New(cfg, dev.Deps{})
	require.ErrorContains(t, err, "delete the file for a new one")
}
