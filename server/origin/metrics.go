package origin

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests       *prometheus.HistogramVec
	bytesServed    prometheus.Counter
	uploadBytes    prometheus.Counter
	writebackBytes prometheus.Counter
	pulls          *prometheus.CounterVec
	pullErrors     prometheus.Counter
	replications   *prometheus.CounterVec
	negHits        prometheus.Counter
	negEntries     prometheus.GaugeFunc
}

// newMetrics builds the origin's metrics; negEntries reads the negative cache's size.
func newMetrics(reg prometheus.Registerer, negEntries func() int) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "krakenctl_origin_request_duration_seconds", Help: "Origin HTTP requests by method and status.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"method", "code"}),
		bytesServed:    prometheus.NewCounter(prometheus.CounterOpts{Name: "krakenctl_origin_served_bytes_total", Help: "Blob bytes sent to clients and peers."}),
		uploadBytes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "krakenctl_origin_upload_bytes_total", Help: "Blob bytes received in uploads."}),
		writebackBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "krakenctl_origin_writeback_bytes_total", Help: "Blob bytes written back to storage backends."}),
		pulls:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "krakenctl_origin_pull_through_total", Help: "Blobs fetched on a miss, by source."}, []string{"source"}),
		pullErrors:     prometheus.NewCounter(prometheus.CounterOpts{Name: "krakenctl_origin_pull_through_errors_total", Help: "Misses that could not be fetched."}),
		replications:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "krakenctl_origin_replications_total", Help: "Blob copies to other origins, by result."}, []string{"result"}),
		negHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "krakenctl_origin_negative_cache_hits_total",
			Help: "GETs and HEADs of a digest answered 'not in the backend' from the negative cache, without asking the backend."}),
		negEntries: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "krakenctl_origin_negative_cache_entries",
			Help: "(namespace, digest) pairs the backend recently said it does not have."}, func() float64 { return float64(negEntries()) }),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.bytesServed, m.uploadBytes, m.writebackBytes, m.pulls, m.pullErrors, m.replications, m.negHits, m.negEntries} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
