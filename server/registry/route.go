package registry

// RouteKind names the resource a request path of the distribution API addresses.
type RouteKind int

// Route kinds, as the Handler tells them apart.
const (
	RoutePing      = RouteKind(routePing)      // /v2/
	RouteCatalog   = RouteKind(routeCatalog)   // /v2/_catalog
	RouteTags      = RouteKind(routeTags)      // /v2/<name>/tags/list
	RouteReferrers = RouteKind(routeReferrers) // /v2/<name>/referrers/<digest>
	RouteManifest  = RouteKind(routeManifest)  // /v2/<name>/manifests/<reference>
	RouteBlob      = RouteKind(routeBlob)      // /v2/<name>/blobs/<digest>
	RouteUploads   = RouteKind(routeUploads)   // /v2/<name>/blobs/uploads/ (start an upload or a mount)
	RouteUpload    = RouteKind(routeUpload)    // /v2/<name>/blobs/uploads/<id> (a session)
)

// Route is a request path as the Handler reads it. Middleware in front of a Handler
// (authorization) uses ParseRoute so that it and the Handler always agree on which repository
// a request addresses.
type Route struct {
	Kind RouteKind
	// Name is the repository; empty for the ping and the catalog. It is not validated:
	// the Handler answers NAME_INVALID for a bad one.
	Name string
	// Arg is the reference, digest or upload id, when the route has one.
	Arg string
}

// ParseRoute splits a /v2/ path into its route, as the Handler does; false for a path the
// Handler answers 404.
func ParseRoute(path string) (Route, bool) {
	rt, ok := parseRoute(path)
	return Route{Kind: RouteKind(rt.kind), Name: rt.name, Arg: rt.arg}, ok
}
