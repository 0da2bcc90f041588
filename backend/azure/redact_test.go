package azure

import (
	"net/url"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFailRedactsSAS: Go's transport errors quote the request URL, which with a SAS carries its
// signature; the backend's error names the object but blanks the signature, and keeps the
// cause reachable. (An end-to-end check against an unreachable endpoint would wait out the
// SDK's retries of the connection.)
func TestFailRedactsSAS(t *testing.T) {
	t.Parallel()
	b := &Backend{account: "acct1", container: "blobs"}
	cause := &url.Error{
		Op:  "Get",
		URL: "http://127.0.0.1:1/acct1/blobs/ns%2F_objects%2Fx?se=2030-01-01&SIG=c2VjcmV0%3D&sp=r",
		Err: syscall.ECONNREFUSED,
	}
	err := b.fail(t.Context(), "download", "ns/x", cause)
	require.Equal(t, `azure: download ns/x: Get "http://127.0.0.1:1/acct1/blobs/ns%2F_objects%2Fx?se=2030-01-01&SIG=REDACTED&sp=r": connection refused`, err.Error())
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	var ue *url.Error
	require.ErrorAs(t, err, &ue)
}
