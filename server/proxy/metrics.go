package proxy

import (
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
