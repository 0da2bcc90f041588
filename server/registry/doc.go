// Package registry holds the OCI distribution API (spec v1.1) that krakenctl's proxy and agents
// serve, and the HTTP vocabulary every role shares with that spec: the error-code JSON body, the
// mapping from internal errors to HTTP status and code (the one place where that happens), and
// digest and Content-Range parsing.
//
// The handler owns the protocol; the roles plug storage in through the Reader and Writer
// contracts of oci.go.
package registry
