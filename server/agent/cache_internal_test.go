package agent

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/pki"
)

// cacheAllow: the cache API is an admin route. Plain text serves whoever reaches it, like the
// other routes; auth: leaves it to the guard (admin group); TLS without auth: takes an admin
// certificate, and refuses none or another group's.
func TestCacheAllow(t *testing.T) {
	t.Parallel()
	tlsOn := pki.Config{CertFile: "agent.pem", KeyFile: "agent-key.pem", CAFile: "ca.pem"}
	require.Nil(t, cacheAllow(Config{}))
	require.Nil(t, cacheAllow(Config{TLS: tlsOn, Auth: &AuthConfig{}}))
	allow := cacheAllow(Config{TLS: tlsOn})
	require.NotNil(t, allow)

	ca, err := pki.NewCA("test CA")
	require.NoError(t, err)
	conn := func(groups ...string) *tls.ConnectionState {
		certPEM, _, err := ca.Issue(pki.Leaf{Name: "caller", Groups: groups})
		require.NoError(t, err)
		block, _ := pem.Decode(certPEM)
		cert, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}
	}
	r := httptest.NewRequestWithContext(t.Context(), "POST", "/cache/evict", nil)
	require.ErrorIs(t, allow(r), pki.ErrNoCertificate)
	r.TLS = conn(pki.GroupAgent)
	require.ErrorIs(t, allow(r), pki.ErrDenied)
	r.TLS = conn(pki.GroupAdmin)
	require.NoError(t, allow(r))
}
