package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/pki"
)

// TestCertificateRotationWithoutRestart rotates the certificate of a running `krakenctl serve
// origin` process: a new certificate written over the files is served after SIGHUP, without a
// restart; then a certificate from another CA and an expired one are refused at reload, the
// one in use is kept, and the origin keeps serving its clients throughout.
func TestCertificateRotationWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Parallel()
	dir := t.TempDir()
	tp := newTestPKI(t, filepath.Join(dir, "tls"), "127.0.0.1")
	admin := tp.issue("admin", "ops", pki.GroupAdmin)
	adminCert := clientCert(t, admin)
	originTLS := tp.issue("origin", "origin-1", pki.GroupOrigin)

	addr := freeAddr(t)
	adminClient := tp.client(admin)
	origin := serve(t, dir, "origin", "origin", addr, fmt.Sprintf("listen: %s\nadmin_listen: 127.0.0.1:0\nstore:\n  dir: %s\n%s",
		addr, filepath.Join(dir, "store"), tp.yaml(originTLS, "require")),
		func(ctx context.Context) error { return client.NewOrigin(addr, adminClient).Ready(ctx) })

	// served is the certificate the origin presents to a new connection.
	served := func() *x509.Certificate {
		t.Helper()
		d := &tls.Dialer{Config: &tls.Config{RootCAs: tp.roots, Certificates: []tls.Certificate{adminCert}, MinVersion: tls.VersionTLS13}}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", addr)
		require.NoError(t, err)
		defer func() { _ = c.Close() }()
		return c.(*tls.Conn).ConnectionState().PeerCertificates[0]
	}
	replace := func(certPEM, keyPEM []byte) {
		t.Helper()
		// The key first, then the certificate: a reload between the two sees a pair that does
		// not match, refuses it and keeps the old one; the next reload takes the new pair.
		require.NoError(t, os.WriteFile(originTLS.KeyFile, keyPEM, 0o600))
		require.NoError(t, os.WriteFile(originTLS.CertFile, certPEM, 0o644))
		require.NoError(t, origin.cmd.Process.Signal(syscall.SIGHUP))
	}
	logHas := func(s string) bool {
		b, _ := os.ReadFile(origin.log.Name())
		return strings.Contains(string(b), s)
	}
	serving := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		require.NoError(t, client.NewOrigin(addr, adminClient).Ready(ctx), "the origin serves its clients")
	}

	first := served()
	require.Equal(t, "origin-1", first.Subject.CommonName)

	// A new certificate from the cluster CA, with another lifetime: served after SIGHUP.
	notAfter := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	certPEM, keyPEM, err := tp.ca.Issue(pki.Leaf{Name: "origin-1", Groups: []string{pki.GroupOrigin}, Hosts: []string{"127.0.0.1"}, NotAfter: notAfter})
	require.NoError(t, err)
	replace(certPEM, keyPEM)
	require.Eventually(t, func() bool { return served().NotAfter.Equal(notAfter) }, 30*time.Second, 50*time.Millisecond,
		"the new certificate served without a restart")
	second := served()
	require.NotEqual(t, first.SerialNumber, second.SerialNumber)
	serving()

	// One from another CA, then an expired one: refused at reload, the one in use kept.
	foreign, err := pki.NewCA("not the cluster CA")
	require.NoError(t, err)
	fCert, fKey, err := foreign.Issue(pki.Leaf{Name: "origin-1", Groups: []string{pki.GroupOrigin}, Hosts: []string{"127.0.0.1"}})
	require.NoError(t, err)
	eCert, eKey, err := tp.ca.Issue(pki.Leaf{Name: "origin-1", Groups: []string{pki.GroupOrigin}, Hosts: []string{"127.0.0.1"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	require.NoError(t, err)
	// Each refusal is waited for by its own reason, as the JSON log spells it (a reload may also catch the new key beside
	// the old certificate for a moment, and refuse that pair for another reason).
	for _, c := range []struct {
		cert, key []byte
		reason    string
	}{
		{fCert, fKey, "is not issued by the CA in ca_file"},
		{eCert, eKey, `origin-1\" expired at`}, // certificate "origin-1" expired at, quotes escaped in JSON
	} {
		before := strings.Count(mustRead(t, origin.log.Name()), c.reason)
		replace(c.cert, c.key)
		require.Eventually(t, func() bool { return strings.Count(mustRead(t, origin.log.Name()), c.reason) > before }, 30*time.Second, 50*time.Millisecond,
			"the origin logs the refused reload: %s", c.reason)
		require.True(t, logHas("tls reload failed; keeping the certificate in use"))
		require.Equal(t, second.SerialNumber, served().SerialNumber, "the certificate in use is kept")
		serving()
	}
	select {
	case <-origin.exited:
		t.Fatal("the origin exited")
	default:
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
