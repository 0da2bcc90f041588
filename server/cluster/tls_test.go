package cluster_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/pki"
)

// caOnlyClient trusts the cluster CA and presents no certificate: docker, crane, a person with
// curl.
func caOnlyClient(t *testing.T, ca *pki.CA) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca.CertPEM()))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// serverIdentity is who the TLS server at addr says it is, verified against the CA.
func serverIdentity(t *testing.T, ca *pki.CA, addr string) (pki.Identity, []string) {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca.CertPEM()))
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err, "handshake with %s as localhost", addr)
	defer func() { require.NoError(t, conn.Close()) }()
	leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	return pki.Identity{Name: leaf.Subject.CommonName, Groups: leaf.Subject.Organization}, ips
}

// A cluster built with a CA runs every link over TLS, each member with a certificate of its
// own: members that only serve other components refuse a client without a certificate, agents
// and proxies serve one (docker has none), and every link between roles works — a blob pushed
// to the origins is pulled through every agent, a tag is checked against the origins, and an
// image pushed through the proxy resolves through an agent. An origin restarted comes back
// with TLS.
func TestWholeClusterTLS(t *testing.T) {
	t.Parallel()
	ctls := clustertest.TLS(t)
	c := clustertest.Start(t, cluster.Spec{
		Origins: 2, BuildIndexes: 1, Proxies: 1, Agents: 2, TLS: ctls,
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{})
	admin, stranger := c.Client(), caOnlyClient(t, ctls.CA)
	require.Equal(t, cluster.AdminName, mustLoad(t, c.AdminTLS()).Identity().Name)
	require.True(t, mustLoad(t, c.AdminTLS()).Identity().In(pki.GroupAdmin))

	for _, r := range roles {
		for i := range c.Len(r) {
			name := fmt.Sprintf("%s-%d", r, i)
			if r == cluster.BuildIndex {
				name = c.BuildIndex(i).Status().ID // its Raft server id
			}
			id, ips := serverIdentity(t, ctls.CA, c.Addr(r, i))
			require.Equal(t, pki.Identity{Name: name, Groups: []string{string(r)}}, id, "%s %d", r, i)
			require.Equal(t, []string{cluster.Host}, ips)
			adminID, _ := serverIdentity(t, ctls.CA, c.AdminAddr(r, i))
			require.Equal(t, id, adminID, "%s %d: its admin listener presents the same certificate", r, i)

			code, _ := get(t, stranger, "https://"+c.AdminAddr(r, i)+"/readyz")
			require.Equal(t, http.StatusOK, code, "probes need no certificate")
			code, body := get(t, admin, "http://"+c.AdminAddr(r, i)+"/metrics") // sent as https
			require.Equal(t, http.StatusOK, code)
			require.Contains(t, body, metricPrefix[r])

			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+c.Addr(r, i)+"/health", nil)
			require.NoError(t, err)
			resp, err := stranger.Do(req)
			if r == cluster.Agent || r == cluster.Proxy {
				require.NoError(t, err, "%s %d serves clients without a certificate", r, i)
				require.NoError(t, resp.Body.Close())
			} else {
				require.Error(t, err, "%s %d refuses a client without a certificate", r, i)
			}
		}
	}

	data, d := randomBlob(t, 1<<20+7)
	res, err := client.NewCluster(c.Addrs(cluster.Origin), admin).Push(t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	require.Len(t, res.Owners, 2)
	for _, a := range c.Addrs(cluster.Agent) {
		var got bytes.Buffer
		_, err := client.NewAgent("https://"+a, stranger).Pull(t.Context(), "team/app", d, &got, nil)
		require.NoError(t, err, a)
		require.True(t, bytes.Equal(data, got.Bytes()), "agent %s", a)
	}
	bi := client.NewBuildIndex(c.Addr(cluster.BuildIndex, 0), admin)
	_, err = bi.PutTag(t.Context(), "team/app", "v1", digest.FromString("not on the origins"))
	require.Error(t, err, "the build-index checks content on the cluster's origins")
	_, err = bi.PutTag(t.Context(), "team/app", "v1", d)
	require.ErrorContains(t, err, "MANIFEST_INVALID", "a tag names a manifest, not a layer")
	idx := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	_, err = client.NewCluster(c.Addrs(cluster.Origin), admin).Push(t.Context(), "team/app", digest.FromBytes(idx), bytes.NewReader(idx), int64(len(idx)), client.UploadOptions{})
	require.NoError(t, err)
	_, err = bi.PutTag(t.Context(), "team/app", "v1", digest.FromBytes(idx))
	require.NoError(t, err)

	// An image through the proxy (to the origins and the build-index), its tag resolved
	// through an agent (from the build-index), by a client without a certificate.
	proxy, agent := "https://"+c.Addr(cluster.Proxy, 0), "https://"+c.Addr(cluster.Agent, 1)
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}`)
	cd := digest.FromBytes(config)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, proxy+"/v2/team/img/blobs/uploads/?digest="+cd.String(), bytes.NewReader(config))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/octet-stream")
	requireStatus(t, stranger, req, http.StatusCreated)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(config))}, Layers: []ocispec.Descriptor{}}
	m.SchemaVersion = 2
	mb, err := json.Marshal(m)
	require.NoError(t, err)
	req, err = http.NewRequestWithContext(t.Context(), http.MethodPut, proxy+"/v2/team/img/manifests/v1", bytes.NewReader(mb))
	require.NoError(t, err)
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	requireStatus(t, stranger, req, http.StatusCreated)
	code, body := get(t, stranger, agent+"/v2/team/img/manifests/v1")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, string(mb), body)

	// A restarted origin is built with TLS again.
	require.NoError(t, c.Stop(cluster.Origin, 1))
	require.NoError(t, c.Restart(clustertest.Context(t), cluster.Origin, 1))
	require.NoError(t, c.WaitReady(clustertest.Context(t)))
	id, _ := serverIdentity(t, ctls.CA, c.Addr(cluster.Origin, 1))
	require.Equal(t, "origin-1", id.Name)
	size, err := client.NewOrigin(c.Addr(cluster.Origin, 1), admin).StatLocal(t.Context(), "team/app", d)
	require.NoError(t, err)
	require.EqualValues(t, len(data), size)
}

// A cluster with TLS refuses a shared client: it would present one certificate for every role.
func TestTLSSpec(t *testing.T) {
	t.Parallel()
	_, err := cluster.New(cluster.Spec{Dir: t.TempDir(), Origins: 1, TLS: clustertest.TLS(t)}, cluster.Deps{HTTPClient: &http.Client{}})
	require.ErrorIs(t, err, cluster.ErrInvalidSpec)
	require.ErrorContains(t, err, "shared HTTP client")
	_, err = cluster.New(cluster.Spec{Dir: t.TempDir(), Origins: 1, TLS: &cluster.TLS{}}, cluster.Deps{})
	require.ErrorIs(t, err, cluster.ErrInvalidSpec)
	require.ErrorContains(t, err, "tls needs a CA")
}

func mustLoad(t *testing.T, cfg pki.Config) *pki.Provider {
	t.Helper()
	p, err := pki.Load(cfg)
	require.NoError(t, err)
	return p
}

func requireStatus(t *testing.T, hc *http.Client, req *http.Request, want int) {
	t.Helper()
	resp, err := hc.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, want, resp.StatusCode, "%s %s: %s", req.Method, req.URL, body)
}

// Build-index nodes join the group over TLS, each with a certificate naming its Raft server
// id.
func TestBuildIndexGroupTLS(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs Raft elections")
	}
	ctls := clustertest.TLS(t)
	c := clustertest.Start(t, cluster.Spec{
		BuildIndexes: 3, TLS: ctls,
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{})
	leader, err := c.WaitLeader(clustertest.Context(t))
	require.NoError(t, err)
	require.Len(t, c.BuildIndex(leader).Status().Members, 3)
	for i := range 3 {
		id, _ := serverIdentity(t, ctls.CA, c.Addr(cluster.BuildIndex, i))
		require.Equal(t, fmt.Sprintf("bi-%d", i), id.Name)
	}
}
