package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
	"github.com/krakenctl/krakenctl/tagstore"
)

// Code is an OCI distribution error code.
type Code string

// Error codes from the OCI distribution spec, plus UNAVAILABLE and UNKNOWN for server faults.
const (
	CodeBlobUnknown       Code = "BLOB_UNKNOWN"
	CodeBlobUploadInvalid Code = "BLOB_UPLOAD_INVALID"
	CodeBlobUploadUnknown Code = "BLOB_UPLOAD_UNKNOWN"
	CodeDigestInvalid     Code = "DIGEST_INVALID"
	CodeNameInvalid       Code = "NAME_INVALID"
	CodeNameUnknown       Code = "NAME_UNKNOWN"
	CodeSizeInvalid       Code = "SIZE_INVALID"
	CodeRangeInvalid      Code = "RANGE_INVALID"
	CodeUnsupported       Code = "UNSUPPORTED"
	CodeDenied            Code = "DENIED"
	CodeTooManyRequests   Code = "TOOMANYREQUESTS"
	CodeUnavailable       Code = "UNAVAILABLE"
	CodeStorageFull       Code = "STORAGE_FULL"
	CodeUnknown           Code = "UNKNOWN"

	// Codes of the build-index's tag API.
	CodeManifestUnknown     Code = "MANIFEST_UNKNOWN"
	CodeManifestInvalid     Code = "MANIFEST_INVALID"
	CodeManifestBlobUnknown Code = "MANIFEST_BLOB_UNKNOWN"
	CodeTagInvalid          Code = "TAG_INVALID"
	// CodePaginationNumberInvalid is distribution's code for a bad n in a paginated list.
	CodePaginationNumberInvalid Code = "PAGINATION_NUMBER_INVALID"
	// CodeBodyInvalid (krakenctl's own) is a request body that is not the JSON document expected.
	CodeBodyInvalid Code = "BODY_INVALID"
	// CodeMemberUnknown and CodeMemberExists (krakenctl's own) are about Raft group members.
	CodeMemberUnknown Code = "MEMBER_UNKNOWN"
	CodeMemberExists  Code = "MEMBER_EXISTS"
	// CodeOutcomeUnknown (krakenctl's own, status 504) is a write whose outcome is unknown: it
	// may or may not have been applied. Read the value to find out; do not assume either.
	CodeOutcomeUnknown Code = "OUTCOME_UNKNOWN"
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

// Error is an API error with its HTTP status. Handlers return it (or any error; WriteError maps
// the rest) and WriteError renders it as the spec's JSON body.
type Error struct {
	Status  int
	Code    Code
	Message string
	Detail  any
	// Err is the underlying cause, kept for logs and errors.Is; it is not sent to the client.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a formatted message.
func Errorf(status int, code Code, format string, a ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

// Body is the JSON error body of the OCI distribution spec.
type Body struct {
	Errors []BodyError `json:"errors"`
}

// BodyError is one entry of Body.
type BodyError struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// FromError maps any error to an *Error. This is the one place where internal sentinel errors
// become HTTP statuses and codes.
func FromError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	wrap := func(status int, code Code, msg string) *Error {
		return &Error{Status: status, Code: code, Message: msg, Err: err}
	}
	switch {
	case errors.Is(err, ErrBlobUnknown):
		return wrap(http.StatusNotFound, CodeBlobUnknown, "blob unknown to registry")
	case errors.Is(err, ErrManifestUnknown):
		return wrap(http.StatusNotFound, CodeManifestUnknown, "manifest unknown to registry")
	case errors.Is(err, ErrUploadUnknown):
		return wrap(http.StatusNotFound, CodeBlobUploadUnknown, "blob upload unknown to registry")
	case errors.Is(err, ErrUploadOffset):
		return wrap(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid, "chunk does not start at the end of the upload")
	case errors.Is(err, ErrDigestMismatch):
		return wrap(http.StatusBadRequest, CodeDigestInvalid, "provided digest did not match uploaded content")
	case errors.Is(err, castore.ErrNotFound), errors.Is(err, backend.ErrNotFound):
		return wrap(http.StatusNotFound, CodeBlobUnknown, "blob unknown to registry")
	case errors.Is(err, castore.ErrUploadBusy):
		return wrap(http.StatusConflict, CodeBlobUploadInvalid, "another request is writing to this upload")
	case errors.Is(err, castore.ErrFull):
		return wrap(http.StatusInsufficientStorage, CodeStorageFull, "store is full of blobs that cannot be evicted")
	case errors.Is(err, backend.ErrInvalidKey):
		return wrap(http.StatusBadRequest, CodeNameInvalid, "invalid repository name")
	case errors.Is(err, backend.ErrNoRoute):
		return wrap(http.StatusNotFound, CodeNameUnknown, "no storage backend is configured for this namespace")
	case errors.Is(err, backend.ErrReadOnly):
		return wrap(http.StatusMethodNotAllowed, CodeUnsupported, "the storage backend for this namespace is read-only")
	case errors.Is(err, announce.ErrNotFound):
		return wrap(http.StatusNotFound, CodeBlobUnknown, "blob unknown to the trackers and the origins")
	case errors.Is(err, announce.ErrUnavailable):
		return wrap(http.StatusServiceUnavailable, CodeUnavailable, "no tracker is reachable; retry")
	case errors.Is(err, announce.ErrRejected):
		return wrap(http.StatusBadGateway, CodeUnknown, "the tracker refused the request")
	case errors.Is(err, announce.ErrInvalid):
		return wrap(http.StatusBadRequest, CodeNameInvalid, "invalid namespace or digest")
	case errors.Is(err, scheduler.ErrClosed):
		return wrap(http.StatusServiceUnavailable, CodeUnavailable, "shutting down")
	case errors.Is(err, tagstore.ErrIndeterminate):
		return wrap(http.StatusGatewayTimeout, CodeOutcomeUnknown, "the write may or may not have been applied (leadership changed or the node stopped while it committed); read the value to find out")
	case errors.Is(err, tagstore.ErrNotFound):
		return wrap(http.StatusNotFound, CodeManifestUnknown, "tag unknown")
	case errors.Is(err, tagstore.ErrInvalid):
		// The store's message names what is wrong (a name, a member); it holds nothing secret.
		return wrap(http.StatusBadRequest, CodeNameInvalid, err.Error())
	case errors.Is(err, tagstore.ErrExists):
		return wrap(http.StatusConflict, CodeMemberExists, err.Error())
	case errors.Is(err, tagstore.ErrNotLeader):
		return wrap(http.StatusServiceUnavailable, CodeUnavailable, "no leader: the build-index is electing one; retry")
	case errors.Is(err, tagstore.ErrUnavailable):
		return wrap(http.StatusServiceUnavailable, CodeUnavailable, "the build-index cannot take writes right now; retry")
	case errors.Is(err, tagstore.ErrClosed):
		return wrap(http.StatusServiceUnavailable, CodeUnavailable, "the build-index node is shutting down")
	case errors.Is(err, context.DeadlineExceeded):
		return wrap(http.StatusServiceUnavailable, CodeUnavailable, "timed out")
	default:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return wrap(http.StatusRequestEntityTooLarge, CodeSizeInvalid, fmt.Sprintf("body exceeds the limit of %d bytes", mbe.Limit))
		}
		return wrap(http.StatusInternalServerError, CodeUnknown, "internal error")
	}
}

// WriteError writes err as the spec's JSON error body with the mapped status. HEAD responses
// carry no body, as HTTP requires.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	e := FromError(err)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(e.Status)
	if r != nil && r.Method == http.MethodHead {
		return
	}
	_ = json.NewEncoder(w).Encode(Body{Errors: []BodyError{{Code: e.Code, Message: e.Message, Detail: e.Detail}}})
}

// DecodeError turns an error response from a krakenctl server into an *Error, so a client can
// test the code with errors.As. body may be empty (HEAD).
func DecodeError(status int, body []byte) *Error {
	var b Body
	if err := json.Unmarshal(body, &b); err == nil && len(b.Errors) > 0 {
		return &Error{Status: status, Code: b.Errors[0].Code, Message: b.Errors[0].Message, Detail: b.Errors[0].Detail}
	}
	code := CodeUnknown
	switch status {
	case http.StatusNotFound:
		code = CodeBlobUnknown
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		code = CodeUnavailable
	}
	msg := http.StatusText(status)
	if len(body) > 0 && len(body) < 512 {
		msg = string(body)
	}
	return &Error{Status: status, Code: code, Message: msg}
}
