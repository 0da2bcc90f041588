package errcode_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

func TestDecodeError(t *testing.T) {
	t.Parallel()
	e := errcode.DecodeError(400, []byte(`{"errors":[{"code":"DIGEST_INVALID","message":"bad"}]}`))
	require.Equal(t, errcode.CodeDigestInvalid, e.Code)
	require.Equal(t, "bad", e.Message)
	require.Equal(t, errcode.CodeBlobUnknown, errcode.DecodeError(404, nil).Code)
	require.Equal(t, errcode.CodeUnavailable, errcode.DecodeError(503, []byte("<html>")).Code)
	require.Equal(t, errcode.CodeUnauthorized, errcode.DecodeError(401, nil).Code)
	require.Equal(t, errcode.CodeDenied, errcode.DecodeError(403, []byte("no")).Code)
}

// TestWrite pins the wire format byte for byte: clients of every krakenctl version and every
// OCI client decode it.
func TestWrite(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Length", "99") // set by a handler that meant to send a blob
	errcode.Write(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v2/", nil),
		&errcode.Error{Status: http.StatusConflict, Code: errcode.CodeMemberExists, Message: `node "a" exists`, Detail: map[string]int{"n": 1}, Err: errors.New("secret cause")})
	require.Equal(t, http.StatusConflict, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	require.Empty(t, rec.Header().Get("Content-Length"))
	// Equal, not JSONEq: the bytes are what is pinned, key order and the newline included.
	require.Equal(t, `{"errors":[{"code":"MEMBER_EXISTS","message":"node \"a\" exists","detail":{"n":1}}]}`+"\n", rec.Body.String()) //nolint:testifylint // byte for byte, as said above

	rec = httptest.NewRecorder()
	errcode.Write(rec, httptest.NewRequestWithContext(t.Context(), http.MethodHead, "/v2/", nil), errcode.Errorf(http.StatusNotFound, errcode.CodeBlobUnknown, "no %s", "blob"))
	require.Equal(t, http.StatusNotFound, rec.Code)
	require.Empty(t, rec.Body.String(), "a HEAD answer has no body")

	// What Write sends, DecodeError reads back.
	rec = httptest.NewRecorder()
	errcode.Write(rec, nil, errcode.Errorf(http.StatusBadRequest, errcode.CodeTagInvalid, "bad tag %q", "-x"))
	e := errcode.DecodeError(rec.Code, rec.Body.Bytes())
	require.Equal(t, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeTagInvalid, Message: `bad tag "-x"`}, e)
}

func TestErrorText(t *testing.T) {
	t.Parallel()
	cause := errors.New("disk on fire")
	e := &errcode.Error{Status: 500, Code: errcode.CodeUnknown, Message: "internal error", Err: cause}
	require.Equal(t, "UNKNOWN: internal error: disk on fire", e.Error())
	require.ErrorIs(t, e, cause)
	require.Equal(t, "NAME_INVALID: bad name", errcode.Errorf(400, errcode.CodeNameInvalid, "bad %s", "name").Error())
}

func TestCodeStatus(t *testing.T) {
	t.Parallel()
	for code, want := range map[errcode.Code]int{
		errcode.CodeBlobUnknown:             404,
		errcode.CodeBlobUploadInvalid:       400,
		errcode.CodeBlobUploadUnknown:       404,
		errcode.CodeDigestInvalid:           400,
		errcode.CodeNameInvalid:             400,
		errcode.CodeNameUnknown:             404,
		errcode.CodeSizeInvalid:             400,
		errcode.CodeRangeInvalid:            416,
		errcode.CodeUnsupported:             405,
		errcode.CodeUnauthorized:            401,
		errcode.CodeDenied:                  403,
		errcode.CodeTooManyRequests:         429,
		errcode.CodeUnavailable:             503,
		errcode.CodeStorageFull:             507,
		errcode.CodeUnknown:                 500,
		errcode.CodeManifestUnknown:         404,
		errcode.CodeManifestInvalid:         400,
		errcode.CodeManifestBlobUnknown:     404,
		errcode.CodeTagInvalid:              400,
		errcode.CodePaginationNumberInvalid: 400,
		errcode.CodeBodyInvalid:             400,
		errcode.CodeMemberUnknown:           404,
		errcode.CodeMemberExists:            409,
		errcode.CodeOutcomeUnknown:          504,
		"NOT_A_CODE":                        500,
	} {
		require.Equal(t, want, code.Status(), code)
	}
}
