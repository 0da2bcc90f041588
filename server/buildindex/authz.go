package buildindex

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"slices"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// Certificate groups that may change the Raft membership.
const (
	groupAdmin      = "admin"
	groupBuildIndex = tagstore.GroupBuildIndex
)

// identity is who a verified client certificate says its holder is.
type identity struct {
	Name   string
	Groups []string
}

func (id identity) in(group string) bool { return slices.Contains(id.Groups, group) }

// peerIdentity reads the identity of a request's client certificate, only from a chain the
// TLS server verified against the cluster CA: the leaf's common name and organizations.
// pki.PeerIdentity does the same; this stands in for it until server/pki lands.
func peerIdentity(cs *tls.ConnectionState) (identity, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return identity{}, false
	}
	leaf := cs.VerifiedChains[0][0]
	return identity{Name: leaf.Subject.CommonName, Groups: leaf.Subject.Organization}, true
}

// authorizeMembership lets a membership change (a join of joining, or a removal when joining
// is empty) through when the request comes from:
//
//   - an admin (a certificate in group "admin");
//   - a build-index node that forwarded the request to the leader (its certificate names the
//     node the forwarding header names): the node that received it checked it first;
//   - a build-index node asking to add itself (its certificate names joining), which is what a
//     node started with `join:` does; it could run a Raft node under that name anyway.
//
// A request that did not come over TLS is let through: without TLS the build-index has no
// identities to check, and runs as it always did, on a network trusted by construction.
func authorizeMembership(r *http.Request, joining string) error {
	if r.TLS == nil {
		return nil
	}
	what := "remove a member"
	if joining != "" {
		what = "add member " + joining
	}
	id, ok := peerIdentity(r.TLS)
	if !ok {
		return errcode.Errorf(http.StatusForbidden, errcode.CodeDenied,
			"to %s, present a client certificate of group %q from the cluster CA", what, groupAdmin)
	}
	switch {
	case id.in(groupAdmin):
		return nil
	case id.in(groupBuildIndex) && r.Header.Get(HeaderForwardedBy) == id.Name:
		return nil
	case id.in(groupBuildIndex) && joining != "" && id.Name == joining:
		return nil
	}
	return &errcode.Error{Status: http.StatusForbidden, Code: errcode.CodeDenied,
		Message: fmt.Sprintf("%s (groups %v) may not %s: that needs a certificate of group %q", id.Name, id.Groups, what, groupAdmin)}
}
