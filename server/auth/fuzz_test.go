package auth

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParseScope: any scope parameter parses or is refused without panicking, and what parses
// renders back to a scope that parses to the same thing, with no character that could break
// out of a challenge's quoted string.
func FuzzParseScope(f *testing.F) {
	for _, s := range []string{
		"repository:team/app:pull,push", "registry:catalog:*", "repository(plugin):a:pull",
		"repository:a:b:c", "::", "repository:a:,", "a:b:c d:e:f",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		scopes, err := ParseScopes([]string{s})
		if err != nil {
			return
		}
		for _, sc := range scopes {
			out := sc.String()
			require.True(t, quotable(out), "%q", out)
			require.NotContains(t, out, " ")
			again, err := ParseScope(out)
			require.NoError(t, err, out)
			require.Equal(t, sc, again)
		}
	})
}

// FuzzVerifyToken: the token parser refuses anything that is not a token this issuer signed,
// never panics, and a token it accepts grants only what was issued.
func FuzzVerifyToken(f *testing.F) {
	clk := newClock()
	tk := NewTokens(tokenConfig(secretA), clk.now)
	good, _, err := tk.Issue("alice", []ResourceActions{{Type: TypeRepository, Name: "a", Actions: []string{"pull"}}})
	require.NoError(f, err)
	f.Add(good)
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := tk.Verify(s)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidToken)
			return
		}
		// JSON decoding tolerates some variations of the same bytes' meaning (the signature
		// covers the exact bytes, so only the issued payload can verify): what it grants is
		// what was issued.
		require.Equal(t, "alice", c.Subject)
		require.Equal(t, Pull, c.Granted("a"))
		for _, ra := range c.Access {
			require.Equal(t, "a", ra.Name)
		}
	})
}
