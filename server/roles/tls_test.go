package roles_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/admin"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/roles"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// TestStartWithTLS starts a tracker with a tls section: its API refuses a client without a
// cluster certificate and serves one with it; its admin listener answers probes without a
// certificate but keeps metrics for certificate holders and profiles for admins. A
// certificate that expired stops the start with an error naming the file.
func TestStartWithTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := pki.NewCA("test cluster")
	require.NoError(t, err)
	tc, err := ca.IssueFiles(dir, "tracker", pki.Leaf{Name: "tracker-1", Groups: []string{pki.GroupTracker}, Hosts: []string{"127.0.0.1"}})
	require.NoError(t, err)
	agentTLS, err := ca.IssueFiles(dir, "agent", pki.Leaf{Name: "agent-1", Groups: []string{pki.GroupAgent}})
	require.NoError(t, err)
	adminTLS, err := ca.IssueFiles(dir, "admin", pki.Leaf{Name: "ops", Groups: []string{pki.GroupAdmin}})
	require.NoError(t, err)

	r, err := roles.Lookup("tracker")
	require.NoError(t, err)
	api, adm := freeAddr(t), freeAddr(t)
	cfg := r.NewConfig()
	require.NoError(t, config.Unmarshal(fmt.Appendf(nil, "listen: %s\nadmin_listen: %s\norigins: [127.0.0.1:1]\ntls: {cert_file: %s, key_file: %s, ca_file: %s}\n",
		api, adm, tc.CertFile, tc.KeyFile, tc.CAFile), cfg))
	require.NoError(t, config.Check(cfg))
	srv, err := r.Start(t.Context(), cfg, roles.Env{Metrics: admin.NewRegistry()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	client := func(c *pki.Config) *http.Client {
		tr := &http.Transport{}
		if c != nil {
			p, err := pki.Load(*c)
			require.NoError(t, err)
			tr.DialTLSContext = p.Dialer(&net.Dialer{Timeout: 5 * time.Second}).DialContext
		} else {
			// Trusts the server, presents nothing: a stranger on the network.
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the stranger's side
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	status := func(hc *http.Client, url string) (int, error) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		require.NoError(t, err)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close() // only the status is asked for
		return resp.StatusCode, nil
	}
	agent, ops, stranger := client(&agentTLS), client(&adminTLS), client(nil)
	require.Eventually(t, func() bool {
		code, err := status(agent, "https://"+api+"/health")
		return err == nil && code == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond)

	_, err = status(stranger, "https://"+api+"/health")
	require.ErrorContains(t, err, "certificate required", "the API refuses a client without a cluster certificate")
	code, err := status(client(nil), "http://"+api+"/health")
	require.NoError(t, err)
	assert.Equal(t, http.StatusBadRequest, code, "no plain text on a TLS listener")

	for _, tc := range []struct {
		hc   *http.Client
		path string
		want int
	}{
		{stranger, "/health", http.StatusOK},
		{stranger, "/readyz", http.StatusOK},
		{stranger, "/metrics", http.StatusUnauthorized},
		{stranger, "/debug/pprof/", http.StatusUnauthorized},
		{agent, "/metrics", http.StatusOK},
		{agent, "/debug/pprof/", http.StatusForbidden},
		{ops, "/debug/pprof/", http.StatusOK},
	} {
		code, err := status(tc.hc, "https://"+adm+tc.path)
		require.NoError(t, err, tc.path)
		assert.Equal(t, tc.want, code, tc.path)
	}

	// The certificate's expiry is a metric, for an alert before it lapses.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+adm+"/metrics", nil)
	require.NoError(t, err)
	resp, err := agent.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, errors.Join(err, resp.Body.Close()))
	require.Contains(t, string(body), "krakenctl_tls_certificate_not_after_seconds")

	// An expired certificate: the role does not start, and the error says why.
	old, err := ca.IssueFiles(filepath.Join(dir), "old", pki.Leaf{Name: "tracker-old", Hosts: []string{"127.0.0.1"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	require.NoError(t, err)
	cfg2 := r.NewConfig()
	require.NoError(t, config.Unmarshal(fmt.Appendf(nil, "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\norigins: [127.0.0.1:1]\ntls: {cert_file: %s, key_file: %s, ca_file: %s}\n",
		old.CertFile, old.KeyFile, old.CAFile), cfg2))
	require.NoError(t, config.Check(cfg2))
	_, err = r.Start(t.Context(), cfg2, roles.Env{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `certificate "tracker-old" expired at`)
	assert.Contains(t, err.Error(), old.CertFile)
}

// TestWritesNeedTheRightGroup starts an origin and a tracker with TLS: a component with a
// cluster certificate but the wrong group (an agent uploading, a proxy announcing) is refused
// with 403 DENIED; the right group gets through to the handler.
func TestWritesNeedTheRightGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := pki.NewCA("test cluster")
	require.NoError(t, err)
	issue := func(name string, groups ...string) pki.Config {
		c, err := ca.IssueFiles(dir, name, pki.Leaf{Name: name, Groups: groups, Hosts: []string{"127.0.0.1"}})
		require.NoError(t, err)
		return c
	}
	start := func(role, yaml string) string {
		r, err := roles.Lookup(role)
		require.NoError(t, err)
		api := freeAddr(t)
		cfg := r.NewConfig()
		require.NoError(t, config.Unmarshal([]byte("listen: "+api+"\nadmin_listen: 127.0.0.1:0\n"+yaml), cfg))
		require.NoError(t, config.Check(cfg))
		srv, err := r.Start(t.Context(), cfg, roles.Env{})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
		return api
	}
	tlsYAML := func(c pki.Config) string {
		return fmt.Sprintf("tls: {cert_file: %s, key_file: %s, ca_file: %s}\n", c.CertFile, c.KeyFile, c.CAFile)
	}
	origin := start("origin", "store: {dir: "+filepath.Join(dir, "store")+"}\n"+tlsYAML(issue("origin-1", pki.GroupOrigin)))
	tracker := start("tracker", "origins: ["+origin+"]\nannounce: {allow_loopback: true}\n"+tlsYAML(issue("tracker-1", pki.GroupTracker)))

	client := func(c pki.Config) *http.Client {
		p, err := pki.Load(c)
		require.NoError(t, err)
		tr := &http.Transport{DialTLSContext: p.Dialer(&net.Dialer{Timeout: 5 * time.Second}).DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	agent, proxy := client(issue("agent-1", pki.GroupAgent)), client(issue("proxy-1", pki.GroupProxy))
	doBody := func(hc *http.Client, method, url, body string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
		require.NoError(t, err)
		var resp *http.Response
		require.Eventually(t, func() bool {
			resp, err = hc.Do(req) //nolint:bodyclose // closed below
			return err == nil
		}, 10*time.Second, 20*time.Millisecond)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, errors.Join(err, resp.Body.Close()))
		return resp.StatusCode, string(b)
	}
	do := func(hc *http.Client, method, url string) (int, string) { return doBody(hc, method, url, "{}") }

	code, body := do(agent, http.MethodPost, "https://"+origin+"/namespace/team%2Fapp/uploads")
	require.Equal(t, http.StatusForbidden, code, body)
	assert.Contains(t, body, "DENIED")
	assert.Contains(t, body, "agent-1")
	code, body = do(agent, http.MethodGet, "https://"+origin+"/namespace/team%2Fapp/blobs/"+digestOf("x"))
	assert.Equal(t, http.StatusNotFound, code, "an agent reads: %s", body)
	code, body = do(proxy, http.MethodPost, "https://"+origin+"/namespace/team%2Fapp/uploads")
	assert.Equal(t, http.StatusAccepted, code, "the proxy uploads: %s", body)

	code, body = do(proxy, http.MethodPost, "https://"+tracker+"/announce")
	require.Equal(t, http.StatusForbidden, code, body)
	assert.Contains(t, body, "proxy-1")
	code, body = do(agent, http.MethodPost, "https://"+tracker+"/announce")
	assert.NotEqual(t, http.StatusForbidden, code, "an agent announces (this body is malformed): %s", body)

	// An agent announces itself (its certificate names 127.0.0.1, where it connects from), under
	// a peer id bound to its certificate, and nobody else: a stolen agent certificate cannot aim
	// a swarm at another host, nor take another agent's peer id.
	announceAt := func(id wire.PeerID, addr string) string {
		return `{"namespace":"team/app","digest":"` + digestOf("x") + `","peer_id":"` + id.String() + `","addr":"` + addr + `"}`
	}
	code, body = doBody(agent, http.MethodPost, "https://"+tracker+"/announce", announceAt(wire.BoundPeerID("agent-1"), "127.0.0.1:16001"))
	assert.Equal(t, http.StatusOK, code, "an agent announces its own address: %s", body)
	code, body = doBody(agent, http.MethodPost, "https://"+tracker+"/announce", announceAt(wire.BoundPeerID("agent-2"), "127.0.0.1:16002"))
	assert.Equal(t, http.StatusForbidden, code, "an agent announces another's peer id: %s", body)
	assert.Contains(t, body, "not bound to the certificate of agent-1")
	code, body = doBody(agent, http.MethodPost, "https://"+tracker+"/announce", announceAt(wire.BoundPeerID("agent-1"), "192.0.2.1:22"))
	assert.Equal(t, http.StatusForbidden, code, "an agent announces another host: %s", body)
	assert.Contains(t, body, "agent-1 may announce only its own addresses")
}

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}
