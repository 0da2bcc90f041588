package registry_test

import (
	"errors"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/castore"
)

func TestParseDigest(t *testing.T) {
	t.Parallel()
	hex := strings.Repeat("a1", 32)
	for in, want := range map[string]string{"sha256:" + hex: "sha256:" + hex, hex: "sha256:" + hex} {
		d, err := registry.ParseDigest(in)
		require.NoError(t, err, in)
		require.Equal(t, want, d.String())
	}
	for in, code := range map[string]errcode.Code{
		"":                                   errcode.CodeDigestInvalid,
		"sha256:abc":                         errcode.CodeDigestInvalid,
		"sha256:" + strings.ToUpper(hex):     errcode.CodeDigestInvalid,
		"md5:" + hex:                         errcode.CodeDigestInvalid,
		"sha512:" + strings.Repeat("ab", 64): errcode.CodeUnsupported,
		"../../etc/passwd":                   errcode.CodeDigestInvalid,
	} {
		_, err := registry.ParseDigest(in)
		var e *errcode.Error
		require.ErrorAs(t, err, &e, in)
		require.Equal(t, code, e.Code, in)
		require.Equal(t, http.StatusBadRequest, e.Status, in)
	}
}

func TestParseContentRange(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][2]int64{"0-99": {0, 100}, "bytes 100-199/1000": {100, 100}, "bytes=5-5": {5, 1}} {
		start, n, err := registry.ParseContentRange(in)
		require.NoError(t, err, in)
		require.Equal(t, want, [2]int64{start, n}, in)
	}
	for _, in := range []string{"", "abc", "10", "5-4", "-1-3", "1-x", "99999999999999999999-1", "0-9223372036854775807"} {
		_, _, err := registry.ParseContentRange(in)
		require.Error(t, err, in)
		require.Equal(t, http.StatusRequestedRangeNotSatisfiable, registry.FromError(err).Status, in)
	}
}

func TestFromError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		status int
		code   errcode.Code
	}{
		{castore.ErrNotFound, 404, errcode.CodeBlobUnknown},
		{backend.ErrNotFound, 404, errcode.CodeBlobUnknown},
		{castore.ErrUploadUnknown, 404, errcode.CodeBlobUploadUnknown},
		{castore.ErrDigestMismatch, 400, errcode.CodeDigestInvalid},
		{castore.ErrBadOffset, 416, errcode.CodeRangeInvalid},
		{castore.ErrFull, 507, errcode.CodeStorageFull},
		// A full disk under anything else (the origin's queue, say) is the same 507.
		{&os.PathError{Op: "write", Path: "queue.db", Err: syscall.ENOSPC}, 507, errcode.CodeStorageFull},
		{backend.ErrInvalidKey, 400, errcode.CodeNameInvalid},
		{backend.ErrNoRoute, 404, errcode.CodeNameUnknown},
		{&http.MaxBytesError{Limit: 10}, 413, errcode.CodeSizeInvalid},
		{errors.New("disk on fire"), 500, errcode.CodeUnknown},
	} {
		e := registry.FromError(wrap(tc.err))
		require.Equal(t, tc.status, e.Status, "%v", tc.err)
		require.Equal(t, tc.code, e.Code, "%v", tc.err)
		require.NotContains(t, e.Message, "disk on fire", "internal causes are not sent to clients")
	}
}

func wrap(err error) error { return errors.Join(errors.New("context"), err) }

// FuzzParseDigest: request paths and queries are untrusted; anything accepted is a canonical
// sha256 digest, and nothing panics.
func FuzzParseDigest(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("0", 64))
	f.Add(strings.Repeat("f", 64))
	f.Add("sha512:abc")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := registry.ParseDigest(s)
		if err != nil {
			require.NotNil(t, registry.FromError(err))
			return
		}
		require.NoError(t, d.Validate())
		require.Equal(t, "sha256", string(d.Algorithm()))
	})
}

// FuzzParseContentRange: accepted ranges are non-negative and non-empty.
func FuzzParseContentRange(f *testing.F) {
	f.Add("0-99")
	f.Add("bytes 1-2/3")
	f.Add("bytes=9223372036854775806-9223372036854775807")
	f.Fuzz(func(t *testing.T, s string) {
		start, n, err := registry.ParseContentRange(s)
		if err != nil {
			return
		}
		require.GreaterOrEqual(t, start, int64(0))
		require.Positive(t, n)
	})
}
