package ring

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the result label of krakenctl_ring_health_checks_total.
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

// metrics are the Ring's Prometheus collectors. They always exist so the Ring can update them
// unconditionally; they are exported only when Deps.Registerer is set.
type metrics struct {
	healthy *prometheus.GaugeVec
	checks  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, members []string) (*metrics, error) {
	m := &metrics{
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "krakenctl_ring_member_healthy",
			Help: "Whether the ring considers the origin member healthy (1) or down (0).",
		}, []string{"member"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_ring_health_checks_total",
			Help: "Active health checks of origin members, by result (success or failure).",
		}, []string{"member", "result"}),
	}
	// Create every series up front so dashboards see zeros rather than missing series.
	for _, mb := range members {
		m.addMember(mb)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.healthy, m.checks}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register ring metrics: %w", err)
		}
	}
	return m, nil
}

// addMember creates a new member's series: healthy, no checks yet.
func (m *metrics) addMember(mb string) {
	m.healthy.WithLabelValues(mb).Set(1)
	m.checks.WithLabelValues(mb, resultSuccess)
	m.checks.WithLabelValues(mb, resultFailure)
}

// removeMember deletes a departed member's series, so a ring that follows DNS does not keep
// one per address it ever had.
func (m *metrics) removeMember(mb string) {
	m.healthy.DeleteLabelValues(mb)
	m.checks.DeleteLabelValues(mb, resultSuccess)
	m.checks.DeleteLabelValues(mb, resultFailure)
}
