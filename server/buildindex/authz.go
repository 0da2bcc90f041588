package buildindex

import (
	"fmt"
	"net/http"

	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// Who may call which route, when the build-index runs with TLS. Reads are for every component
// of the cluster (agents resolve tags). Tags and links are written by the proxy, which has
// checked the pusher's rights, or by an operator; another build-index node forwards what its
// own check let through. Membership and restores change the Raft group: operators only (and
// authorizeMembership narrows what a build-index node may do to the group). Replication status
// names the remote clusters and their errors, and a retry sends data across clusters:
// operators only too.
var (
	writers   = []string{pki.GroupProxy, pki.GroupAdmin, pki.GroupBuildIndex}
	operators = []string{pki.GroupAdmin, pki.GroupBuildIndex}
)

// routeGroups returns the groups allowed to call route with method; nil means any verified
// identity.
func routeGroups(route, method string) []string {
	switch route {
	case "join", "remove", "restore", "replication", "replication_retry":
		return operators
	case "put_tag", "delete_tag", "put_link", "delete_link":
		return writers
	case "repository_path":
		if method != http.MethodGet && method != http.MethodHead {
			return writers
		}
	}
	return nil
}

// authorize refuses a request whose client certificate does not allow route. Without TLS
// there is nobody to tell apart, and everything is allowed: plain text is for networks trusted
// by construction.
func (s *Server) authorize(route string, r *http.Request) error {
	if !s.cfg.TLS.Enabled() {
		return nil
	}
	if err := pki.Allowed(r.TLS, route, routeGroups(route, r.Method)...); err != nil {
		return &errcode.Error{Status: http.StatusForbidden, Code: errcode.CodeDenied, Message: err.Error(), Err: err}
	}
	return nil
}

// authorizeMembership lets a membership change (a join of joining, or a removal when joining
// is empty) through, with TLS, only when the request comes from:
//
//   - an admin (a certificate in group "admin");
//   - a build-index node that forwarded the request to the leader (its certificate's name is
//     the node the forwarding header names, and a member of the group): the node that
//     received it checked it first. The header is the caller's own word, so only a member
//     is believed: a certificate issued for another name, or kept by a node since removed,
//     does not forward;
//   - a build-index node asking to add itself (its certificate names joining), which is what a
//     node started with `join:` does; it could run a Raft node under that name anyway.
//
// A build-index certificate alone does not let a node add or remove others; a member's does,
// as that member could through Raft itself. Without TLS
// everything is allowed, as in authorize.
func (s *Server) authorizeMembership(r *http.Request, joining string) error {
	if !s.cfg.TLS.Enabled() {
		return nil
	}
	what := "remove a member"
	if joining != "" {
		what = "add member " + joining
	}
	id, ok := pki.PeerIdentity(r.TLS)
	if !ok {
		return errcode.Errorf(http.StatusForbidden, errcode.CodeDenied,
			"to %s, present a client certificate of group %q from the cluster CA", what, pki.GroupAdmin)
	}
	switch {
	case id.In(pki.GroupAdmin):
		return nil
	case id.In(pki.GroupBuildIndex) && r.Header.Get(HeaderForwardedBy) == id.Name && s.isMember(id.Name):
		return nil
	case id.In(pki.GroupBuildIndex) && joining != "" && id.Name == joining:
		return nil
	}
	return &errcode.Error{Status: http.StatusForbidden, Code: errcode.CodeDenied,
		Message: fmt.Sprintf("%s (groups %v) may not %s: that needs a certificate of group %q", id.Name, id.Groups, what, pki.GroupAdmin)}
}

// isMember reports whether id is a server of the Raft configuration this node knows.
func (s *Server) isMember(id string) bool {
	for _, m := range s.store.Status().Members {
		if m.ID == id {
			return true
		}
	}
	return false
}
