package httpserve

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Instrument returns h observing every request's duration in requests, labelled by method and
// status code ("aborted" when the handler panics, as net/http handlers do with
// http.ErrAbortHandler to cut a response off mid-body). requests must have exactly the labels
// (method, code). The wrapper keeps the ResponseWriter's ReadFrom (sendfile, splice) and lets
// http.ResponseController reach the connection (Flush for event streams).
func Instrument(h http.Handler, requests *prometheus.HistogramVec) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		code := "aborted" // stays so when the handler panics
		defer func() {
			requests.WithLabelValues(r.Method, code).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(rec, r)
		code = strconv.Itoa(max(rec.code, http.StatusOK))
	})
}

// statusRecorder remembers the status a handler sent.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

// ReadFrom keeps sendfile available through the wrapper: io.Copy and io.CopyN to the response
// end in the connection's ReadFrom.
func (r *statusRecorder) ReadFrom(src io.Reader) (int64, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return io.Copy(r.ResponseWriter, src)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Interface guards
var _ io.ReaderFrom = (*statusRecorder)(nil)
