// Package api holds the paths, headers and JSON documents of krakenctl's own HTTP APIs (the
// blob API of origins and agents, the swarm API of agents and origins, the build-index API and
// the operator endpoints), and the endpoints file that names a cluster's roles. The servers that
// serve them, the typed clients in server/client and the commands share them from here; the
// package imports nothing else of the module, so using it links no server.
package api

import (
	"net/url"
	"time"

	"github.com/opencontainers/go-digest"
)

// DefaultAgentAddr is where an agent serves its API unless its config says otherwise (the
// default of server/agent's listen), and so where commands on a host find their agent.
const DefaultAgentAddr = "127.0.0.1:16000"

// Headers used by the blob APIs; the names follow the OCI distribution spec where it has one.
const (
	HeaderContentDigest = "Docker-Content-Digest"
	HeaderUploadUUID    = "Docker-Upload-UUID"
	HeaderRange         = "Range"
	HeaderContentRange  = "Content-Range"
	HeaderLocation      = "Location"
	// HeaderUploadOffset carries the exact byte count of an upload session; the spec's Range
	// header ("0-<last>") cannot tell an empty session from a one-byte one.
	HeaderUploadOffset = "Upload-Offset"
	// HeaderServedBy names the origin that answered, so clients and tests can see the route.
	HeaderServedBy = "Krakenctl-Origin"
)

// Origin blob API paths. The namespace is path-escaped into a single segment ("library/ubuntu"
// becomes "library%2Fubuntu") so repository names with slashes need no special routing.
func BlobPath(ns string, d digest.Digest) string {
	return "/namespace/" + url.PathEscape(ns) + "/blobs/" + d.String()
}

// MetainfoPath is where an origin serves a blob's metainfo.
func MetainfoPath(ns string, d digest.Digest) string { return BlobPath(ns, d) + "/metainfo" }

// UploadsPath is where an upload session starts (POST).
func UploadsPath(ns string) string { return "/namespace/" + url.PathEscape(ns) + "/uploads" }

// UploadPath addresses one upload session (GET status, PATCH chunk, PUT commit, DELETE cancel).
func UploadPath(ns, id string) string { return UploadsPath(ns) + "/" + url.PathEscape(id) }

// ReplicaPath is the origin-to-origin path: PUT stores a replica (no fan-out), HEAD and GET look
// at the local store only (no pull-through).
func ReplicaPath(ns string, d digest.Digest) string {
	return "/internal/blobs/" + d.String() + "?namespace=" + url.QueryEscape(ns)
}

// RingPath serves RingStatus; with ?digest=D it includes the owners of D.
const RingPath = "/ring"

// RingStatus is an origin's view of the hash ring.
type RingStatus struct {
	// Self is the answering origin's own ring address.
	Self     string       `json:"self"`
	Replicas int          `json:"replicas"`
	Members  []RingMember `json:"members"`
	// Digest, Owners and Locations are set when a digest was asked about. Locations are the
	// nominal owners by rank; Owners are the healthy ones that serve it now.
	Digest    digest.Digest `json:"digest,omitempty"`
	Owners    []string      `json:"owners,omitempty"`
	Locations []string      `json:"locations,omitempty"`
	// Local reports whether the answering origin holds the digest in its store.
	Local *bool `json:"local,omitempty"`
}

// RingMember is one origin in the ring and its health as seen by the answering origin.
type RingMember struct {
	Addr                string    `json:"addr"`
	Healthy             bool      `json:"healthy"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	LastCheck           time.Time `json:"last_check,omitzero"`
	LastError           string    `json:"last_error,omitempty"`
}
