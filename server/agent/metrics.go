package agent

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests  *prometheus.HistogramVec
	firstByte prometheus.Histogram
	served    prometheus.Counter
	aborted   prometheus.Counter
	// indexFailures counts build-index requests passed on to the next node, by node.
	indexFailures *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "krakenctl_agent_request_duration_seconds", Help: "Agent HTTP requests by method and status (aborted: cut off mid-body).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"method", "code"}),
		firstByte: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "krakenctl_agent_first_byte_seconds", Help: "Time from a blob GET to its response headers, sent once the first requested byte is verified.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		served:  prometheus.NewCounter(prometheus.CounterOpts{Name: "krakenctl_agent_served_bytes_total", Help: "Blob bytes sent to local clients."}),
		aborted: prometheus.NewCounter(prometheus.CounterOpts{Name: "krakenctl_agent_aborted_streams_total", Help: "Blob responses cut off because the download failed after the headers were sent."}),
		indexFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_agent_build_index_failures_total", Help: "Registry reads a build-index node could not answer (unreachable, no answer in time, 5xx), by node.",
		}, []string{"node"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.firstByte, m.served, m.aborted, m.indexFailures} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
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

// ReadFrom keeps sendfile available through the wrapper: the scheduler copies file ranges to
// the response with io.CopyN, which ends in the connection's ReadFrom.
func (r *statusRecorder) ReadFrom(src io.Reader) (int64, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return io.Copy(r.ResponseWriter, src)
}

// Unwrap lets http.ResponseController reach the connection (Flush for event streams).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		code := "aborted" // stays so when the handler panics with http.ErrAbortHandler
		defer func() {
			s.metrics.requests.WithLabelValues(r.Method, code).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(rec, r)
		code = strconv.Itoa(max(rec.code, http.StatusOK))
	})
}

// Interface guards
var _ io.ReaderFrom = (*statusRecorder)(nil)
