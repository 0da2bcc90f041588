package auth

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// guarded is a Guard in front of a handler that records what reaches it.
type guarded struct {
	t    *testing.T
	g    *Guard
	clk  *clock
	h    http.Handler
	seen []*http.Request
}

// Users of the tests' config (validConfig): alice (group builders: pull+push everywhere), bob
// (pull on team/*), and anonymous pulls of public/**.
const (
	alicePW = "a"
	bobPW   = "b"
)

func newGuarded(t *testing.T, edit func(*Config)) *guarded {
	t.Helper()
	c := validConfig(t)
	if edit != nil {
		edit(c)
	}
	require.NoError(t, c.Validate())
	gd := &guarded{t: t, clk: newClock()}
	g, err := New(c, Options{Now: gd.clk.now})
	require.NoError(t, err)
	gd.g = g
	gd.h = g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gd.seen = append(gd.seen, r)
		if f := PullFilter(r.Context()); f != nil {
			var vis []string
			for _, repo := range []string{"public/base", "team/app", "secret/x"} {
				if f(repo) {
					vis = append(vis, repo)
				}
			}
			w.Header().Set("X-Visible", strings.Join(vis, ","))
		}
		w.WriteHeader(http.StatusOK)
	}))
	return gd
}

type req struct {
	method, target string
	user, password string // Basic credentials when user is set
	bearer         string
	authorization  string // a raw Authorization header
	tls            *tls.ConnectionState
	form           url.Values
}

func (gd *guarded) do(r req) *httptest.ResponseRecorder {
	gd.t.Helper()
	var hr *http.Request
	if r.form != nil {
		hr = httptest.NewRequestWithContext(gd.t.Context(), r.method, "http://proxy.test:5000"+r.target, strings.NewReader(r.form.Encode()))
		hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		hr = httptest.NewRequestWithContext(gd.t.Context(), r.method, "http://proxy.test:5000"+r.target, nil)
	}
	hr.RemoteAddr = "192.0.2.1:4567"
	if r.user != "" {
		hr.SetBasicAuth(r.user, r.password)
	}
	if r.bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	if r.authorization != "" {
		hr.Header.Set("Authorization", r.authorization)
	}
	hr.TLS = r.tls
	rec := httptest.NewRecorder()
	gd.seen = nil
	gd.h.ServeHTTP(rec, hr)
	return rec
}

// errorCode decodes the spec's error body.
func errorCode(t *testing.T, rec *httptest.ResponseRecorder) errcode.Code {
	t.Helper()
	var b errcode.Body
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &b), rec.Body.String())
	require.NotEmpty(t, b.Errors)
	return b.Errors[0].Code
}

// requireRefused checks a refusal that the inner handler never saw.
func (gd *guarded) requireRefused(rec *httptest.ResponseRecorder, status int, code errcode.Code) {
	gd.t.Helper()
	require.Equal(gd.t, status, rec.Code, rec.Body.String())
	require.Equal(gd.t, code, errorCode(gd.t, rec))
	require.Empty(gd.t, gd.seen, "a refused request never reaches the registry")
}

func (gd *guarded) token(user, password string, scopes ...string) string {
	gd.t.Helper()
	q := url.Values{"service": {DefaultService}, "scope": scopes}
	rec := gd.do(req{method: "GET", target: TokenPath + "?" + q.Encode(), user: user, password: password})
	require.Equal(gd.t, http.StatusOK, rec.Code, rec.Body.String())
	var tr TokenResponse
	require.NoError(gd.t, json.Unmarshal(rec.Body.Bytes(), &tr))
	require.Equal(gd.t, tr.Token, tr.AccessToken)
	require.Equal(gd.t, int(DefaultTokenTTL/time.Second), tr.ExpiresIn)
	require.Equal(gd.t, gd.clk.t.Format(time.RFC3339), tr.IssuedAt)
	return tr.Token
}

func TestPingChallenge(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, nil)
	rec := gd.do(req{method: "GET", target: "/v2/"})
	gd.requireRefused(rec, http.StatusUnauthorized, errcode.CodeUnauthorized)
	require.Equal(t, `Bearer realm="http://proxy.test:5000/v2/token",service="krakenctl"`, rec.Header().Get("WWW-Authenticate"))
	require.Equal(t, "registry/2.0", rec.Header().Get("Docker-Distribution-API-Version"))

	rec = gd.do(req{method: "GET", target: "/v2/", user: "alice", password: alicePW})
	require.Equal(t, http.StatusOK, rec.Code)
	rec = gd.do(req{method: "GET", target: "/v2/", user: "alice", password: "wrong"})
	gd.requireRefused(rec, http.StatusUnauthorized, errcode.CodeUnauthorized)
	// An anonymous token is a login too (docker pulls public images that way).
	rec = gd.do(req{method: "GET", target: "/v2/", bearer: gd.token("", "")})
	require.Equal(t, http.StatusOK, rec.Code)

	basic := newGuarded(t, func(c *Config) { c.Mode = ModeBasic; c.Token.Realm = "https://lb.example/v2/token" })
	rec = basic.do(req{method: "GET", target: "/v2/"})
	require.Equal(t, `Basic realm="krakenctl"`, rec.Header().Get("WWW-Authenticate"))

	realm := newGuarded(t, func(c *Config) { c.Token.Realm = "https://lb.example/v2/token" })
	rec = realm.do(req{method: "GET", target: "/v2/"})
	require.Equal(t, `Bearer realm="https://lb.example/v2/token",service="krakenctl"`, rec.Header().Get("WWW-Authenticate"))
}

// TestBasicAuthorization: what Basic credentials may do follows the rules, with 401 for the
// anonymous and 403 for the authenticated.
func TestBasicAuthorization(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, nil)
	manifest := "/v2/team/app/manifests/v1"
	for _, tc := range []struct {
		name   string
		r      req
		status int
		code   errcode.Code
	}{
		{"anonymous pull of a private repository", req{method: "GET", target: manifest}, 401, errcode.CodeUnauthorized},
		{"anonymous push", req{method: "PUT", target: "/v2/public/base/manifests/v1"}, 401, errcode.CodeUnauthorized},
		{"anonymous pull of a public repository", req{method: "GET", target: "/v2/public/base/blobs/sha256:" + strings.Repeat("a", 64)}, 200, ""},
		{"bob pulls", req{method: "HEAD", target: manifest, user: "bob", password: bobPW}, 200, ""},
		{"bob pushes", req{method: "PUT", target: manifest, user: "bob", password: bobPW}, 403, errcode.CodeDenied},
		{"bob starts an upload", req{method: "POST", target: "/v2/team/app/blobs/uploads/", user: "bob", password: bobPW}, 403, errcode.CodeDenied},
		{"bob patches a session", req{method: "PATCH", target: "/v2/team/app/blobs/uploads/abc", user: "bob", password: bobPW}, 403, errcode.CodeDenied},
		{"bob reads a session", req{method: "GET", target: "/v2/team/app/blobs/uploads/abc", user: "bob", password: bobPW}, 403, errcode.CodeDenied},
		{"bob lists tags", req{method: "GET", target: "/v2/team/app/tags/list", user: "bob", password: bobPW}, 200, ""},
		{"bob outside his rule", req{method: "GET", target: "/v2/secret/x/manifests/v1", user: "bob", password: bobPW}, 403, errcode.CodeDenied},
		{"alice pushes", req{method: "PUT", target: manifest, user: "alice", password: alicePW}, 200, ""},
		{"alice deletes a manifest", req{method: "DELETE", target: manifest, user: "alice", password: alicePW}, 403, errcode.CodeDenied},
		{"alice deletes a blob", req{method: "DELETE", target: "/v2/team/app/blobs/sha256:" + strings.Repeat("a", 64), user: "alice", password: alicePW}, 403, errcode.CodeDenied},
		{"alice cancels her upload", req{method: "DELETE", target: "/v2/team/app/blobs/uploads/abc", user: "alice", password: alicePW}, 200, ""},
		{"malformed Basic", req{method: "GET", target: manifest, authorization: "Basic !!!"}, 401, errcode.CodeUnauthorized},
		{"wrong password", req{method: "GET", target: manifest, user: "bob", password: "nope"}, 401, errcode.CodeUnauthorized},
		{"unknown user", req{method: "GET", target: manifest, user: "mallory", password: "x"}, 401, errcode.CodeUnauthorized},
		{"unsupported scheme", req{method: "GET", target: manifest, authorization: "Digest username=bob"}, 401, errcode.CodeUnauthorized},
	} {
		rec := gd.do(tc.r)
		if tc.status == 200 {
			require.Equal(t, 200, rec.Code, "%s: %s", tc.name, rec.Body.String())
			require.Len(t, gd.seen, 1, tc.name)
			continue
		}
		require.Equal(t, tc.status, rec.Code, "%s: %s", tc.name, rec.Body.String())
		require.Equal(t, tc.code, errorCode(t, rec), tc.name)
		require.Empty(t, gd.seen, tc.name)
		if tc.status == 401 {
			require.Contains(t, rec.Header().Get("WWW-Authenticate"), "Bearer realm=", tc.name)
		} else {
			require.Empty(t, rec.Header().Get("WWW-Authenticate"), tc.name)
		}
	}
	// The challenge of an anonymous push asks for the scope it needs.
	rec := gd.do(req{method: "PUT", target: "/v2/public/base/manifests/v1"})
	require.Contains(t, rec.Header().Get("WWW-Authenticate"), `scope="repository:public/base:pull,push"`)
	var b errcode.Body
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &b))
	require.Equal(t, []any{map[string]any{"Type": "repository", "Name": "public/base", "Action": "push"}}, b.Errors[0].Detail)

	// HEAD refusals carry no body, as HTTP requires.
	rec = gd.do(req{method: "HEAD", target: manifest})
	require.Equal(t, 401, rec.Code)
	require.Empty(t, rec.Body.String())
}

// TestTokenFlow: the distribution token flow, end to end through the guard: a token grants the
// intersection of what was asked and what the rules allow, for the repository it names only.
func TestTokenFlow(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, nil)

	// Unauthenticated: the challenge names the realm, service and scope.
	rec := gd.do(req{method: "POST", target: "/v2/team/app/blobs/uploads/"})
	gd.requireRefused(rec, 401, errcode.CodeUnauthorized)
	require.Equal(t, `Bearer realm="http://proxy.test:5000/v2/token",service="krakenctl",scope="repository:team/app:pull,push"`,
		rec.Header().Get("WWW-Authenticate"))

	tok := gd.token("alice", alicePW, "repository:team/app:pull,push,delete")
	claims, err := gd.g.tokens.Verify(tok)
	require.NoError(t, err)
	require.Equal(t, []ResourceActions{{Type: TypeRepository, Name: "team/app", Actions: []string{"pull", "push"}}}, claims.Access,
		"delete was asked but no rule grants it: the token carries the intersection")

	rec = gd.do(req{method: "POST", target: "/v2/team/app/blobs/uploads/", bearer: tok})
	require.Equal(t, 200, rec.Code)

	// A token for team/app used on another repository: alice may push there, so the client is
	// asked for a better token (401 insufficient_scope), and gets nothing done with this one.
	rec = gd.do(req{method: "POST", target: "/v2/team/other/blobs/uploads/", bearer: tok})
	gd.requireRefused(rec, 401, errcode.CodeUnauthorized)
	require.Contains(t, rec.Header().Get("WWW-Authenticate"), `scope="repository:team/other:pull,push",error="insufficient_scope"`)

	// bob's token for team/app: push was asked but only pull is granted; a push is denied (403:
	// no token would help).
	btok := gd.token("bob", bobPW, "repository:team/app:pull,push")
	claims, err = gd.g.tokens.Verify(btok)
	require.NoError(t, err)
	require.Equal(t, []ResourceActions{{Type: TypeRepository, Name: "team/app", Actions: []string{"pull"}}}, claims.Access)
	rec = gd.do(req{method: "GET", target: "/v2/team/app/manifests/v1", bearer: btok})
	require.Equal(t, 200, rec.Code)
	rec = gd.do(req{method: "PUT", target: "/v2/team/app/manifests/v1", bearer: btok})
	gd.requireRefused(rec, 403, errcode.CodeDenied)
	rec = gd.do(req{method: "GET", target: "/v2/secret/x/manifests/v1", bearer: btok})
	gd.requireRefused(rec, 403, errcode.CodeDenied)

	// An expired token is refused with invalid_token, even for what it granted.
	gd.clk.advance(DefaultTokenTTL)
	rec = gd.do(req{method: "POST", target: "/v2/team/app/blobs/uploads/", bearer: tok})
	gd.requireRefused(rec, 401, errcode.CodeUnauthorized)
	require.Contains(t, rec.Header().Get("WWW-Authenticate"), `error="invalid_token"`)

	// Garbage and tampered tokens likewise.
	tok = gd.token("alice", alicePW, "repository:team/app:pull")
	for _, bad := range []string{"garbage", tok[:len(tok)-2] + "xx"} {
		rec = gd.do(req{method: "GET", target: "/v2/team/app/manifests/v1", bearer: bad})
		gd.requireRefused(rec, 401, errcode.CodeUnauthorized)
	}

	// Anonymous tokens carry what anonymous pulls allow, nothing more.
	anon := gd.token("", "", "repository:public/base:pull,push", "repository:team/app:pull")
	claims, err = gd.g.tokens.Verify(anon)
	require.NoError(t, err)
	require.Equal(t, []ResourceActions{{Type: TypeRepository, Name: "public/base", Actions: []string{"pull"}}}, claims.Access)
	rec = gd.do(req{method: "GET", target: "/v2/team/app/manifests/v1", bearer: anon})
	gd.requireRefused(rec, 401, errcode.CodeUnauthorized) // log in
}

// TestTokenOfARemovedUser: a token stops working as soon as its user leaves htpasswd, and
// grants only what the rules still allow.
func TestTokenOfARemovedUser(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, nil)
	tok := gd.token("bob", bobPW, "repository:team/app:pull")
	cfg := validConfig(t)
	cfg.Htpasswd = strings.Split(cfg.Htpasswd, "\n")[0] // alice only
	cfg.Rules[1].Users = []string{AnyUser}
	g2, err := New(cfg, Options{Now: gd.clk.now})
	require.NoError(t, err)
	g2.tokens = gd.g.tokens // same secret
	gd.h = g2.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { gd.seen = append(gd.seen, r) }))
	rec := gd.do(req{method: "GET", target: "/v2/team/app/manifests/v1", bearer: tok})
	gd.requireRefused(rec, 401, errcode.CodeUnauthorized)
}

func TestTokenEndpoint(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, nil)
	get := func(q string, user, password string) *httptest.ResponseRecorder {
		return gd.do(req{method: "GET", target: TokenPath + q, user: user, password: password})
	}
	rec := get("?service=krakenctl&scope=repository:team/app:pull", "alice", "wrong")
	require.Equal(t, 401, rec.Code)
	require.Equal(t, errcode.CodeUnauthorized, errorCode(t, rec))
	require.Equal(t, `Basic realm="krakenctl"`, rec.Header().Get("WWW-Authenticate"))

	rec = get("?service=other&scope=repository:team/app:pull", "alice", alicePW)
	require.Equal(t, 400, rec.Code)
	require.Contains(t, rec.Body.String(), `serves service \"krakenctl\", not \"other\"`)

	rec = get("?scope=repository:Team/App:pull", "alice", alicePW)
	require.Equal(t, 400, rec.Code)
	require.Contains(t, rec.Body.String(), "bad scope")

	// docker login: no scope, account and offline_token parameters.
	rec = get("?account=alice&client_id=docker&offline_token=true&service=krakenctl", "alice", alicePW)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Equal(t, "no-store", rec.Header().Get("Cache-Control"))

	// The catalog scope, and several scopes in one parameter as clients echo a challenge.
	tok := gd.token("bob", bobPW, "registry:catalog:* repository:team/app:pull repository:team/app:push")
	claims, err := gd.g.tokens.Verify(tok)
	require.NoError(t, err)
	require.Equal(t, []ResourceActions{
		{Type: TypeRegistry, Name: CatalogName, Actions: []string{"*"}},
		{Type: TypeRepository, Name: "team/app", Actions: []string{"pull"}},
	}, claims.Access)

	// OAuth2 password grant (containerd tries it first).
	rec = gd.do(req{method: "POST", target: TokenPath, form: url.Values{
		"grant_type": {"password"}, "username": {"alice"}, "password": {alicePW},
		"service": {"krakenctl"}, "scope": {"repository:team/app:push"}, "client_id": {"containerd"},
	}})
	require.Equal(t, 200, rec.Code, rec.Body.String())
	var tr TokenResponse
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &tr))
	claims, err = gd.g.tokens.Verify(tr.AccessToken)
	require.NoError(t, err)
	require.Equal(t, "alice", claims.Subject)
	rec = gd.do(req{method: "POST", target: TokenPath, form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}})
	require.Equal(t, 400, rec.Code)
	require.Contains(t, rec.Body.String(), "unsupported_grant_type")
	rec = gd.do(req{method: "POST", target: TokenPath, form: url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"no"}}})
	require.Equal(t, 401, rec.Code)

	rec = gd.do(req{method: "PUT", target: TokenPath})
	require.Equal(t, 405, rec.Code)
	require.Equal(t, "GET, POST", rec.Header().Get("Allow"))
}

// TestFailedLoginsAreLimited: after a burst of wrong passwords from one address, that address
// is refused with 429 before its passwords are checked, except a password that matched
// recently; the limit wears off with time.
func TestFailedLoginsAreLimited(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, nil)
	target := "/v2/team/app/manifests/v1"
	require.Equal(t, 200, gd.do(req{method: "GET", target: target, user: "bob", password: bobPW}).Code)
	for range failBurst {
		require.Equal(t, 401, gd.do(req{method: "GET", target: target, user: "alice", password: "guess"}).Code)
	}
	rec := gd.do(req{method: "GET", target: target, user: "alice", password: alicePW})
	gd.requireRefused(rec, http.StatusTooManyRequests, errcode.CodeTooManyRequests)
	require.Equal(t, "7", rec.Header().Get("Retry-After"))
	rec = gd.do(req{method: "GET", target: TokenPath, user: "alice", password: alicePW})
	require.Equal(t, http.StatusTooManyRequests, rec.Code, "the token endpoint counts too")

	require.Equal(t, 200, gd.do(req{method: "GET", target: target, user: "bob", password: bobPW}).Code,
		"a client whose password matched recently is not locked out by another's failures")

	gd.clk.advance(failEvery)
	require.Equal(t, 200, gd.do(req{method: "GET", target: target, user: "alice", password: alicePW}).Code)
}

// TestParallelFailedLoginsAreLimited: wrong passwords sent all at once from one address are
// limited as if sent one after the other — at most failBurst of them reach bcrypt — since a
// check takes its share of the limit before it runs.
func TestParallelFailedLoginsAreLimited(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, nil)
	const n = 4 * failBurst
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			// Not gd.do, which records what it saw for the tests that send one at a time.
			hr := httptest.NewRequestWithContext(t.Context(), "GET", "http://proxy.test:5000/v2/team/app/manifests/v1", nil)
			hr.RemoteAddr = "192.0.2.1:4567"
			hr.SetBasicAuth("alice", "guess")
			rec := httptest.NewRecorder()
			gd.h.ServeHTTP(rec, hr)
			codes <- rec.Code
		})
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	require.Equal(t, map[int]int{http.StatusUnauthorized: failBurst, http.StatusTooManyRequests: n - failBurst}, count)
	// A right password from the same address is limited too, until the allowance comes back.
	require.Equal(t, http.StatusTooManyRequests, gd.do(req{method: "GET", target: "/v2/team/app/manifests/v1", user: "alice", password: alicePW}).Code)
	gd.clk.advance(failEvery)
	require.Equal(t, http.StatusOK, gd.do(req{method: "GET", target: "/v2/team/app/manifests/v1", user: "alice", password: alicePW}).Code)
}

func TestLimitKey(t *testing.T) {
	t.Parallel()
	require.Equal(t, "192.0.2.7", limitKey("192.0.2.7"))
	require.Equal(t, "2001:db8:1:2::/64", limitKey("2001:db8:1:2:aaaa:bbbb:cccc:dddd"))
	require.Equal(t, limitKey("2001:db8:1:2::1"), limitKey("2001:db8:1:2:ffff::9"), "one /64, one allowance")
	require.Equal(t, "not-an-ip", limitKey("not-an-ip"))
}

// TestFullLimiterTableAdmitsNewHosts: when every slot holds a host still failing, a new host
// is still checked (one old entry is forgotten) rather than refused.
func TestFullLimiterTableAdmitsNewHosts(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l := newFailLimiter(clk.now)
	for i := range failMaxHosts {
		ok, _, done := l.reserve(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		require.True(t, ok)
		done(false)
	}
	ok, _, done := l.reserve("192.0.2.1")
	require.True(t, ok, "a new host while the table is full")
	done(false)
	require.Len(t, l.hosts, failMaxHosts)
}

func TestPasswordCache(t *testing.T) {
	t.Parallel()
	clk := newClock()
	file, err := parseHtpasswd("alice:" + hash(t, "pw"))
	require.NoError(t, err)
	p, err := newPasswords(file, time.Minute, clk.now)
	require.NoError(t, err)
	require.False(t, p.recentlyChecked("alice", "pw"))
	require.False(t, p.check("alice", "wrong"))
	require.False(t, p.check("nobody", "pw"))
	require.True(t, p.check("alice", "pw"))
	require.True(t, p.recentlyChecked("alice", "pw"))
	require.False(t, p.recentlyChecked("alice", "pw2"), "the cache holds one password, compared in full")
	clk.advance(time.Minute)
	require.False(t, p.recentlyChecked("alice", "pw"), "the cache expires")
}

// TestMountNeedsPullOnTheSource: a mount from a repository the caller may not pull is an
// ordinary upload (the registry never sees the mount), and one it may pull stays a mount.
func TestMountNeedsPullOnTheSource(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, func(c *Config) {
		c.Rules = append(c.Rules, Rule{Repositories: []string{"bobs/**"}, Users: []string{"bob"}, Actions: []string{"pull", "push"}})
	})
	d := "sha256:" + strings.Repeat("a", 64)
	rec := gd.do(req{method: "POST", target: "/v2/bobs/app/blobs/uploads/?mount=" + d + "&from=secret/x", user: "bob", password: bobPW})
	require.Equal(t, 200, rec.Code)
	require.Len(t, gd.seen, 1)
	require.Empty(t, gd.seen[0].URL.RawQuery, "the mount is dropped")

	rec = gd.do(req{method: "POST", target: "/v2/bobs/app/blobs/uploads/?mount=" + d + "&from=team/app", user: "bob", password: bobPW})
	require.Equal(t, 200, rec.Code)
	require.Equal(t, "team/app", gd.seen[0].URL.Query().Get("from"), "bob may pull team/app: the mount stands")
	require.Equal(t, d, gd.seen[0].URL.Query().Get("mount"))

	// With a token: one that lacks pull on a source the rules let bob pull gets a challenge
	// for both scopes (the client comes back with a better token); a source he may not pull
	// turns the mount into an upload.
	tok := gd.token("bob", bobPW, "repository:bobs/app:pull,push")
	rec = gd.do(req{method: "POST", target: "/v2/bobs/app/blobs/uploads/?mount=" + d + "&from=team/app", bearer: tok})
	gd.requireRefused(rec, 401, errcode.CodeUnauthorized)
	require.Contains(t, rec.Header().Get("WWW-Authenticate"),
		`scope="repository:bobs/app:pull,push repository:team/app:pull",error="insufficient_scope"`)
	tok = gd.token("bob", bobPW, "repository:bobs/app:pull,push repository:team/app:pull repository:secret/x:pull")
	rec = gd.do(req{method: "POST", target: "/v2/bobs/app/blobs/uploads/?mount=" + d + "&from=team/app", bearer: tok})
	require.Equal(t, 200, rec.Code)
	require.Equal(t, "team/app", gd.seen[0].URL.Query().Get("from"))
	rec = gd.do(req{method: "POST", target: "/v2/bobs/app/blobs/uploads/?mount=" + d + "&from=secret/x", bearer: tok})
	require.Equal(t, 200, rec.Code)
	require.Empty(t, gd.seen[0].URL.RawQuery)

	// No push on the target: refused, and the challenge asks for the source's pull too.
	rec = gd.do(req{method: "POST", target: "/v2/secret/x/blobs/uploads/?mount=" + d + "&from=team/app"})
	gd.requireRefused(rec, 401, errcode.CodeUnauthorized)
	require.Contains(t, rec.Header().Get("WWW-Authenticate"), `scope="repository:secret/x:pull,push repository:team/app:pull"`)
}

func certState(cn string, orgs ...string) *tls.ConnectionState {
	c := &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: orgs}}
	return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
}

// TestClientCertificates: a verified admin certificate may do everything, whatever the
// Authorization header says; other certificates get what rules grant their organizations; an
// unverified certificate counts for nothing.
func TestClientCertificates(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, nil)
	admin := certState("ops", GroupAdmin)
	for _, r := range []req{
		{method: "DELETE", target: "/v2/secret/x/manifests/v1", tls: admin},
		{method: "PUT", target: "/v2/any/repo/manifests/v1", tls: admin, user: "bob", password: "wrong"},
		{method: "GET", target: "/v2/", tls: admin},
	} {
		rec := gd.do(r)
		require.Equal(t, 200, rec.Code, "%s %s: %s", r.method, r.target, rec.Body.String())
	}
	agent := certState("agent-1", "agent")
	require.Equal(t, 200, gd.do(req{method: "GET", target: "/v2/infra/cache/manifests/v1", tls: agent}).Code)
	gd.requireRefused(gd.do(req{method: "PUT", target: "/v2/infra/cache/manifests/v1", tls: agent}), 403, errcode.CodeDenied)
	require.Equal(t, 200, gd.do(req{method: "GET", target: "/v2/", tls: agent}).Code)

	unverified := &tls.ConnectionState{PeerCertificates: certState("ops", GroupAdmin).VerifiedChains[0]}
	gd.requireRefused(gd.do(req{method: "DELETE", target: "/v2/secret/x/manifests/v1", tls: unverified}), 401, errcode.CodeUnauthorized)
	rec := gd.do(req{method: "GET", target: "/v2/", tls: unverified})
	require.Equal(t, `Bearer realm="https://proxy.test:5000/v2/token",service="krakenctl"`, rec.Header().Get("WWW-Authenticate"),
		"over TLS the realm is https")
}

func TestCatalogIsFiltered(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, nil)
	for _, tc := range []struct {
		r    req
		want string
	}{
		{req{method: "GET", target: "/v2/_catalog"}, "public/base"},
		{req{method: "GET", target: "/v2/_catalog", user: "bob", password: bobPW}, "public/base,team/app"},
		{req{method: "GET", target: "/v2/_catalog", user: "alice", password: alicePW}, "public/base,team/app,secret/x"},
		{req{method: "GET", target: "/v2/_catalog", tls: certState("ops", GroupAdmin)}, "public/base,team/app,secret/x"},
	} {
		rec := gd.do(tc.r)
		require.Equal(t, 200, rec.Code)
		require.Equal(t, tc.want, rec.Header().Get("X-Visible"))
	}
	// A token lists what it grants, or, with the catalog scope, all its subject may pull.
	for scope, want := range map[string]string{
		"repository:team/app:pull": "team/app",
		"registry:catalog:*":       "public/base,team/app,secret/x",
	} {
		tok := gd.token("alice", alicePW, scope)
		rec := gd.do(req{method: "GET", target: "/v2/_catalog", bearer: tok})
		require.Equal(t, 200, rec.Code)
		require.Equal(t, want, rec.Header().Get("X-Visible"), "a token for %s", scope)
	}
	// Without anonymous pulls, the anonymous caller is asked to log in.
	closed := newGuarded(t, func(c *Config) { c.AnonymousPull = nil })
	rec := closed.do(req{method: "GET", target: "/v2/_catalog"})
	closed.requireRefused(rec, 401, errcode.CodeUnauthorized)
	require.Contains(t, rec.Header().Get("WWW-Authenticate"), `scope="registry:catalog:*"`)
}

// TestOtherPathsPassThrough: paths outside the registry API (health) and unknown /v2 paths
// reach the inner handler untouched, which answers them as it would without the guard.
func TestOtherPathsPassThrough(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, nil)
	for _, target := range []string{"/health", "/v2/nothing-here"} {
		rec := gd.do(req{method: "GET", target: target})
		require.Equal(t, 200, rec.Code, target)
		require.Len(t, gd.seen, 1, target)
	}
}

// TestFailedLoginIsLogged: a failed login is logged with the user and the client's address,
// never the password.
func TestFailedLoginIsLogged(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	c := validConfig(t)
	g, err := New(c, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	require.NoError(t, err)
	gd := &guarded{t: t, g: g, clk: newClock(), h: g.Wrap(http.NotFoundHandler())}
	rec := gd.do(req{method: "GET", target: "/v2/", user: "alice", password: "hunter2-guess"})
	require.Equal(t, 401, rec.Code)
	require.Contains(t, logs.String(), `"msg":"login failed","user":"alice","remote":"192.0.2.1:4567"`)
	require.NotContains(t, logs.String(), "hunter2")
}

// TestWrapAdmin: an API behind WrapAdmin serves the admin group only, authenticated by a
// certificate or a password; a token is not enough, even an admin's.
func TestWrapAdmin(t *testing.T) {
	t.Parallel()
	gd := newGuarded(t, func(c *Config) { c.Groups["admin"] = []string{"alice"} })
	aliceToken := gd.token("alice", alicePW, "repository:x:pull")
	gd.h = gd.g.WrapAdmin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gd.seen = append(gd.seen, r)
		w.WriteHeader(http.StatusOK)
	}))
	const target = "/namespace/x/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	for _, r := range []req{
		{tls: certState("ops", GroupAdmin)},
		{user: "alice", password: alicePW},
	} {
		r.method, r.target = "GET", target
		rec := gd.do(r)
		require.Equal(t, 200, rec.Code, rec.Body.String())
		require.Len(t, gd.seen, 1)
	}
	for _, r := range []req{{}, {user: "alice", password: "wrong"}, {bearer: "not-a-token"}} {
		r.method, r.target = "GET", target
		rec := gd.do(r)
		gd.requireRefused(rec, 401, errcode.CodeUnauthorized)
		require.Equal(t, `Basic realm="krakenctl"`, rec.Header().Get("WWW-Authenticate"), "tokens do not do here: ask for a password")
	}
	for _, r := range []req{
		{user: "bob", password: bobPW},
		{tls: certState("agent-1", "agent")},
		{bearer: aliceToken},
	} {
		r.method, r.target = "GET", target
		gd.requireRefused(gd.do(r), 403, errcode.CodeDenied)
	}
}
