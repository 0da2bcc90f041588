package limit

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// vectors are the metrics every route's Backend shares in one registry.
type vectors struct {
	throttled *prometheus.CounterVec // route, op
	retries   *prometheus.CounterVec // route, op
	rateWait  *prometheus.CounterVec // route, direction
	slotWait  *prometheus.CounterVec // route, op
}

// routeMetrics are the vectors seen from one route.
type routeMetrics struct {
	v     vectors
	route string
}

func newMetrics(reg prometheus.Registerer, route string) (*routeMetrics, error) {
	v := vectors{
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_backend_throttled_total",
			Help: "Answers of a backend asking to slow down (429, 503, SlowDown...), by route and operation.",
		}, []string{"route", "op"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_backend_retries_total",
			Help: "Backend requests tried again after a throttling answer or a connection reset, by route and operation.",
		}, []string{"route", "op"}),
		rateWait: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_backend_rate_wait_seconds_total",
			Help: "Time requests waited for a route's bandwidth limit, by route and direction (upload, download).",
		}, []string{"route", "direction"}),
		slotWait: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_backend_concurrency_wait_seconds_total",
			Help: "Time requests waited for a slot under a route's concurrency limit, by route and operation.",
		}, []string{"route", "op"}),
	}
	if reg != nil {
		var err error
		for _, c := range []**prometheus.CounterVec{&v.throttled, &v.retries, &v.rateWait, &v.slotWait} {
			if *c, err = registerOrExisting(reg, *c); err != nil {
				return nil, err
			}
		}
	}
	return &routeMetrics{v: v, route: route}, nil
}

// registerOrExisting registers c, or returns the vector already registered under its name, so
// that the routes of one role share one.
func registerOrExisting(reg prometheus.Registerer, c *prometheus.CounterVec) (*prometheus.CounterVec, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing, nil
		}
	}
	return nil, fmt.Errorf("register backend limit metrics: %w", err)
}

func (m *routeMetrics) throttled(op string) prometheus.Counter {
	return m.v.throttled.WithLabelValues(m.route, op)
}

func (m *routeMetrics) retries(op string) prometheus.Counter {
	return m.v.retries.WithLabelValues(m.route, op)
}

func (m *routeMetrics) rateWait(direction string) prometheus.Counter {
	return m.v.rateWait.WithLabelValues(m.route, direction)
}

func (m *routeMetrics) slotWait(op string) prometheus.Counter {
	return m.v.slotWait.WithLabelValues(m.route, op)
}
