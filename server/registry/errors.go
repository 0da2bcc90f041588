package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"syscall"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
	"github.com/krakenctl/krakenctl/tagstore"
)

// Sentinel errors of the registry contracts (oci.go). Implementations of Reader and Writer
// return them, wrapped with context; FromError maps them. The upload ones are the content
// store's, so that an implementation passing on a castore error needs no translation and the
// handler's checks (errors.Is) see either.
var (
	ErrBlobUnknown     = errors.New("blob unknown")
	ErrManifestUnknown = errors.New("manifest unknown")
	ErrUploadUnknown   = castore.ErrUploadUnknown
	// ErrUploadOffset is a chunk that does not start where the upload session ends.
	ErrUploadOffset = castore.ErrBadOffset
	// ErrDigestMismatch is content that does not hash to the digest the client gave.
	ErrDigestMismatch = castore.ErrDigestMismatch
)

// FromError maps any error to an *errcode.Error: an *errcode.Error in err's chain as it is, a
// sentinel of any layer (the registry contracts, castore, backend, announce, scheduler,
// tagstore) to its status and code, anything else to 500 UNKNOWN. This is the one place where
// internal errors become HTTP statuses and codes; it lives here, not in errcode, because it must
// know every layer.
func FromError(err error) *errcode.Error {
	var e *errcode.Error
	if errors.As(err, &e) {
		return e
	}
	wrap := func(status int, code errcode.Code, msg string) *errcode.Error {
		return &errcode.Error{Status: status, Code: code, Message: msg, Err: err}
	}
	switch {
	case errors.Is(err, ErrBlobUnknown):
		return wrap(http.StatusNotFound, errcode.CodeBlobUnknown, "blob unknown to registry")
	case errors.Is(err, ErrManifestUnknown):
		return wrap(http.StatusNotFound, errcode.CodeManifestUnknown, "manifest unknown to registry")
	case errors.Is(err, ErrUploadUnknown):
		return wrap(http.StatusNotFound, errcode.CodeBlobUploadUnknown, "blob upload unknown to registry")
	case errors.Is(err, ErrUploadOffset):
		return wrap(http.StatusRequestedRangeNotSatisfiable, errcode.CodeRangeInvalid, "chunk does not start at the end of the upload")
	case errors.Is(err, ErrDigestMismatch):
		return wrap(http.StatusBadRequest, errcode.CodeDigestInvalid, "provided digest did not match uploaded content")
	case errors.Is(err, castore.ErrNotFound), errors.Is(err, backend.ErrNotFound):
		return wrap(http.StatusNotFound, errcode.CodeBlobUnknown, "blob unknown to registry")
	case errors.Is(err, castore.ErrUploadBusy):
		return wrap(http.StatusConflict, errcode.CodeBlobUploadInvalid, "another request is writing to this upload")
	case errors.Is(err, castore.ErrFull):
		return wrap(http.StatusInsufficientStorage, errcode.CodeStorageFull, "the store is full: no room can be made by evicting, or the disk itself is full")
	case errors.Is(err, syscall.ENOSPC):
		// A full disk under something other than the blob store (the origin's queue, say):
		// the same answer, never an opaque 500.
		return wrap(http.StatusInsufficientStorage, errcode.CodeStorageFull, "the disk is full")
	case errors.Is(err, backend.ErrInvalidKey):
		return wrap(http.StatusBadRequest, errcode.CodeNameInvalid, "invalid repository name")
	case errors.Is(err, backend.ErrNoRoute):
		return wrap(http.StatusNotFound, errcode.CodeNameUnknown, "no storage backend is configured for this namespace")
	case errors.Is(err, backend.ErrReadOnly):
		// The message names the namespace and the configured backend (route name and kind,
		// never its address or credentials) when the error says them (backend.CheckWrite).
		return wrap(http.StatusMethodNotAllowed, errcode.CodeUnsupported, "the storage backend for this namespace is read-only: "+err.Error())
	case errors.Is(err, announce.ErrNotFound):
		return wrap(http.StatusNotFound, errcode.CodeBlobUnknown, "blob unknown to the trackers and the origins")
	case errors.Is(err, announce.ErrUnavailable):
		return wrap(http.StatusServiceUnavailable, errcode.CodeUnavailable, "no tracker is reachable; retry")
	case errors.Is(err, announce.ErrRejected):
		return wrap(http.StatusBadGateway, errcode.CodeUnknown, "the tracker refused the request")
	case errors.Is(err, announce.ErrInvalid):
		return wrap(http.StatusBadRequest, errcode.CodeNameInvalid, "invalid namespace or digest")
	case errors.Is(err, scheduler.ErrClosed):
		return wrap(http.StatusServiceUnavailable, errcode.CodeUnavailable, "shutting down")
	case errors.Is(err, tagstore.ErrIndeterminate):
		return wrap(http.StatusGatewayTimeout, errcode.CodeOutcomeUnknown, "the write may or may not have been applied (leadership changed or the node stopped while it committed); read the value to find out")
	case errors.Is(err, tagstore.ErrNotFound):
		return wrap(http.StatusNotFound, errcode.CodeManifestUnknown, "tag unknown")
	case errors.Is(err, tagstore.ErrInvalid):
		// The store's message names what is wrong (a name, a member); it holds nothing secret.
		return wrap(http.StatusBadRequest, errcode.CodeNameInvalid, err.Error())
	case errors.Is(err, tagstore.ErrExists):
		return wrap(http.StatusConflict, errcode.CodeMemberExists, err.Error())
	case errors.Is(err, tagstore.ErrNotLeader):
		return wrap(http.StatusServiceUnavailable, errcode.CodeUnavailable, "no leader: the build-index is electing one; retry")
	case errors.Is(err, tagstore.ErrUnavailable):
		return wrap(http.StatusServiceUnavailable, errcode.CodeUnavailable, "the build-index cannot take writes right now; retry")
	case errors.Is(err, tagstore.ErrClosed):
		return wrap(http.StatusServiceUnavailable, errcode.CodeUnavailable, "the build-index node is shutting down")
	case errors.Is(err, context.DeadlineExceeded):
		return wrap(http.StatusServiceUnavailable, errcode.CodeUnavailable, "timed out")
	default:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return wrap(http.StatusRequestEntityTooLarge, errcode.CodeSizeInvalid, fmt.Sprintf("body exceeds the limit of %d bytes", mbe.Limit))
		}
		return wrap(http.StatusInternalServerError, errcode.CodeUnknown, "internal error")
	}
}

// WriteError writes err, mapped by FromError, as the spec's JSON error body (errcode.Write).
// HEAD responses carry no body, as HTTP requires.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	errcode.Write(w, r, FromError(err))
}
