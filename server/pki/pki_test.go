package pki_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/pki"
)

func newCA(t *testing.T, name string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(name)
	require.NoError(t, err)
	return ca
}

func issue(t *testing.T, ca *pki.CA, dir, base string, l pki.Leaf) pki.Config {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	c, err := ca.IssueFiles(dir, base, l)
	require.NoError(t, err)
	return c
}

func load(t *testing.T, c pki.Config) *pki.Provider {
	t.Helper()
	p, err := pki.Load(c)
	require.NoError(t, err)
	return p
}

// server serves, over TLS with p, the identity of each caller as the body.
func server(t *testing.T, p *pki.Provider) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pki.PeerIdentity(r.TLS)
		if !ok {
			_, _ = fmt.Fprint(w, "anonymous")
			return
		}
		_, _ = fmt.Fprintf(w, "%s %v", id.Name, id.Groups)
	}))
	srv.TLS = p.ServerConfig()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(p *pki.Provider, url string) (string, error) {
	tr := &http.Transport{}
	if p != nil {
		tr.DialTLSContext = p.Dialer(&net.Dialer{Timeout: 5 * time.Second}).DialContext
	}
	return getWith(tr, url)
}

func getWith(tr *http.Transport, url string) (string, error) {
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), errors.Join(err, resp.Body.Close())
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "cluster")
	srvP := load(t, issue(t, ca, dir, "origin", pki.Leaf{Name: "origin-1", Groups: []string{pki.GroupOrigin}, Hosts: []string{"127.0.0.1"}}))
	cliP := load(t, issue(t, ca, dir, "agent", pki.Leaf{Name: "agent-1", Groups: []string{pki.GroupAgent}}))
	url := server(t, srvP)

	body, err := get(cliP, url)
	require.NoError(t, err)
	assert.Equal(t, "agent-1 [agent]", body, "the server sees the client's verified identity")
	assert.Equal(t, pki.Identity{Name: "origin-1", Groups: []string{"origin"}}, srvP.Identity())

	// Without a client certificate the server refuses the handshake (client_auth: require).
	_, err = get(nil, url)
	require.Error(t, err)

	// A client from another CA is refused by the server.
	other := newCA(t, "elsewhere")
	foreign := load(t, issue(t, other, filepath.Join(dir, "other"), "agent", pki.Leaf{Name: "intruder", Groups: []string{pki.GroupAdmin}}))
	// The intruder does not check the server, so only the server's check can stop it.
	foreignCfg := foreign.ClientConfig()
	foreignCfg.InsecureSkipVerify = true //nolint:gosec // the attacker's side of the test
	_, err = getWith(&http.Transport{TLSClientConfig: foreignCfg}, url)
	require.Error(t, err, "a certificate from another CA gets nothing")

	// A server from another CA is refused by the client, with an error that says so.
	fsrv := load(t, issue(t, other, filepath.Join(dir, "other2"), "origin", pki.Leaf{Name: "fake-origin", Hosts: []string{"127.0.0.1"}}))
	_, err = get(cliP, server(t, fsrv))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `certificate "fake-origin" issued by "elsewhere", not by the cluster CA`)
}

func TestServerNameChecked(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "cluster")
	// A genuine cluster certificate, but for another host: a component must not accept a
	// peer's certificate in place of the one it dialled.
	srvP := load(t, issue(t, ca, dir, "origin", pki.Leaf{Name: "origin-2", Hosts: []string{"127.0.0.2"}}))
	cliP := load(t, issue(t, ca, dir, "agent", pki.Leaf{Name: "agent-1"}))
	_, err := get(cliP, server(t, srvP))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `certificate "origin-2" does not name 127.0.0.1 (its names: 127.0.0.2)`)

	// The same through a bare ClientConfig and tls.Dial, which takes the name from the address.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvP.ServerConfig())
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		if c, err := ln.Accept(); err == nil {
			_ = c.(*tls.Conn).HandshakeContext(t.Context())
			_ = c.Close()
		}
	}()
	c, err := (&tls.Dialer{Config: cliP.ClientConfig()}).DialContext(t.Context(), "tcp", ln.Addr().String())
	if err == nil {
		_ = c.Close()
	}
	require.Error(t, err)
}

func TestExpiredCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "cluster")
	past := pki.Leaf{Name: "old", Groups: []string{pki.GroupAgent}, Hosts: []string{"127.0.0.1"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}

	// A component refuses to start on an expired certificate, and says so.
	_, err := pki.Load(issue(t, ca, dir, "old", past))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `certificate "old" expired at`)

	// A client presenting an expired certificate is refused by the server.
	srvP := load(t, issue(t, ca, dir, "origin", pki.Leaf{Name: "origin-1", Hosts: []string{"127.0.0.1"}}))
	url := server(t, srvP)
	certPEM, keyPEM, err := ca.Issue(past)
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	_, err = getWith(&http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // the attacker's side of the test
		Certificates:       []tls.Certificate{cert},
	}}, url)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "expired")
}

func TestReloadKeepsWorkingMaterial(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "cluster")
	c := issue(t, ca, dir, "agent", pki.Leaf{Name: "agent-1", Groups: []string{pki.GroupAgent}})
	p := load(t, c)

	// A key that does not belong to the certificate: the reload fails and names the files.
	_, otherKey, err := ca.Issue(pki.Leaf{Name: "x"})
	require.NoError(t, err)
	good, err := os.ReadFile(c.KeyFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(c.KeyFile, otherKey, 0o600))
	err = p.Reload()
	require.Error(t, err)
	assert.Contains(t, err.Error(), c.KeyFile)
	assert.Equal(t, "agent-1", p.Identity().Name, "the working certificate stays in use")
	require.NoError(t, os.WriteFile(c.KeyFile, good, 0o600))

	// A rotated certificate from another CA: refused until the CA file is rotated too.
	other := newCA(t, "next")
	rot := issue(t, other, filepath.Join(dir, "next"), "agent", pki.Leaf{Name: "agent-1b"})
	copyFile(t, rot.CertFile, c.CertFile)
	copyFile(t, rot.KeyFile, c.KeyFile)
	err = p.Reload()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is not issued by the CA")
	bundle := append(append([]byte{}, ca.CertPEM()...), other.CertPEM()...)
	require.NoError(t, os.WriteFile(c.CAFile, bundle, 0o644))
	require.NoError(t, p.Reload())
	assert.Equal(t, "agent-1b", p.Identity().Name)
}

// TestWatchRotates rotates a live server's certificate and CA by writing files: new
// handshakes use the new ones without a restart, and old clients are refused once the old CA
// is gone from the bundle.
func TestWatchRotates(t *testing.T) {
	old := pki.ReloadInterval
	pki.ReloadInterval = 20 * time.Millisecond
	t.Cleanup(func() { pki.ReloadInterval = old })

	dir := t.TempDir()
	ca1 := newCA(t, "ca-1")
	sc := issue(t, ca1, dir, "origin", pki.Leaf{Name: "origin-v1", Hosts: []string{"127.0.0.1"}})
	srvP := load(t, sc)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srvP.Watch(ctx, nil) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	url := server(t, srvP)

	c1 := issue(t, ca1, filepath.Join(dir, "c1"), "agent", pki.Leaf{Name: "agent-1"})
	cli1 := load(t, c1)
	_, err := get(cli1, url)
	require.NoError(t, err)

	ca2 := newCA(t, "ca-2")
	next := issue(t, ca2, filepath.Join(dir, "next"), "origin", pki.Leaf{Name: "origin-v2", Hosts: []string{"127.0.0.1"}})
	copyFile(t, next.KeyFile, sc.KeyFile)
	copyFile(t, next.CertFile, sc.CertFile)
	require.NoError(t, os.WriteFile(sc.CAFile, ca2.CertPEM(), 0o644))
	require.Eventually(t, func() bool { return srvP.Identity().Name == "origin-v2" }, 10*time.Second, 10*time.Millisecond)

	// A client whose certificate the retired CA issued is refused by the server, even when it
	// trusts the new CA itself (a bundle of both, as during a rotation).
	bundle := filepath.Join(dir, "c1", "bundle.pem")
	require.NoError(t, os.WriteFile(bundle, append(ca1.CertPEM(), ca2.CertPEM()...), 0o644))
	c1.CAFile = bundle
	_, err = get(load(t, c1), url)
	require.ErrorContains(t, err, "remote error: tls: unknown certificate authority", "a client of the retired CA is refused by the server")
	cli2 := load(t, issue(t, ca2, filepath.Join(dir, "c2"), "agent", pki.Leaf{Name: "agent-2", Groups: []string{pki.GroupAgent}}))
	body, err := get(cli2, url)
	require.NoError(t, err)
	assert.Equal(t, "agent-2 [agent]", body)
}

func TestVerifyIfGiven(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "cluster")
	sc := issue(t, ca, dir, "proxy", pki.Leaf{Name: "proxy", Hosts: []string{"127.0.0.1"}})
	sc.ClientAuth = pki.ClientAuthVerifyIfGiven
	url := server(t, load(t, sc))

	// A person's tool, trusting the CA but without a certificate, gets in as anonymous.
	anon := load(t, issue(t, ca, filepath.Join(dir, "a"), "x", pki.Leaf{Name: "x"})).ClientConfig()
	anon.GetClientCertificate = nil
	anon.ServerName = "127.0.0.1"
	b, err := getWith(&http.Transport{TLSClientConfig: anon}, url)
	require.NoError(t, err)
	assert.Equal(t, "anonymous", b)

	body, err := get(load(t, issue(t, ca, filepath.Join(dir, "b"), "admin", pki.Leaf{Name: "ops", Groups: []string{pki.GroupAdmin}})), url)
	require.NoError(t, err)
	assert.Equal(t, "ops [admin]", body)
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		c    pki.Config
		want string
	}{
		{pki.Config{}, ""},
		{pki.Config{ClientAuth: "require"}, "client_auth: set without"},
		{pki.Config{CertFile: "c"}, "key_file: required"},
		{pki.Config{CertFile: "c", KeyFile: "k", CAFile: "a", ClientAuth: "sometimes"}, `client_auth: "sometimes" is not one of`},
	} {
		err := tc.c.Validate()
		if tc.want == "" {
			require.NoError(t, err)
			continue
		}
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
	_, err := pki.Load(pki.Config{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem", CAFile: "/nonexistent/ca.pem"})
	require.Error(t, err)
	assert.True(t, errors.Is(err, os.ErrNotExist) && strings.Contains(err.Error(), "cert_file"), err.Error())
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o600))
}

// TestKeyUsageBothWays: a certificate for server authentication only (as some enterprise CAs
// issue by default) is refused at load, naming the usage it lacks, rather than starting and
// failing every call it makes as a client.
func TestKeyUsageBothWays(t *testing.T) {
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "enterprise CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	for _, tc := range []struct {
		usages []x509.ExtKeyUsage
		lacks  string
	}{
		{[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, "lacks the extended key usage clientAuth"},
		{[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, "lacks the extended key usage serverAuth"},
		{[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, ""},
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "origin-1"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: tc.usages,
			KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, caCert, &key.PublicKey, caKey)
		require.NoError(t, err)
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		c := pki.Config{CertFile: filepath.Join(dir, "c.pem"), KeyFile: filepath.Join(dir, "k.pem"), CAFile: filepath.Join(dir, "ca.pem")}
		require.NoError(t, os.WriteFile(c.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
		require.NoError(t, os.WriteFile(c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
		require.NoError(t, os.WriteFile(c.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
		_, err = pki.Load(c)
		if tc.lacks == "" {
			require.NoError(t, err)
			continue
		}
		require.ErrorContains(t, err, tc.lacks)
	}
}

// TestRequireHoldsAtReload: what a role requires of its certificate is checked now and at
// every later reload; a rotation that breaks it is refused and the certificate in use kept.
func TestRequireHoldsAtReload(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "cluster")
	c := issue(t, ca, dir, "bi", pki.Leaf{Name: "bi-1", Groups: []string{pki.GroupBuildIndex}})
	p := load(t, c)
	named := func(want string) func(*x509.Certificate) error {
		return func(leaf *x509.Certificate) error {
			if leaf.Subject.CommonName != want {
				return fmt.Errorf("names %q, not %q", leaf.Subject.CommonName, want)
			}
			return nil
		}
	}
	require.ErrorContains(t, p.Require(named("bi-2")), `names "bi-1", not "bi-2"`)
	require.NoError(t, p.Require(named("bi-1")))

	rot := issue(t, ca, filepath.Join(dir, "next"), "bi", pki.Leaf{Name: "bi-9", Groups: []string{pki.GroupBuildIndex}})
	copyFile(t, rot.CertFile, c.CertFile)
	copyFile(t, rot.KeyFile, c.KeyFile)
	err := p.Reload()
	require.ErrorContains(t, err, `names "bi-9", not "bi-1"`)
	require.ErrorContains(t, err, c.CertFile)
	assert.Equal(t, "bi-1", p.Identity().Name, "the certificate in use is kept")

	again := issue(t, ca, filepath.Join(dir, "again"), "bi", pki.Leaf{Name: "bi-1", Groups: []string{pki.GroupBuildIndex}})
	copyFile(t, again.CertFile, c.CertFile)
	copyFile(t, again.KeyFile, c.KeyFile)
	require.NoError(t, p.Reload())
}

// Issuing for one member after another never rewrites ca.pem in place: a member already
// running reads it while the next is issued. The same CA leaves the file alone (same inode,
// so no reload is triggered); another CA replaces it whole, by rename.
func TestIssueFilesLeavesCAFileAlone(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "cluster")
	first := issue(t, ca, dir, "origin-0", pki.Leaf{Name: "origin-0", Groups: []string{pki.GroupOrigin}})
	before, err := os.Stat(first.CAFile)
	require.NoError(t, err)

	stop := make(chan struct{})
	seen := make(chan error, 1)
	go func() { // a member reading the CA file while the others are issued
		for {
			select {
			case <-stop:
				seen <- nil
				return
			default:
			}
			b, err := os.ReadFile(first.CAFile)
			if err == nil && len(b) == 0 {
				seen <- errors.New("read ca.pem empty")
				return
			}
		}
	}()
	for i := 1; i < 20; i++ {
		issue(t, ca, dir, fmt.Sprintf("origin-%d", i), pki.Leaf{Name: fmt.Sprintf("origin-%d", i), Groups: []string{pki.GroupOrigin}})
	}
	mid, err := os.Stat(first.CAFile)
	require.NoError(t, err)
	require.True(t, os.SameFile(before, mid), "the same CA left the file alone")
	other := newCA(t, "other")
	issue(t, other, dir, "agent", pki.Leaf{Name: "agent", Groups: []string{pki.GroupAgent}})
	close(stop)
	require.NoError(t, <-seen)

	after, err := os.Stat(first.CAFile)
	require.NoError(t, err)
	b, err := os.ReadFile(first.CAFile)
	require.NoError(t, err)
	require.Equal(t, other.CertPEM(), b, "another CA replaces the file")
	require.False(t, os.SameFile(before, after), "replaced by rename, not rewritten in place")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		require.False(t, strings.HasPrefix(e.Name(), ".ca.pem-"), "temporary file left: %s", e.Name())
	}
}
