package agent

import (
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
