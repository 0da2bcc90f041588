// Package roles is the table of krakenctl's server roles: for each, its name as the command
// line spells it, an empty config to decode into, its example config, and how it is started
// from a completed config (listeners bound from the config's listen keys, then New). Commands that take
// a ROLE argument (config validate, config example, serve) look roles up here rather than
// keeping their own lists. It composes the roles, so it imports every one of them; no role
// imports it.
package roles

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/krakenctl/krakenctl/server"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/tracker"
)

// ErrUnknown is wrapped by Lookup's error for a name that is no role.
var ErrUnknown = errors.New("unknown role")

// Role is one server role.
type Role struct {
	// Name is the role as the command line spells it: "agent", "build-index".
	Name string
	// NewConfig returns an empty *Config of the role, to read a file into (config.Read or
	// config.Load).
	NewConfig func() config.Role
	// Example is a complete, commented config file of the role; it passes config.Load.
	Example string
	// Start binds the listeners a completed config (config.Check passed) names and builds
	// the role on them, ready to Run. The role owns the listeners from then on, also when
	// Start fails. The config must come from this Role's NewConfig. ctx bounds the binding
	// only; the role runs until the ctx given to its Run ends.
	Start func(ctx context.Context, cfg config.Role, env Env) (server.Role, error)
}

// table lists the roles in the order help shows them: from the host outwards.
var table = []Role{
	{Name: "agent", NewConfig: func() config.Role { return &agent.Config{} }, Example: agent.Example(), Start: startAgent},
	{Name: "origin", NewConfig: func() config.Role { return &origin.Config{} }, Example: origin.Example(), Start: startOrigin},
	{Name: "tracker", NewConfig: func() config.Role { return &tracker.Config{} }, Example: tracker.Example(), Start: startTracker},
	{Name: "proxy", NewConfig: func() config.Role { return &proxy.Config{} }, Example: proxy.Example(), Start: startProxy},
	{Name: "build-index", NewConfig: func() config.Role { return &buildindex.Config{} }, Example: buildindex.Example(), Start: startBuildIndex},
}

// All returns every role.
func All() []Role { return slices.Clone(table) }

// Names returns the roles' names, as Lookup accepts them.
func Names() []string {
	names := make([]string, len(table))
	for i, r := range table {
		names[i] = r.Name
	}
	return names
}

// Lookup returns the role called name; its error, which wraps ErrUnknown, lists the names.
func Lookup(name string) (Role, error) {
	for _, r := range table {
		if r.Name == name {
			return r, nil
		}
	}
	return Role{}, fmt.Errorf("%w %q: want one of %s", ErrUnknown, name, strings.Join(Names(), ", "))
}
