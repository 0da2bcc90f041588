package auth

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// clock is a settable clock for tests.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func tokenConfig(secret string) TokenConfig {
	c := Config{Token: TokenConfig{Secret: secret}}
	c.Defaults()
	return c.Token
}

var (
	secretA = strings.Repeat("a", 32)
	secretB = strings.Repeat("b", 32)
)

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tk := NewTokens(tokenConfig(secretA), clk.now)
	access := []ResourceActions{{Type: TypeRepository, Name: "team/app", Actions: []string{"pull", "push"}}}
	s, issued, err := tk.Issue("alice", access)
	require.NoError(t, err)
	require.Equal(t, clk.t, issued)

	c, err := tk.Verify(s)
	require.NoError(t, err)
	require.Equal(t, "alice", c.Subject)
	require.Equal(t, access, c.Access)
	require.Equal(t, Pull|Push, c.Granted("team/app"))
	require.Equal(t, Action(0), c.Granted("team/other"), "a token for one repository grants nothing on another")
	require.True(t, clk.t.Add(DefaultTokenTTL).Equal(c.ExpiresAt.Time))
	require.NotEmpty(t, c.ID)

	// Another proxy with the same secret accepts it.
	_, err = NewTokens(tokenConfig(secretA), clk.now).Verify(s)
	require.NoError(t, err)
}

func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tk := NewTokens(tokenConfig(secretA), clk.now)
	s, _, err := tk.Issue("alice", nil)
	require.NoError(t, err)
	clk.advance(DefaultTokenTTL - time.Second)
	_, err = tk.Verify(s)
	require.NoError(t, err)
	clk.advance(time.Second)
	_, err = tk.Verify(s)
	require.ErrorIs(t, err, ErrInvalidToken)
	require.ErrorIs(t, err, jwt.ErrTokenExpired)

	// Issued in the future (another proxy's clock far ahead): refused.
	ahead := &clock{t: clk.t.Add(time.Hour)}
	s, _, err = NewTokens(tokenConfig(secretA), ahead.now).Issue("alice", nil)
	require.NoError(t, err)
	_, err = tk.Verify(s)
	require.ErrorIs(t, err, ErrInvalidToken)
}

func TestTokenTampered(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tk := NewTokens(tokenConfig(secretA), clk.now)
	s, _, err := tk.Issue("bob", []ResourceActions{{Type: TypeRepository, Name: "team/app", Actions: []string{"pull"}}})
	require.NoError(t, err)
	parts := strings.Split(s, ".")
	require.Len(t, parts, 3)

	// The payload rewritten to grant push: the signature no longer matches.
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	forged := strings.Replace(string(payload), `["pull"]`, `["pull","push"]`, 1)
	require.NotEqual(t, string(payload), forged)
	_, err = tk.Verify(parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2])
	require.ErrorIs(t, err, ErrInvalidToken)
	require.ErrorIs(t, err, jwt.ErrTokenSignatureInvalid)

	// One bit of the signature flipped.
	sig := []byte(parts[2])
	sig[3] ^= 1
	_, err = tk.Verify(parts[0] + "." + parts[1] + "." + string(sig))
	require.ErrorIs(t, err, ErrInvalidToken)

	// alg none, and a token signed with another secret under our key id.
	none := jwt.NewWithClaims(jwt.SigningMethodNone, Claims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: DefaultIssuer, Audience: jwt.ClaimStrings{DefaultService}, Subject: "bob",
		ExpiresAt: jwt.NewNumericDate(clk.t.Add(time.Minute)), IssuedAt: jwt.NewNumericDate(clk.t)}})
	none.Header["kid"] = tk.keys[0].id
	ns, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	require.NoError(t, err)
	_, err = tk.Verify(ns)
	require.ErrorIs(t, err, ErrInvalidToken)

	other := NewTokens(tokenConfig(secretB), clk.now)
	other.keys[0].id = tk.keys[0].id
	os, _, err := other.Issue("bob", nil)
	require.NoError(t, err)
	_, err = tk.Verify(os)
	require.ErrorIs(t, err, ErrInvalidToken)

	// Not a token at all, and one over the size limit.
	for _, bad := range []string{"", "abc", "a.b.c", strings.Repeat("x", maxTokenLen+1)} {
		_, err := tk.Verify(bad)
		require.ErrorIs(t, err, ErrInvalidToken, bad)
	}
}

func TestTokenIssuerAndService(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tk := NewTokens(tokenConfig(secretA), clk.now)
	for _, edit := range []func(*TokenConfig){
		func(c *TokenConfig) { c.Issuer = "someone-else" },
		func(c *TokenConfig) { c.Service = "another-registry" },
	} {
		c := tokenConfig(secretA)
		edit(&c)
		s, _, err := NewTokens(c, clk.now).Issue("alice", nil)
		require.NoError(t, err)
		_, err = tk.Verify(s)
		require.ErrorIs(t, err, ErrInvalidToken)
	}
}

// TestTokenRotation: tokens signed with the previous secret stay good while it is configured
// as previous_secret, and new tokens are signed with the new one.
func TestTokenRotation(t *testing.T) {
	t.Parallel()
	clk := newClock()
	old := NewTokens(tokenConfig(secretA), clk.now)
	s, _, err := old.Issue("alice", nil)
	require.NoError(t, err)

	cfg := tokenConfig(secretB)
	cfg.PreviousSecret = secretA
	rotated := NewTokens(cfg, clk.now)
	_, err = rotated.Verify(s)
	require.NoError(t, err, "a token of the previous secret is accepted in the window")
	fresh, _, err := rotated.Issue("alice", nil)
	require.NoError(t, err)
	_, err = old.Verify(fresh)
	require.ErrorIs(t, err, ErrInvalidToken, "new tokens are signed with the new secret")

	done := NewTokens(tokenConfig(secretB), clk.now)
	_, err = done.Verify(s)
	require.ErrorIs(t, err, ErrInvalidToken, "once the previous secret is removed its tokens are refused")
	_, err = done.Verify(fresh)
	require.NoError(t, err)
}

func TestRandomSecret(t *testing.T) {
	t.Parallel()
	a, b := NewTokens(tokenConfig(""), nil), NewTokens(tokenConfig(""), nil)
	s, _, err := a.Issue("alice", nil)
	require.NoError(t, err)
	_, err = a.Verify(s)
	require.NoError(t, err)
	_, err = b.Verify(s)
	require.ErrorIs(t, err, ErrInvalidToken, "without a configured secret each process has its own")
}

func TestParseScope(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Scope
	}{
		{"repository:team/app:pull,push", Scope{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}},
		{"repository:a:*", Scope{Type: "repository", Name: "a", Actions: []string{"*"}}},
		{"repository(plugin):a/b:pull", Scope{Type: "repository", Name: "a/b", Actions: []string{"pull"}}},
		{"registry:catalog:*", Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}},
		{"other:local:5000/x:act", Scope{Type: "other", Name: "local:5000/x", Actions: []string{"act"}}},
	} {
		got, err := ParseScope(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
		require.Equal(t, strings.Replace(tc.in, "(plugin)", "", 1), got.String())
	}
	for _, bad := range []string{
		"", "repository", "repository:a", ":a:pull", "repository::pull", "repository:a:", "repository:a:pull,,push",
		"repository:UPPER:pull", "repository:a/../b:pull", "repository:a\"b:pull", "repository:a\x00:pull",
		"repository:" + strings.Repeat("a", maxScopeLen) + ":pull",
	} {
		_, err := ParseScope(bad)
		require.Error(t, err, "%q", bad)
	}

	got, err := ParseScopes([]string{"repository:a:pull repository:b:push", "registry:catalog:*"})
	require.NoError(t, err)
	require.Len(t, got, 3)
	_, err = ParseScopes([]string{strings.Repeat("repository:a:pull ", maxScopes+1)})
	require.ErrorContains(t, err, "more than 32 scopes")
}
