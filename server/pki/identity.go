package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Groups that certificates of the cluster carry in their Subject's organizations.
const (
	GroupAdmin      = "admin"
	GroupAgent      = "agent"
	GroupOrigin     = "origin"
	GroupTracker    = "tracker"
	GroupProxy      = "proxy"
	GroupBuildIndex = "build-index"
)

// Identity is who a certificate says its holder is: the Subject's common name, and its
// organizations as groups.
type Identity struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups,omitempty"`
}

// In reports whether the identity is in group.
func (id Identity) In(group string) bool { return slices.Contains(id.Groups, group) }

func identityOf(c *x509.Certificate) Identity {
	return Identity{Name: c.Subject.CommonName, Groups: slices.Clone(c.Subject.Organization)}
}

// PeerIdentity is the identity of the client of a server-side connection, from the certificate
// the handshake verified against the CA. It reports false when there is none: no TLS, or a
// client that sent no certificate (an unverified certificate never counts).
func PeerIdentity(cs *tls.ConnectionState) (Identity, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	return identityOf(cs.VerifiedChains[0][0]), true
}

// ErrNoCertificate and ErrDenied are what Allowed returns: the request carries no verified
// certificate, or one whose groups are not among those allowed.
var (
	ErrNoCertificate = errors.New("a client certificate from the cluster CA is required")
	ErrDenied        = errors.New("the certificate's groups are not allowed")
)

// Allowed reports whether the client of cs holds a verified certificate in one of groups (any
// verified certificate when groups is empty). Its error names the identity and what it would
// take.
func Allowed(cs *tls.ConnectionState, what string, groups ...string) error {
	id, ok := PeerIdentity(cs)
	if !ok {
		return fmt.Errorf("%s: %w", what, ErrNoCertificate)
	}
	if len(groups) == 0 {
		return nil
	}
	for _, g := range groups {
		if id.In(g) {
			return nil
		}
	}
	return fmt.Errorf("%s: %s (groups %s) %w: it takes group %s", what, id.Name,
		strings.Join(id.Groups, ","), ErrDenied, strings.Join(groups, " or "))
}
