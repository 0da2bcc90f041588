// Package roles is the table of krakenctl's server roles: for each, its name as the command
// line spells it, an empty config to decode into, and its example config. Commands that take
// a ROLE argument (config validate, config example, serve) look roles up here rather than
// keeping their own lists. It composes the roles, so it imports every one of them; no role
// imports it.
package roles

import (
	"errors"
	"fmt"
	"slices"
	"strings"

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
}

// table lists the roles in the order help shows them: from the host outwards.
var table = []Role{
	{Name: "agent", NewConfig: func() config.Role { return &agent.Config{} }, Example: agent.Example()},
	{Name: "origin", NewConfig: func() config.Role { return &origin.Config{} }, Example: origin.Example()},
	{Name: "tracker", NewConfig: func() config.Role { return &tracker.Config{} }, Example: tracker.Example()},
	{Name: "proxy", NewConfig: func() config.Role { return &proxy.Config{} }, Example: proxy.Example()},
	{Name: "build-index", NewConfig: func() config.Role { return &buildindex.Config{} }, Example: buildindex.Example()},
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
