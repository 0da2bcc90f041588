package tagstore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Store's Prometheus collectors. They always exist so the Store updates them
// unconditionally; they are registered only when Deps.Registerer is set, and unregistered by
// Close so a Store can be reopened with the same registry.
type metrics struct {
	reg          prometheus.Registerer
	collectors   []prometheus.Collector
	appliedIndex prometheus.Gauge
	leader       prometheus.Gauge
	tags         prometheus.Gauge
	links        prometheus.Gauge
	applyLatency *prometheus.HistogramVec
	readBatches  prometheus.Counter
	readBatch    prometheus.Histogram
	resyncs      prometheus.Counter
	applyErrors  prometheus.Counter
	refused      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		appliedIndex: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_tagstore_applied_index",
			Help: "Last Raft log index applied to this node's tag state.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_tagstore_leader",
			Help: "Whether this node is the Raft leader (1) or not (0).",
		}),
		tags: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_tagstore_tags",
			Help: "Number of tags in this node's state.",
		}),
		links: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_tagstore_links",
			Help: "Number of links (per-repository registry records) in this node's state.",
		}),
		applyLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "krakenctl_tagstore_apply_duration_seconds",
			Help:    "Time from handing a command to Raft until it is applied on the leader, by command.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"command"}),
		readBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_tagstore_read_batches_total",
			Help: "Leadership confirmations (read-index rounds) run for linearizable reads.",
		}),
		readBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "krakenctl_tagstore_read_batch_size",
			Help:    "Linearizable reads served by one read-index round.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_tagstore_change_feed_resyncs_total",
			Help: "Change feed subscribers told to resync because they fell behind or a snapshot replaced the state.",
		}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_tagstore_apply_errors_total",
			Help: "Log entries skipped at apply because they are not a known command (a newer node's data, or damage); this replica may differ from the others.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_tagstore_refused_rpcs_total",
			Help: "Raft RPCs refused before they reached Raft, by reason: a peer whose certificate is not a build-index node's (tls), or entries that are not known commands (entry).",
		}, []string{"reason"}),
	}
	for _, r := range []string{refusedTLS, refusedEntry} {
		m.refused.WithLabelValues(r)
	}
	for _, c := range []string{"put", "delete", "import", "member"} {
		m.applyLatency.WithLabelValues(c)
	}
	m.collectors = []prometheus.Collector{m.appliedIndex, m.leader, m.tags, m.links, m.applyLatency, m.readBatches, m.readBatch, m.resyncs,
		m.applyErrors, m.refused}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register tagstore metrics: %w", err)
		}
	}
	return m, nil
}

// Reasons of krakenctl_tagstore_refused_rpcs_total.
const (
	refusedTLS   = "tls"
	refusedEntry = "entry"
)

// setCounts sets the tag and link gauges from st.
func (m *metrics) setCounts(st *state) {
	tags, links := st.counts()
	m.tags.Set(float64(tags))
	m.links.Set(float64(links))
}

// unregister removes the collectors from the registry they were registered with.
func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
