package origin_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// readOnly is a backend that knows it takes no uploads, as an upstream registry or an HTTP
// backend without allow_put does.
type readOnly struct{ backend.Backend }

func (readOnly) CheckWrite(string) error {
	return fmt.Errorf("%w: an upstream registry takes no uploads", backend.ErrReadOnly)
}

// A push into a namespace whose backend cannot write is refused when it starts (monolithic,
// chunked and mount alike) with 405 UNSUPPORTED naming the namespace and the backend, and
// nothing is stored; it used to be acknowledged and its write-back silently dropped. A
// namespace with no backend at all is refused too; a writable one is untouched.
func TestPushIntoReadOnlyNamespaceRefused(t *testing.T) {
	t.Parallel()
	writable := memory.New()
	router := backend.NewRouter(
		backend.Route{Pattern: regexp.MustCompile(`mirror/.*`), Name: "upstream-hub", Backend: readOnly{memory.New()}},
		backend.Route{Pattern: regexp.MustCompile(`team/.*`), Name: "team-store", Backend: writable},
	)
	c := newCluster(t, 1, 1, router, nil)
	o := c.origin(c.nodes[0].addr)
	base := "http://" + c.nodes[0].addr
	data, d := randomBlob(t, 1000)

	post := func(path string, body []byte) (int, errcode.BodyError) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+path, bytes.NewReader(body))
		require.NoError(t, err)
		resp, err := c.hc.Do(req)
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		var b errcode.Body
		if json.Unmarshal(raw, &b) == nil && len(b.Errors) > 0 {
			return resp.StatusCode, b.Errors[0]
		}
		return resp.StatusCode, errcode.BodyError{}
	}
	for _, path := range []string{
		"/namespace/mirror%2Fubuntu/uploads?digest=" + d.String(),
		"/namespace/mirror%2Fubuntu/uploads",
		"/namespace/mirror%2Fubuntu/uploads?mount=" + d.String(),
	} {
		status, e := post(path, data)
		require.Equal(t, http.StatusMethodNotAllowed, status, path)
		require.Equal(t, errcode.CodeUnsupported, e.Code, path)
		require.Contains(t, e.Message, `namespace "mirror/ubuntu"`, path)
		require.Contains(t, e.Message, `backend "upstream-hub"`, path)
		require.Contains(t, e.Message, "upstream registry takes no uploads", path)
	}
	_, err := o.Stat(t.Context(), "team/app", d)
	require.Error(t, err, "nothing was stored")

	status, e := post("/namespace/nowhere%2Fx/uploads?digest="+d.String(), data)
	require.Equal(t, http.StatusNotFound, status)
	require.Equal(t, errcode.CodeNameUnknown, e.Code)

	require.NoError(t, o.Upload(t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data))))
	require.Equal(t, data, readAll(t, o, "team/app", d))
}
