// Package errcode is the error vocabulary of krakenctl's HTTP APIs: the error codes of the OCI
// distribution spec (plus krakenctl's own), the HTTP status each code goes with, the spec's JSON
// error body, and how a client decodes that body back into an *Error.
//
// It imports only the standard library, as distribution's registry/api/errcode does, so that
// the typed clients (server/client) and the commands built on them can speak the vocabulary
// without linking the servers' storage. Which internal failure becomes which code is decided in
// one place on the server side, registry.FromError, next to the handler.
package errcode

import (
	"encoding/json"
	"fmt"
	"net/http"
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
	CodeUnauthorized      Code = "UNAUTHORIZED"
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
	// CodeQuorumAtRisk (krakenctl's own, status 409) refuses a membership change that would
	// leave the Raft group without a quorum of live voters; it can be forced.
	CodeQuorumAtRisk Code = "QUORUM_AT_RISK"
	// CodePeerConflict (krakenctl's own, status 409) refuses an announce of a peer address or
	// peer id that another host holds in the tracker's peer set.
	CodePeerConflict Code = "PEER_CONFLICT"
	// CodeOutcomeUnknown (krakenctl's own, status 504) is a write whose outcome is unknown: it
	// may or may not have been applied. Read the value to find out; do not assume either.
	CodeOutcomeUnknown Code = "OUTCOME_UNKNOWN"
)

// statuses is the HTTP status each code goes with: the spec's, or distribution's where the spec
// names none, and krakenctl's for its own codes.
var statuses = map[Code]int{
	CodeBlobUnknown:             http.StatusNotFound,
	CodeBlobUploadInvalid:       http.StatusBadRequest,
	CodeBlobUploadUnknown:       http.StatusNotFound,
	CodeDigestInvalid:           http.StatusBadRequest,
	CodeNameInvalid:             http.StatusBadRequest,
	CodeNameUnknown:             http.StatusNotFound,
	CodeSizeInvalid:             http.StatusBadRequest,
	CodeRangeInvalid:            http.StatusRequestedRangeNotSatisfiable,
	CodeUnsupported:             http.StatusMethodNotAllowed,
	CodeUnauthorized:            http.StatusUnauthorized,
	CodeDenied:                  http.StatusForbidden,
	CodeTooManyRequests:         http.StatusTooManyRequests,
	CodeUnavailable:             http.StatusServiceUnavailable,
	CodeStorageFull:             http.StatusInsufficientStorage,
	CodeUnknown:                 http.StatusInternalServerError,
	CodeManifestUnknown:         http.StatusNotFound,
	CodeManifestInvalid:         http.StatusBadRequest,
	CodeManifestBlobUnknown:     http.StatusNotFound,
	CodeTagInvalid:              http.StatusBadRequest,
	CodePaginationNumberInvalid: http.StatusBadRequest,
	CodeBodyInvalid:             http.StatusBadRequest,
	CodeMemberUnknown:           http.StatusNotFound,
	CodeMemberExists:            http.StatusConflict,
	CodeQuorumAtRisk:            http.StatusConflict,
	CodePeerConflict:            http.StatusConflict,
	CodeOutcomeUnknown:          http.StatusGatewayTimeout,
}

// Status is the HTTP status code c goes with, and 500 for a code this package does not know.
// An *Error carries its own Status because the same code sometimes goes with another one where
// the situation says more (UNSUPPORTED is 405 for a method and 400 for a digest algorithm,
// BLOB_UPLOAD_INVALID is 409 for a busy session, SIZE_INVALID is 413 for a body over a limit).
func (c Code) Status() int {
	if s, ok := statuses[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Error is an API error with its HTTP status. Handlers return it (or any error, which the
// server maps with registry.FromError) and Write renders it as the spec's JSON body.
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

// Write writes e as the spec's JSON error body with e's status. HEAD responses carry no body,
// as HTTP requires.
func Write(w http.ResponseWriter, r *http.Request, e *Error) {
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
	case http.StatusUnauthorized:
		code = CodeUnauthorized
	case http.StatusForbidden:
		code = CodeDenied
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		code = CodeUnavailable
	}
	msg := http.StatusText(status)
	if len(body) > 0 && len(body) < 512 {
		msg = string(body)
	}
	return &Error{Status: status, Code: code, Message: msg}
}
