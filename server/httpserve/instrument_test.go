package httpserve_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/httpserve"
)

// TestInstrument counts each request under its method and status: an explicit status, an
// implicit 200 from a write or a ReadFrom, and "aborted" for a handler that panics with
// http.ErrAbortHandler.
func TestInstrument(t *testing.T) {
	t.Parallel()
	vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "test_requests_seconds"}, []string{"method", "code"})
	// The handlers run on the server's goroutines, so they hand what they check to the test's,
	// before they answer.
	keepsReadFrom := make(chan bool, 1)
	flushed := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/teapot", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	mux.HandleFunc("/write", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("x")) })
	mux.HandleFunc("/readfrom", func(w http.ResponseWriter, _ *http.Request) {
		rf, ok := w.(io.ReaderFrom)
		keepsReadFrom <- ok
		if ok {
			_, _ = rf.ReadFrom(strings.NewReader("body"))
		}
	})
	mux.HandleFunc("/abort", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "10")
		_, _ = w.Write([]byte("half"))
		// Flushed through the wrapper (Unwrap), so the client sees a cut-off body and does
		// not retry the request as it would a connection closed before any answer.
		flushed <- http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	})
	srv := httptest.NewServer(httpserve.Instrument(mux, vec))
	t.Cleanup(srv.Close)
	for _, p := range []string{"/teapot", "/write", "/readfrom", "/abort", "/missing"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+p, nil)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}
	require.Len(t, keepsReadFrom, 1, "/readfrom was served")
	require.True(t, <-keepsReadFrom, "the wrapper keeps ReadFrom")
	require.Len(t, flushed, 1, "/abort was served")
	require.NoError(t, <-flushed, "flushed through the wrapper")
	count := func(code string) uint64 {
		var m dto.Metric
		require.NoError(t, vec.WithLabelValues("GET", code).(prometheus.Metric).Write(&m))
		return m.GetHistogram().GetSampleCount()
	}
	require.Equal(t, uint64(1), count("418"))
	require.Equal(t, uint64(2), count("200"), "write and readfrom")
	require.Equal(t, uint64(1), count("404"))
	require.Equal(t, uint64(1), count("aborted"))
}
