// Package registry holds the OCI distribution API (spec v1.1) that krakenctl's proxy and agents
// serve, the mapping from internal errors to HTTP status and error code (FromError, the one
// place where that happens), and digest and Content-Range parsing.
//
// The error vocabulary itself (codes, the JSON error body, decoding it) is the leaf package
// errcode, so that clients can use it without linking what this package maps.
//
// The handler owns the protocol; the roles plug storage in through the Reader and Writer
// contracts of oci.go.
package registry
