package cluster

import (
	"errors"
	"fmt"
)

// Host is the only address a cluster listens on.
const Host = "127.0.0.1"

// The fixed port plan (see the package doc), as offsets from Ports.Base and Ports.Agent.
const (
	// PortSpan is how far above Ports.Base the plan reaches (the proxy's port).
	PortSpan = proxyOffset
	// MaxPlannedOrigins is how many origins the fixed plan has ports for.
	MaxPlannedOrigins = 64
	// AgentStride is how many ports each agent takes from Ports.Agent.
	AgentStride = 10

	buildIndexOffset      = 100
	buildIndexRaftOffset  = 101
	originPeerOffset      = 200
	trackerOffset         = 300
	trackerAdminOffset    = 301
	proxyAdminOffset      = 302
	buildIndexAdminOffset = 303
	originAdminOffset     = 310
	proxyOffset           = 400
	agentPeerOffset       = 1
	agentAdminOffset      = 2
)

// Ports is a port plan. The zero value gives every listener an ephemeral port; with Base set
// every port is fixed, as the package doc shows.
type Ports struct {
	// Base is the first origin's port, P in the plan.
	Base int
	// Agent is the first agent's blob API port, A in the plan; used only with Base.
	Agent int
}

// kind is one of a server's listeners.
type kind int

const (
	dataPort kind = iota
	peerPort
	adminPort
)

func (k kind) String() string {
	switch k {
	case peerPort:
		return "swarm or Raft port"
	case adminPort:
		return "admin listener"
	}
	return "API"
}

// port returns the port of listener k of role r's i-th server: 0 without a plan.
func (p Ports) port(r Role, i int, k kind) (int, error) {
	if p.Base == 0 {
		return 0, nil
	}
	var off int
	switch r {
	case Origin:
		if i >= MaxPlannedOrigins {
			return 0, fmt.Errorf("the port plan has room for %d origins", MaxPlannedOrigins)
		}
		off = [...]int{i, originPeerOffset + i, originAdminOffset + i}[k]
	case Agent:
		return p.Agent + AgentStride*i + [...]int{0, agentPeerOffset, agentAdminOffset}[k], nil
	default:
		if i > 0 {
			return 0, fmt.Errorf("the port plan has room for one %s", r)
		}
		off = map[Role][3]int{
			BuildIndex: {buildIndexOffset, buildIndexRaftOffset, buildIndexAdminOffset},
			Tracker:    {trackerOffset, -1, trackerAdminOffset},
			Proxy:      {proxyOffset, -1, proxyAdminOffset},
		}[r][k]
	}
	return p.Base + off, nil
}

// Check returns what keeps the servers spec asks for from fitting the plan p (all of it,
// joined), nil when they fit. New checks it too; a caller that must reject a plan before doing
// anything else (`dev up` takes a directory lock first) calls it itself.
func (p Ports) Check(s Spec) error { return errors.Join(p.check(&s)...) }

// check returns what keeps spec's servers from fitting the plan.
func (p Ports) check(s *Spec) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if p.Base < 0 || p.Agent < 0 {
		bad("ports must not be negative, got %d and %d", p.Base, p.Agent)
	}
	if p.Base <= 0 {
		return errs
	}
	if p.Base+PortSpan > 65535 {
		bad("port %d leaves no room for the ports up to %d", p.Base, p.Base+PortSpan)
	}
	if s.Origins > MaxPlannedOrigins {
		bad("the port plan has room for %d origins, not %d", MaxPlannedOrigins, s.Origins)
	}
	for _, n := range []struct {
		r Role
		v int
	}{{BuildIndex, s.BuildIndexes}, {Tracker, s.Trackers}, {Proxy, s.Proxies}} {
		if n.v > 1 {
			bad("the port plan has room for one %s, not %d", n.r, n.v)
		}
	}
	if s.Agents <= 0 {
		return errs
	}
	last := p.Agent + AgentStride*(s.Agents-1) + agentAdminOffset // the last agent's admin port
	switch {
	case p.Agent <= 0 || p.Agent+AgentStride*s.Agents > 65535:
		bad("agent port %d leaves no room for %d agents up to 65535", p.Agent, s.Agents)
	case p.Agent <= p.Base+PortSpan && p.Base <= last:
		// Binding would fail on whichever of two roles comes second, naming neither setting.
		bad("agent ports %d-%d overlap ports %d-%d of the other roles: move the agent port or the base port", p.Agent, last, p.Base, p.Base+PortSpan)
	}
	return errs
}
