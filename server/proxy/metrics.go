package proxy

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests    *prometheus.HistogramVec
	uploadBytes prometheus.Counter
	cache       *prometheus.CounterVec
	failovers   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "krakenctl_proxy_request_duration_seconds", Help: "Proxy HTTP requests by method and status.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"method", "code"}),
		uploadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_proxy_upload_bytes_total", Help: "Blob bytes relayed to the origins in upload chunks.",
		}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_proxy_manifest_cache_lookups_total", Help: "Manifest cache lookups, by result (hit, miss).",
		}, []string{"result"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_proxy_failovers_total", Help: "Requests retried on another origin or build-index node, by target.",
		}, []string{"target"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.uploadBytes, m.cache, m.failovers} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

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

// ReadFrom keeps the underlying writer's ReadFrom (sendfile, splice) available through the
// wrapper.
func (r *statusRecorder) ReadFrom(src io.Reader) (int64, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return io.Copy(r.ResponseWriter, src)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (m *metrics) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		code := rec.code
		if code == 0 {
			code = http.StatusOK
		}
		m.requests.WithLabelValues(r.Method, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
	})
}
