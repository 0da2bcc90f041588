package agent

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/krakenctl/krakenctl/server/auth"
)

// guardAPI puts g in front of the agent's API, next, as AuthConfig describes: callers on
// loopback pass untouched when loopbackOpen; /health and /readyz stay open; the registry API
// (/v2, with the token endpoint) is guarded as the proxy's is; everything else (the blob and
// swarm APIs, and paths that are nobody's) serves admins only. Unknown paths are guarded too,
// so that a route added later is closed until it is placed here.
func guardAPI(next http.Handler, g *auth.Guard, loopbackOpen bool) http.Handler {
	registryAPI := g.Wrap(next)
	adminAPI := g.WrapAdmin(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case loopbackOpen && fromLoopback(r.RemoteAddr):
			next.ServeHTTP(w, r)
		case p == "/health" || p == "/readyz":
			next.ServeHTTP(w, r)
		case p == "/v2" || strings.HasPrefix(p, "/v2/"):
			// registry.Mount sends these same paths to the registry handler, never to the
			// mux: what the guard lets through is answered by the registry alone.
			registryAPI.ServeHTTP(w, r)
		default:
			adminAPI.ServeHTTP(w, r)
		}
	})
}

// fromLoopback reports whether a request's remote address (http.Request.RemoteAddr) is on
// loopback; an address that does not parse is not.
func fromLoopback(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// onLoopback reports whether a listener's address can only be reached from this host.
func onLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
