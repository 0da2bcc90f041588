package buildindex

import (
	"net/http"

	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// Who may call which route, when the build-index runs with TLS. Reads are for every component
// of the cluster (agents resolve tags). Tags and links are written by the proxy, which has
// checked the pusher's rights, or by an operator; another build-index node forwards what its
// own check let through. Membership and restores change the Raft group: operators only.
var (
	writers   = []string{pki.GroupProxy, pki.GroupAdmin, pki.GroupBuildIndex}
	operators = []string{pki.GroupAdmin, pki.GroupBuildIndex}
)

// routeGroups returns the groups allowed to call route with method; nil means any verified
// identity.
func routeGroups(route, method string) []string {
	switch route {
	case "join", "remove", "restore":
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
