package buildindex

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests      *prometheus.HistogramVec
	forwarded     prometheus.Counter
	followerReads prometheus.Counter
	contentChecks *prometheus.CounterVec
	// upstreamTags counts tag, link and tag-list requests to upstream registries by result (ok,
	// not_found, unauthorized, invalid, error); upstreamCacheHits the reads answered from
	// the cache of their answers.
	upstreamTags      *prometheus.CounterVec
	upstreamCacheHits prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "krakenctl_buildindex_request_duration_seconds",
			Help:    "Build-index HTTP requests by method and status.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 4, 10),
		}, []string{"method", "code"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_buildindex_forwarded_total", Help: "Requests this node forwarded to the leader.",
		}),
		followerReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_buildindex_follower_reads_total", Help: "Linearizable reads this follower served itself with a read index from the leader.",
		}),
		contentChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_buildindex_content_checks_total", Help: "Content checks of tag and link puts, by result (ok or the error code).",
		}, []string{"result"}),
		upstreamTags: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_buildindex_upstream_tag_resolutions_total", Help: "Tags, content links and tag lists asked of an upstream registry, by result (ok, not_found, unauthorized, invalid, error).",
		}, []string{"result"}),
		upstreamCacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_buildindex_upstream_tag_cache_hits_total", Help: "Tag reads answered from the cache of upstream registries' answers.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.forwarded, m.followerReads, m.contentChecks, m.upstreamTags, m.upstreamCacheHits} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
