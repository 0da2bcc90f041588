package auth

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPatternMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern string
		yes, no []string
	}{
		{"**", []string{"a", "a/b", "a/b/c"}, nil},
		{"team/*", []string{"team/app", "team/x-y"}, []string{"team", "team/a/b", "other/app", "teamx/app"}},
		{"team/**", []string{"team", "team/app", "team/a/b/c"}, []string{"teams/app", "other/team/app"}},
		{"**/app", []string{"app", "team/app", "a/b/app"}, []string{"app/x", "team/apps"}},
		{"a/**/z", []string{"a/z", "a/b/z", "a/b/c/z"}, []string{"a/z/b", "b/z"}},
		{"lib?/x", []string{"lib1/x"}, []string{"lib/x", "lib12/x"}},
		{"team/[ab]*", []string{"team/api", "team/b"}, []string{"team/cart"}},
		{"exact/name", []string{"exact/name"}, []string{"exact/name2", "exact"}},
	} {
		p, err := compilePattern(tc.pattern)
		require.NoError(t, err, tc.pattern)
		for _, n := range tc.yes {
			require.True(t, p.match(n), "%s should match %s", tc.pattern, n)
		}
		for _, n := range tc.no {
			require.False(t, p.match(n), "%s should not match %s", tc.pattern, n)
		}
	}
}

// TestPatternManyDoubleStars: matching stays polynomial whatever the number of ** components
// (a naive backtracking matcher takes exponential time on this).
func TestPatternManyDoubleStars(t *testing.T) {
	t.Parallel()
	p, err := compilePattern(strings.Repeat("**/", 40) + "nomatch")
	require.NoError(t, err)
	require.False(t, p.match(strings.Repeat("a/", 120)+"b"))
}

func TestPolicy(t *testing.T) {
	t.Parallel()
	c := validConfig(t)
	c.Groups["admin"] = []string{"bob"}
	c.Rules = append(c.Rules, Rule{Repositories: []string{"team/app"}, Users: []string{"alice"}, Actions: []string{"delete"}})
	require.NoError(t, c.Validate())
	p, err := NewPolicy(c)
	require.NoError(t, err)

	alice, bob := p.User("alice"), p.User("bob")
	require.Equal(t, []string{"builders"}, alice.Groups)
	anon := Identity{}
	agent := Identity{Cert: "agent-1", Groups: []string{"agent"}}
	adminCert := Identity{Cert: "ops", Groups: []string{GroupAdmin}}
	stranger := Identity{User: "carol"} // not in any rule but "*"

	for _, tc := range []struct {
		id   Identity
		repo string
		want Action
	}{
		// Union: builders get pull+push everywhere, and alice's own rule adds delete on team/app.
		{alice, "any/repo", Pull | Push},
		{alice, "team/app", Pull | Push | Delete},
		// Group admin (from config or from a certificate) may do everything.
		{bob, "any/repo", All},
		{adminCert, "x", All},
		// "*" is every authenticated user; the pattern still applies.
		{stranger, "team/app", Pull},
		{stranger, "team/a/b", 0},
		{stranger, "other", 0},
		// Anonymous pulls, for everyone.
		{anon, "public/base", Pull},
		{anon, "team/app", 0},
		{stranger, "public/x/y", Pull},
		// Certificates match rules by their organizations, never by name.
		{agent, "infra/cache", Pull},
		{agent, "any/repo", 0},
		{Identity{Cert: "alice"}, "any/repo", 0},
	} {
		require.Equal(t, tc.want, p.Allowed(tc.id, tc.repo), "%s on %s", tc.id, tc.repo)
	}
	require.True(t, p.AnonymousPulls())
}

func TestActions(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"pull", "push", "delete"} {
		a, err := ParseAction(s)
		require.NoError(t, err)
		require.Equal(t, s, a.String())
	}
	_, err := ParseAction("*")
	require.Error(t, err, "* is a scope's shorthand, not a rule's action")
	require.Equal(t, "pull,push,delete", All.String())
	require.Equal(t, Pull|Push, actionsOf([]string{"push", "pull", "bogus"}))
	require.Equal(t, All, actionsOf([]string{"*"}))
	require.True(t, All.Has(Pull|Delete))
	require.False(t, Pull.Has(Pull|Push))
}
