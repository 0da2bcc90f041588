package scheduler

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reg             prometheus.Registerer
	cs              []prometheus.Collector
	bytes           *prometheus.CounterVec
	pieces          *prometheus.CounterVec
	conns           prometheus.Gauge
	blacklisted     prometheus.Counter
	failed          prometheus.Counter
	downloadSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, s *Scheduler) *metrics {
	m := &metrics{
		reg: reg,
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_swarm_piece_bytes_total",
			Help: "Verified piece bytes received (direction=in) and sent (out), by kind of peer (origin or peer).",
		}, []string{"direction", "kind"}),
		pieces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_swarm_pieces_total",
			Help: "Pieces received, by result: ok, bad (failed its hash), duplicate.",
		}, []string{"result"}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_swarm_connections",
			Help: "Open peer connections.",
		}),
		blacklisted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_swarm_blacklisted_total",
			Help: "Peers blacklisted for breaking the protocol, sending bad pieces or stalling.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_swarm_downloads_failed_total",
			Help: "Downloads that failed (no metainfo, digest mismatch, storage errors).",
		}),
		downloadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "krakenctl_swarm_download_duration_seconds",
			Help:    "Time from the start of a download to the blob's commit.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 16),
		}),
	}
	torrents := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "krakenctl_swarm_torrents",
		Help: "Torrents downloading or seeding.",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.torrents))
	})
	m.cs = []prometheus.Collector{m.bytes, m.pieces, m.conns, m.blacklisted, m.failed, m.downloadSeconds, torrents}
	if reg != nil {
		for _, c := range m.cs {
			if err := reg.Register(c); err != nil {
				// A second scheduler on the same registry: keep counting privately.
				continue
			}
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.cs {
		m.reg.Unregister(c)
	}
}
