package cacheapi

import (
	"fmt"
	"time"

	"github.com/krakenctl/krakenctl/swarm/castore"
)

// Config is a role's cleanup section (the agent's cleanup:, the origin's store.cleanup:).
// A zero field takes the role's default (AgentDefaults, OriginDefaults), each watermark on its
// own; a negative one turns its rule off, as negative_cache.ttl does (a negative watermark
// turns both off).
//
//	interval: 5m          # how often the policy runs (and once, shortly after start); negative: never
//	tti: 6h               # remove blobs not used for this long; negative: off
//	ttl: -1s              # remove blobs this long after they arrived; negative: off
//	high_watermark: 90    # percent of capacity (or of the disk without one) that starts a cleanup
//	low_watermark: 80     # percent it cleans down to; either -1 turns both off
type Config struct {
	Interval      time.Duration `yaml:"interval"`
	TTI           time.Duration `yaml:"tti"`
	TTL           time.Duration `yaml:"ttl"`
	HighWatermark int           `yaml:"high_watermark"`
	LowWatermark  int           `yaml:"low_watermark"`
}

// Defaults of both roles.
const (
	DefaultInterval      = 5 * time.Minute
	DefaultHighWatermark = 90
	DefaultLowWatermark  = 80
	// DefaultAgentTTI is Kraken's agent default: the host's container runtime has its own copy
	// of every image it pulled; the agent's only serves peers, which want recent blobs.
	DefaultAgentTTI = 6 * time.Hour
)

// Off is the value that turns a duration rule off in Config (any negative value does).
const Off = -1

// AgentDefaults fills the unset fields with an agent's defaults: every 5m, tti 6h, no ttl,
// watermarks 90/80.
func (c *Config) AgentDefaults() { c.defaults(DefaultAgentTTI) }

// OriginDefaults fills the unset fields with an origin's: every 5m, no tti or ttl (its blobs
// are the cache in front of the backend, and one awaiting write-back is never removed),
// watermarks 90/80.
func (c *Config) OriginDefaults() { c.defaults(Off) }

func (c *Config) defaults(tti time.Duration) {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.TTI == 0 {
		c.TTI = tti
	}
	if c.TTL == 0 {
		c.TTL = Off
	}
	switch {
	case c.HighWatermark < 0 || c.LowWatermark < 0:
		// Either one turned off turns the pair off: one without the other means nothing.
		c.HighWatermark, c.LowWatermark = Off, Off
	case c.HighWatermark == 0 && c.LowWatermark == 0:
		c.HighWatermark, c.LowWatermark = DefaultHighWatermark, DefaultLowWatermark
	case c.HighWatermark == 0:
		c.HighWatermark = DefaultHighWatermark
	case c.LowWatermark == 0:
		c.LowWatermark = DefaultLowWatermark
	}
}

// Problems reports every problem, each naming its key after prefix (the section's path with a
// dot, e.g. "cleanup."). It expects a defaults method to have run.
func (c *Config) Problems(prefix string) []error {
	var errs []error
	if c.Interval > 0 && c.Interval < time.Second {
		errs = append(errs, fmt.Errorf("%sinterval: %s is under a second (negative turns the loop off)", prefix, c.Interval))
	}
	off := c.HighWatermark < 0 && c.LowWatermark < 0
	if !off && (c.LowWatermark <= 0 || c.LowWatermark >= c.HighWatermark || c.HighWatermark > 100) {
		errs = append(errs, fmt.Errorf("%shigh_watermark, %slow_watermark: %d and %d: want 0 < low_watermark < high_watermark <= 100 (-1 turns them off)",
			prefix, prefix, c.HighWatermark, c.LowWatermark))
	}
	return errs
}

// Policy is the castore policy the config describes.
func (c Config) Policy() castore.Policy {
	p := castore.Policy{TTI: max(c.TTI, 0), TTL: max(c.TTL, 0)}
	if c.HighWatermark > 0 {
		p.HighWatermark, p.LowWatermark = c.HighWatermark, c.LowWatermark
	}
	return p
}

// firstRunDelay is how long after start the first cleanup runs: soon, so a store that filled
// while the process was down is cleaned before the first interval, but not at once, so the
// role's start (holds of pending write-backs, the swarm's first torrents) comes first.
const firstRunDelay = 10 * time.Second
