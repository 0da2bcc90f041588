// Package registry holds the HTTP vocabulary krakenctl's roles share with the OCI distribution
// spec: the error-code JSON body, the mapping from internal errors to HTTP status and code (the
// one place where that happens), and digest and Content-Range parsing. Later issues add the
// registry handlers themselves here.
package registry
