package buildindex

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests      *prometheus.HistogramVec
	forwarded     prometheus.Counter
	followerReads prometheus.Counter
	contentChecks *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "krakenctl_buildindex_request_duration_seconds",
			Help:    "Build-index HTTP requests by method and status.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 4, 10),
		}, []string{"method", "code"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_buildindex_forwarded_total", Help: "Requests this node forwarded to the leader.",
		}),
		followerReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_buildindex_follower_reads_total", Help: "Linearizable reads this follower served itself with a read index from the leader.",
		}),
		contentChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_buildindex_content_checks_total", Help: "Content checks of tag and link puts, by result (ok or the error code).",
		}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.forwarded, m.followerReads, m.contentChecks} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// statusRecorder remembers the status a handler wrote.
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

// Unwrap lets http.ResponseController reach Flush and deadlines (the change stream).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		code := rec.code
		if code == 0 {
			code = http.StatusOK
		}
		s.metrics.requests.WithLabelValues(r.Method, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
	})
}
