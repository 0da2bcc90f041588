package cluster

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/krakenctl/krakenctl/server/pki"
)

// TLS is a cluster's certificate authority: with Spec.TLS set, every member runs with TLS on
// every listener and mutual TLS on every call to another member, each presenting a certificate
// of its own from CA, as a cluster of separate hosts would.
//
// Certificates name their holders as the roles authorize them: the common name is the member
// (origin-0, tracker-0, proxy-0, agent-0; a build-index node's is its Raft server id) and the
// organization its role's group (pki.GroupOrigin, ...). Each is valid for 127.0.0.1 and
// localhost. The builder's own requests (readiness, Client) present an admin's certificate,
// named "cluster-admin" in pki.GroupAdmin.
//
// Agents and proxies verify a client certificate only if one is given (docker and its kin
// have none); the other roles require one.
type TLS struct {
	// CA issues every certificate.
	CA *pki.CA
	// Dir receives ca.pem, <member>.pem and <member>-key.pem for every member (origin-0.pem,
	// build-index-0.pem, ...) and admin.pem; created if missing. Empty means Spec.Dir/tls.
	Dir string
}

// AdminName is the common name of the certificate the builder presents (in pki.GroupAdmin).
const AdminName = "cluster-admin"

// tlsHosts are the names every member's certificate is valid for: clients dial 127.0.0.1,
// people type localhost.
var tlsHosts = []string{Host, "localhost"}

// groupOf is the certificate group of each role.
var groupOf = map[Role]string{
	Origin: pki.GroupOrigin, BuildIndex: pki.GroupBuildIndex, Tracker: pki.GroupTracker,
	Proxy: pki.GroupProxy, Agent: pki.GroupAgent,
}

// clientAuthOf is what each role's listeners ask of clients: agents and proxies serve people's
// tools, which have no certificate, and authenticate them otherwise.
func clientAuthOf(r Role) string {
	if r == Agent || r == Proxy {
		return pki.ClientAuthVerifyIfGiven
	}
	return pki.ClientAuthRequire
}

// tlsDir is where certificates are written; c.spec.TLS is set.
func (c *Cluster) tlsDir() string {
	if c.spec.TLS.Dir != "" {
		return c.spec.TLS.Dir
	}
	return filepath.Join(c.spec.Dir, "tls")
}

// tlsConfig is the tls section of m's config: its files, to be issued by issue before the role
// is built, and its client authentication. It is zero without TLS.
func (c *Cluster) tlsConfig(m *member) pki.Config {
	if c.spec.TLS == nil {
		return pki.Config{}
	}
	dir, base := c.tlsDir(), m.fileBase()
	return pki.Config{
		CertFile:   filepath.Join(dir, base+".pem"),
		KeyFile:    filepath.Join(dir, base+"-key.pem"),
		CAFile:     filepath.Join(dir, "ca.pem"),
		ClientAuth: clientAuthOf(m.role),
	}
}

// provider issues m's certificate under name and loads cfg, the tls section of m's config
// (which a per-role config function may have pointed elsewhere: then that is what is loaded).
// It returns nil without TLS. Each build of a member issues a new certificate, as a restarted
// host would present the one it was handed last.
func (c *Cluster) provider(m *member, name string, cfg pki.Config) (*pki.Provider, error) {
	if c.spec.TLS == nil {
		return nil, nil
	}
	if _, err := c.spec.TLS.CA.IssueFiles(c.tlsDir(), m.fileBase(),
		pki.Leaf{Name: name, Groups: []string{groupOf[m.role]}, Hosts: tlsHosts}); err != nil {
		return nil, fmt.Errorf("certificate of %s: %w", m, err)
	}
	p, err := pki.Load(cfg)
	if err != nil {
		return nil, fmt.Errorf("certificate of %s: %w", m, err)
	}
	return p, nil
}

// fileBase names m's certificate files: origin-0, build-index-1, ...
func (m *member) fileBase() string { return fmt.Sprintf("%s-%d", m.role, m.index) }

// adminTLS issues the builder's own certificate and returns its files and provider.
func (s *Spec) adminTLS(dir string) (pki.Config, *pki.Provider, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return pki.Config{}, nil, fmt.Errorf("tls dir: %w", err)
	}
	cfg, err := s.TLS.CA.IssueFiles(dir, "admin", pki.Leaf{Name: AdminName, Groups: []string{pki.GroupAdmin}})
	if err != nil {
		return pki.Config{}, nil, fmt.Errorf("admin certificate: %w", err)
	}
	p, err := pki.Load(cfg)
	if err != nil {
		return pki.Config{}, nil, fmt.Errorf("admin certificate: %w", err)
	}
	return cfg, p, nil
}

// AdminTLS is the tls configuration of the certificate the builder presents, an admin's
// (AdminName in pki.GroupAdmin), for commands and tests that talk to the cluster as one; zero
// without TLS.
func (c *Cluster) AdminTLS() pki.Config { return c.adminTLS }
