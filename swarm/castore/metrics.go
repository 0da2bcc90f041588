package castore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's Prometheus collectors. They always exist, so the code updates them
// unconditionally; they are registered only when Options.Registerer is set.
type metrics struct {
	used          prometheus.Gauge
	capacity      prometheus.Gauge
	blobs         prometheus.Gauge
	evictions     prometheus.Counter
	evictedBytes  prometheus.Counter
	ingestedBytes prometheus.Counter
	mismatches    prometheus.Counter
	reserved      prometheus.Gauge
	fulls         *prometheus.CounterVec
	cleanBlobs    *prometheus.CounterVec
	cleanBytes    *prometheus.CounterVec
}

func newMetrics(capacity int64) *metrics {
	m := &metrics{
		used: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_castore_used_bytes",
			Help: "Bytes of committed blobs in the store.",
		}),
		capacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_castore_capacity_bytes",
			Help: "Capacity of the store in bytes; 0 means unlimited.",
		}),
		blobs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_castore_blobs",
			Help: "Number of committed blobs in the store.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_castore_evictions_total",
			Help: "Blobs evicted to make room for new ones.",
		}),
		evictedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_castore_evicted_bytes_total",
			Help: "Bytes of blobs evicted to make room for new ones.",
		}),
		ingestedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_castore_ingested_bytes_total",
			Help: "Bytes of new blobs committed, by Ingest or CommitUpload.",
		}),
		mismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_castore_digest_mismatches_total",
			Help: "Ingests and upload commits refused because the bytes did not match the digest.",
		}),
		reserved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_castore_reserved_bytes",
			Help: "Bytes reserved for writes in progress and upload sessions; they count against the capacity with the committed blobs.",
		}),
		fulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_castore_full_total",
			Help: "Writes refused because the store was full, by reason: capacity (no room could be made by eviction) or disk (the file system had no space).",
		}, []string{"reason"}),
	}
	m.cleanBlobs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "krakenctl_store_cleanup_removed_blobs_total",
		Help: "Blobs removed by cleanup, by reason: tti (idle), ttl (age), watermark (usage over the high watermark) or manual (krakenctl cache evict).",
	}, []string{"reason"})
	m.cleanBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "krakenctl_store_cleanup_removed_bytes_total",
		Help: "Bytes of the blobs removed by cleanup, by reason (see krakenctl_store_cleanup_removed_blobs_total).",
	}, []string{"reason"})
	for _, reason := range []string{"capacity", "disk"} {
		m.fulls.WithLabelValues(reason) // Present at 0, so alerts can rate() it from the start.
	}
	for _, reason := range Reasons {
		m.cleanBlobs.WithLabelValues(reason)
		m.cleanBytes.WithLabelValues(reason)
	}
	m.capacity.Set(float64(capacity))
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.used, m.capacity, m.blobs, m.evictions, m.evictedBytes,
		m.ingestedBytes, m.mismatches, m.reserved, m.fulls, m.cleanBlobs, m.cleanBytes}
}

// register registers every collector with reg, or none of them.
func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	cs := m.collectors()
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

// unregister undoes register, so the directory can be opened again with the same registry.
func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}

func (m *metrics) update(used int64, blobs int) {
	m.used.Set(float64(used))
	m.blobs.Set(float64(blobs))
}

func (m *metrics) evicted(size int64) {
	m.evictions.Inc()
	m.evictedBytes.Add(float64(size))
}

func (m *metrics) ingested(size int64) { m.ingestedBytes.Add(float64(size)) }

func (m *metrics) mismatched() { m.mismatches.Inc() }

func (m *metrics) reservedBytes(n int64) { m.reserved.Set(float64(n)) }

func (m *metrics) full(reason string) { m.fulls.WithLabelValues(reason).Inc() }

func (m *metrics) cleaned(reason string, size int64) {
	m.cleanBlobs.WithLabelValues(reason).Inc()
	m.cleanBytes.WithLabelValues(reason).Add(float64(size))
}
