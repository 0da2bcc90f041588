package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// hash returns a bcrypt hash of password at the cheapest cost, for tests.
func hash(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	require.NoError(t, err)
	return string(h)
}

func TestParseHtpasswd(t *testing.T) {
	t.Parallel()
	alice := hash(t, "alice-pw")
	h, err := parseHtpasswd("# users\n\nalice:" + alice + "\r\nbob:" + strings.Replace(hash(t, "bob-pw"), "$2a$", "$2y$", 1) + "\n")
	require.NoError(t, err)
	require.True(t, h.has("alice"))
	require.True(t, h.has("bob"))
	require.False(t, h.has("carol"))
	require.Equal(t, bcrypt.MinCost, h.maxCost)

	empty, err := parseHtpasswd("")
	require.NoError(t, err)
	require.Empty(t, empty.users)

	costly := strings.Replace(alice, "$04$", "$15$", 1)
	for _, tc := range []struct{ content, want string }{
		{"carol:$apr1$abc$def", `htpasswd: line 1: user "carol": an MD5 (apr1) hash, not bcrypt: only bcrypt is accepted (make one with htpasswd -B)`},
		{"x\ncarol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", `htpasswd: line 2: user "carol": a SHA-1 hash, not bcrypt`},
		{"carol:$6$salt$hash", `a crypt(3) hash, not bcrypt`},
		{"carol:plain", `an unknown kind of hash, not bcrypt`},
		{"carol:$2a$10$short", `line 1: user "carol": malformed bcrypt hash`},
		{"carol:" + costly, `line 1: user "carol": bcrypt cost 15 is over 14`},
		{"no colon here", `htpasswd: line 1: want user:hash`},
		{":" + alice, `htpasswd: line 1: empty user name`},
		{"a b:" + alice, `user name "a b" has a space`},
		{"alice:" + alice + "\nalice:" + alice, `htpasswd: line 2: user "alice" is listed twice`},
	} {
		_, err := parseHtpasswd(tc.content)
		require.ErrorContains(t, err, tc.want, tc.content)
		require.NotContains(t, err.Error(), alice, "a hash never appears in an error")
	}
	// Every bad line is reported, not only the first.
	_, err = parseHtpasswd("a:$apr1$x\nb:$apr1$y\n")
	require.ErrorContains(t, err, "line 1")
	require.ErrorContains(t, err, "line 2")
}

func validConfig(t *testing.T) *Config {
	t.Helper()
	c := &Config{
		Htpasswd: "alice:" + hash(t, "a") + "\nbob:" + hash(t, "b") + "\n",
		Groups:   map[string][]string{"builders": {"alice"}},
		Rules: []Rule{
			{Repositories: []string{"**"}, Groups: []string{"builders"}, Actions: []string{"pull", "push"}},
			{Repositories: []string{"team/*"}, Users: []string{"bob", AnyUser}, Actions: []string{"pull"}},
			{Repositories: []string{"infra/**"}, Groups: []string{"agent"}, Actions: []string{"pull"}},
		},
		AnonymousPull: []string{"public/**"},
		Token:         TokenConfig{Secret: strings.Repeat("s", 32)},
	}
	c.Defaults()
	return c
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	var c Config
	c.Defaults()
	require.Equal(t, ModeToken, c.Mode)
	require.Equal(t, DefaultTokenTTL, c.Token.TTL)
	require.Equal(t, DefaultIssuer, c.Token.Issuer)
	require.Equal(t, DefaultService, c.Token.Service)
	require.NoError(t, c.Validate(), "an empty auth section is valid: only admin certificates get in")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, validConfig(t).Validate())
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"mode", func(c *Config) { c.Mode = "jwt" }, `mode: "jwt" is neither token nor basic`},
		{"htpasswd", func(c *Config) { c.Htpasswd = "carol:$apr1$x$y" }, `htpasswd: line 1: user "carol": an MD5 (apr1) hash, not bcrypt`},
		{"group member", func(c *Config) { c.Groups["builders"] = []string{"alice", "mallory"} }, `groups.builders[1]: user "mallory" is not in htpasswd`},
		{"group name", func(c *Config) { c.Groups["a b"] = nil }, `groups.a b: name "a b" has a space`},
		{"no repositories", func(c *Config) { c.Rules[0].Repositories = nil }, `rules[0].repositories: required`},
		{"bad glob", func(c *Config) { c.Rules[1].Repositories = []string{"team/["} }, `rules[1].repositories[0]: pattern "team/[": syntax error in pattern`},
		{"partial doublestar", func(c *Config) { c.Rules[1].Repositories = []string{"team/a**"} }, `rules[1].repositories[0]: pattern "team/a**": ** must be a whole path component`},
		{"empty component", func(c *Config) { c.Rules[1].Repositories = []string{"team//x"} }, `has an empty path component`},
		{"nobody", func(c *Config) { c.Rules[1].Users = nil }, `rules[1].users: a rule names users or groups`},
		{"unknown user", func(c *Config) { c.Rules[1].Users = []string{"carol"} }, `rules[1].users[0]: user "carol" is not in htpasswd`},
		{"unknown group", func(c *Config) { c.Rules[0].Groups = []string{"bulders"} }, `rules[0].groups[0]: group "bulders" is not defined in groups`},
		{"no actions", func(c *Config) { c.Rules[0].Actions = nil }, `rules[0].actions: required`},
		{"bad action", func(c *Config) { c.Rules[0].Actions = []string{"pull", "write"} }, `rules[0].actions[1]: "write" is not an action (want pull, push or delete)`},
		{"anonymous pattern", func(c *Config) { c.AnonymousPull = []string{"ok/**", "["} }, `anonymous_pull[1]: pattern "[": syntax error`},
		{"short secret", func(c *Config) { c.Token.Secret = "short" }, `token.secret: must be at least 32 bytes, got 5`},
		{"short previous", func(c *Config) { c.Token.PreviousSecret = "x" }, `token.previous_secret: must be at least 32 bytes, got 1`},
		{"previous alone", func(c *Config) { c.Token.Secret, c.Token.PreviousSecret = "", strings.Repeat("p", 32) }, `token.previous_secret: set only with token.secret`},
		{"ttl", func(c *Config) { c.Token.TTL = 2 * time.Hour }, `token.ttl: must be between 1s and 1h0m0s, got 2h0m0s`},
		{"service", func(c *Config) { c.Token.Service = `a"b` }, `token.service: must be printable`},
		{"realm", func(c *Config) { c.Token.Realm = "/v2/token" }, `token.realm: "/v2/token" is not an absolute http(s) URL`},
	} {
		c := validConfig(t)
		tc.edit(c)
		err := c.Validate()
		require.ErrorContains(t, err, tc.want, tc.name)
		require.NotContains(t, err.Error(), strings.Repeat("s", 32), "a secret never appears in an error")
	}
}

func TestHtpasswdLine(t *testing.T) {
	t.Parallel()
	line, err := HtpasswdLine("dev", "s3cret", bcrypt.MinCost)
	require.NoError(t, err)
	h, err := parseHtpasswd(line)
	require.NoError(t, err)
	p, err := newPasswords(h, time.Minute, time.Now)
	require.NoError(t, err)
	require.True(t, p.check("dev", "s3cret"))
	require.False(t, p.check("dev", "other"))
	_, err = HtpasswdLine("a b", "x", bcrypt.MinCost)
	require.Error(t, err)
	_, err = HtpasswdLine("a", "x", MaxBcryptCost+1)
	require.Error(t, err)
}
