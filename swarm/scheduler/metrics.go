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
	refused         *prometheus.CounterVec // handshakes refused, by reason
	evicted         *prometheus.CounterVec // connections evicted, by reason
	demoted         prometheus.Counter
	challenges      *prometheus.CounterVec // super-seeding challenges, by result
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
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_swarm_handshakes_refused_total",
			Help: "Peer connections refused before they joined a torrent, by reason: tls (no or a foreign certificate), identity (a certificate not allowed in the swarm, or a peer id not bound to it), protocol (a bad handshake), busy (no slot), per_address (too many connections from the address), banned.",
		}, []string{"reason"}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_swarm_connections_evicted_total",
			Help: "Peer connections closed to free their slot or for holding one without use, by reason: idle (a newcomer took the slot), per_address (a newcomer from the same address took it), no_requests (nothing requested either way in time), handshake (displaced while its handshake was awaited).",
		}, []string{"reason"}),
		demoted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_swarm_peers_demoted_total",
			Help: "Peers whose claimed pieces a super-seeding origin stopped counting, because a claim was not borne out.",
		}),
		challenges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_swarm_challenges_total",
			Help: "Challenges a super-seeding origin sent to prove a peer's claimed pieces, by result: proved, failed (a wrong answer, a cancel or no answer in time).",
		}, []string{"result"}),
	}
	torrents := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "krakenctl_swarm_torrents",
		Help: "Torrents downloading or seeding.",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.torrents))
	})
	m.cs = []prometheus.Collector{m.bytes, m.pieces, m.conns, m.blacklisted, m.failed, m.downloadSeconds, m.refused, m.evicted, m.demoted, m.challenges, torrents,
		&torrentCollector{s: s}}
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

// torrentCollector exports the per-torrent stats of the torrents alive at scrape time, labelled
// by digest. A torrent's series disappear when it retires, so their number is bounded by the
// torrents a host downloads or seeds at once, not by every blob it ever saw.
type torrentCollector struct{ s *Scheduler }

var (
	torrentPiecesDesc = prometheus.NewDesc("krakenctl_swarm_torrent_pieces",
		"Pieces of a torrent's blob, by state: have or total.", []string{"digest", "state"}, nil)
	torrentPeersDesc = prometheus.NewDesc("krakenctl_swarm_torrent_peers",
		"Open peer connections of a torrent.", []string{"digest"}, nil)
	torrentBytesDesc = prometheus.NewDesc("krakenctl_swarm_torrent_bytes",
		"Piece bytes of a torrent: received from origins (in_origin) and peers (in_peer), sent (out), and received but not needed (wasted).",
		[]string{"digest", "kind"}, nil)
	torrentBadDesc = prometheus.NewDesc("krakenctl_swarm_torrent_bad_pieces",
		"Pieces of a torrent that failed their hash.", []string{"digest"}, nil)
)

func (c *torrentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- torrentPiecesDesc
	ch <- torrentPeersDesc
	ch <- torrentBytesDesc
	ch <- torrentBadDesc
}

func (c *torrentCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.s.Stats() {
		d := st.Digest.String()
		gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, append([]string{d}, labels...)...)
		}
		gauge(torrentPiecesDesc, float64(st.Have), "have")
		gauge(torrentPiecesDesc, float64(st.Pieces), "total")
		gauge(torrentPeersDesc, float64(len(st.Peers)))
		gauge(torrentBytesDesc, float64(st.BytesInOrigin), "in_origin")
		gauge(torrentBytesDesc, float64(st.BytesIn-st.BytesInOrigin), "in_peer")
		gauge(torrentBytesDesc, float64(st.BytesOut), "out")
		gauge(torrentBytesDesc, float64(st.Wasted), "wasted")
		gauge(torrentBadDesc, float64(st.BadPieces))
	}
}
