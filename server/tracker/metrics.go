package tracker

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Label values of the metrics.
const (
	resultOK      = "ok"
	resultInvalid = "invalid"
	resultHit     = "hit"
	resultMiss    = "miss"
	resultError   = "error"
)

type metrics struct {
	requests  *prometheus.HistogramVec
	announces *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	apiDrops  prometheus.Counter
	peers     prometheus.Gauge
	metainfo  *prometheus.CounterVec
	origins   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "krakenctl_tracker_request_duration_seconds", Help: "Tracker HTTP requests by method and status.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"method", "code"}),
		announces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_tracker_announces_total", Help: "Announces by result: ok, or invalid (refused; krakenctl_tracker_announces_rejected_total says why).",
		}, []string{"result"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_tracker_announces_rejected_total",
			Help: "Announces refused, by reason: malformed, address (a name or an address no host has), loopback (outside a cluster on one host), not_own_address, unbound_peer_id, denied (a certificate that may not announce), conflict (an address or peer id another host holds).",
		}, []string{"reason"}),
		apiDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_tracker_announce_api_dropped_total",
			Help: "Announces accepted without the API address they carried: loopback outside a cluster on one host, or not the announcer's own address.",
		}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_tracker_peers", Help: "Peer entries held over all blobs, including expired ones not yet swept.",
		}),
		metainfo: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_tracker_metainfo_requests_total", Help: "Metainfo requests by result: hit (cache), miss (fetched from an origin) or error.",
		}, []string{"result"}),
		origins: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_tracker_origins_reachable", Help: "Origins whose swarm identity the tracker could read at the last check.",
		}),
	}
	// Export every label value from the start, so that rates work before the first event.
	for _, r := range []string{resultOK, resultInvalid} {
		m.announces.WithLabelValues(r)
	}
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r)
	}
	for _, r := range []string{resultHit, resultMiss, resultError} {
		m.metainfo.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.announces, m.rejected, m.apiDrops, m.peers, m.metainfo, m.origins} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
