package auth

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/pki"
)

// TestMutualTLS serves the guard over real TLS with the cluster CA, verifying client
// certificates when given (the proxy's client_auth): a client with an admin certificate may
// delete without credentials, a component's certificate gets what rules grant its group, a
// client without a certificate must log in, and a certificate of another CA gets no further
// than the handshake.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := pki.NewCA("test cluster")
	require.NoError(t, err)
	srvCfg, err := ca.IssueFiles(dir, "proxy", pki.Leaf{Name: "proxy-1", Groups: []string{pki.GroupProxy}, Hosts: []string{"127.0.0.1"}})
	require.NoError(t, err)
	srvCfg.ClientAuth = pki.ClientAuthVerifyIfGiven
	prov, err := pki.Load(srvCfg)
	require.NoError(t, err)

	c := validConfig(t)
	g, err := New(c, Options{})
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	})))
	srv.TLS = prov.ServerConfig()
	srv.StartTLS()
	t.Cleanup(srv.Close)

	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca.CertPEM()))
	clientWith := func(ca *pki.CA, name string, groups ...string) *http.Client {
		tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if ca != nil {
			certPEM, keyPEM, err := ca.Issue(pki.Leaf{Name: name, Groups: groups})
			require.NoError(t, err)
			cert, err := tls.X509KeyPair(certPEM, keyPEM)
			require.NoError(t, err)
			tc.Certificates = []tls.Certificate{cert}
		}
		tr := &http.Transport{TLSClientConfig: tc, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	// send returns the status and challenge of one request.
	send := func(hc *http.Client, method, path string) (int, string, error) {
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
		require.NoError(t, err)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), nil
	}

	status, _, err := send(clientWith(ca, "ops", pki.GroupAdmin), http.MethodDelete, "/v2/secret/x/manifests/v1")
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, status, "an admin certificate may do everything")

	agent := clientWith(ca, "agent-7", pki.GroupAgent)
	status, _, err = send(agent, http.MethodGet, "/v2/infra/cache/manifests/v1")
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, status, "rules grant the agent group pull on infra/**")
	status, _, err = send(agent, http.MethodDelete, "/v2/infra/cache/manifests/v1")
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, status)

	status, challenge, err := send(clientWith(nil, ""), http.MethodDelete, "/v2/secret/x/manifests/v1")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, status)
	require.Equal(t, `Bearer realm="https://`+srv.Listener.Addr().String()+`/v2/token",service="krakenctl",scope="repository:secret/x:delete"`,
		challenge)

	stranger, err := pki.NewCA("another cluster")
	require.NoError(t, err)
	// Go's client offers only a certificate of a CA the server asks for, so this one is not
	// even sent: the caller is anonymous.
	status, _, err = send(clientWith(stranger, "ops", pki.GroupAdmin), http.MethodDelete, "/v2/secret/x/manifests/v1")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, status, "a certificate of another CA counts for nothing")
	// Forced on the server, it fails the handshake.
	forced := clientWith(stranger, "ops", pki.GroupAdmin)
	tc := forced.Transport.(*http.Transport).TLSClientConfig
	cert := tc.Certificates[0]
	tc.Certificates, tc.GetClientCertificate = nil, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	_, _, err = send(forced, http.MethodDelete, "/v2/secret/x/manifests/v1")
	require.Error(t, err)
}
