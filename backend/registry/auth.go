package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// defaultTokenLifetime applies when a token response has no expires_in, as the distribution
// token specification prescribes.
const defaultTokenLifetime = 60 * time.Second

// maxTokenResponse bounds a token endpoint's answer.
const maxTokenResponse = 1 << 20

// challenge is one parsed WWW-Authenticate challenge.
type challenge struct {
	scheme string // lower case: "basic" or "bearer"
	params map[string]string
}

// parseChallenges parses WWW-Authenticate header values. It understands one challenge per
// header value, which is what registries send.
func parseChallenges(values []string) []challenge {
	var out []challenge
	for _, v := range values {
		v = strings.TrimSpace(v)
		scheme, rest, _ := strings.Cut(v, " ")
		if scheme == "" {
			continue
		}
		out = append(out, challenge{scheme: strings.ToLower(scheme), params: parseAuthParams(rest)})
	}
	return out
}

// parseAuthParams parses `key=value, key="quoted \"value\""` lists.
func parseAuthParams(s string) map[string]string {
	params := map[string]string{}
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return params
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return params
		}
		key := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val strings.Builder
		if strings.HasPrefix(s, `"`) {
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
			}
			s = s[min(i+1, len(s)):]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val.WriteString(strings.TrimSpace(s[:end]))
			s = s[end:]
		}
		params[key] = val.String()
	}
}

// authMode is what the backend has learned about how the registry authenticates.
type authMode struct {
	scheme  string // "" (not yet challenged), "basic" or "bearer"
	realm   string // bearer only
	service string // bearer only
}

// tokenKey identifies a cached bearer token.
type tokenKey struct {
	realm, service, scope string
}

type cachedToken struct {
	token   string
	expires time.Time
}

// tokenCache holds bearer tokens until shortly before they expire. It is safe for
// concurrent use; concurrent fetches of the same key share one request.
type tokenCache struct {
	mu     sync.Mutex
	tokens map[tokenKey]cachedToken
	flight singleflight.Group
}

// get returns the unexpired token cached for k.
func (c *tokenCache) get(k tokenKey) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.tokens[k]
	if !ok {
		return "", false
	}
	if !time.Now().Before(t.expires) {
		delete(c.tokens, k)
		return "", false
	}
	return t.token, true
}

// put caches token for k. It is considered expired once 90% of lifetime has passed, so a
// token is not sent just as it lapses.
func (c *tokenCache) put(k tokenKey, token string, lifetime time.Duration) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tokens == nil {
		c.tokens = map[tokenKey]cachedToken{}
	}
	if len(c.tokens) >= 256 {
		for k, t := range c.tokens {
			if !now.Before(t.expires) {
				delete(c.tokens, k)
			}
		}
	}
	c.tokens[k] = cachedToken{token: token, expires: now.Add(lifetime - lifetime/10)}
}

// drop forgets the token cached for k if it is still token (a registry rejected it); a
// newer token fetched meanwhile is kept.
func (c *tokenCache) drop(k tokenKey, token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.tokens[k]; ok && t.token == token {
		delete(c.tokens, k)
	}
}

// token returns a bearer token for k from the cache or the token endpoint. Concurrent
// callers share one fetch; a caller whose ctx ends stops waiting, and the fetch, bounded by
// the timeout, still fills the cache for the others.
func (b *Backend) token(ctx context.Context, k tokenKey) (string, error) {
	if tok, ok := b.tokens.get(k); ok {
		return tok, nil
	}
	fetchCtx := context.WithoutCancel(ctx)
	ch := b.tokens.flight.DoChan(k.realm+"\x00"+k.service+"\x00"+k.scope, func() (any, error) {
		if tok, ok := b.tokens.get(k); ok {
			return tok, nil
		}
		fctx, cancel := context.WithTimeout(fetchCtx, b.cfg.Timeout)
		defer cancel()
		tok, lifetime, err := b.fetchToken(fctx, k)
		if err != nil {
			return "", err
		}
		b.tokens.put(k, tok, lifetime)
		return tok, nil
	})
	select {
	case <-ctx.Done():
		return "", fmt.Errorf("get token: %w", context.Cause(ctx))
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	}
}

// fetchToken asks the token endpoint for a token for k, authenticating with the configured
// basic credentials if any.
func (b *Backend) fetchToken(ctx context.Context, k tokenKey) (string, time.Duration, error) {
	u, err := url.Parse(k.realm)
	if err != nil {
		return "", 0, fmt.Errorf("fetch token: parse realm: %w", err)
	}
	q := u.Query()
	if k.service != "" {
		q.Set("service", k.service)
	}
	q.Set("scope", k.scope)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", 0, fmt.Errorf("fetch token: %w", err)
	}
	if b.cfg.Username != "" {
		req.SetBasicAuth(b.cfg.Username, b.cfg.Password)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("fetch token: %w", err)
	}
	defer closeBody(resp)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return "", 0, fmt.Errorf("fetch token from %s: %w: %s", k.realm, ErrUnauthorized, describe(resp))
	default:
		return "", 0, fmt.Errorf("fetch token from %s: %w", k.realm, statusError(resp))
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxTokenResponse)).Decode(&tr); err != nil {
		return "", 0, fmt.Errorf("fetch token from %s: decode response: %w", k.realm, err)
	}
	tok := tr.Token
	if tok == "" {
		tok = tr.AccessToken
	}
	if tok == "" {
		return "", 0, fmt.Errorf("fetch token from %s: response has no token", k.realm)
	}
	if strings.ContainsAny(tok, "\r\n\x00") {
		return "", 0, fmt.Errorf("fetch token from %s: token contains a line break or NUL", k.realm)
	}
	lifetime := defaultTokenLifetime
	if tr.ExpiresIn > 0 && tr.ExpiresIn < int64(365*24*time.Hour/time.Second) {
		lifetime = time.Duration(tr.ExpiresIn) * time.Second
	}
	return tok, lifetime, nil
}

// learn records how the registry wants to be authenticated from a 401's challenges.
func (b *Backend) learn(chs []challenge) error {
	for _, scheme := range []string{"bearer", "basic"} {
		for _, ch := range chs {
			if ch.scheme != scheme {
				continue
			}
			mode := authMode{scheme: scheme}
			if scheme == "bearer" {
				realm := ch.params["realm"]
				if err := b.checkRealm(realm); err != nil {
					return err
				}
				mode.realm, mode.service = realm, ch.params["service"]
			} else if b.cfg.Username == "" {
				return fmt.Errorf("%w: registry asks for basic credentials and none are configured", ErrUnauthorized)
			}
			b.mu.Lock()
			b.mode = mode
			b.mu.Unlock()
			return nil
		}
	}
	return fmt.Errorf("%w: registry answered 401 without a basic or bearer challenge", ErrUnauthorized)
}

// checkRealm refuses token endpoints that would receive credentials in clear text (unless
// the config is insecure) or that are not absolute URLs.
func (b *Backend) checkRealm(realm string) error {
	u, err := url.Parse(realm)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: bearer challenge has invalid realm %q", ErrUnauthorized, realm)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && b.cfg.Insecure:
	default:
		return fmt.Errorf("%w: bearer realm %q must be https (plain http only with insecure)", ErrUnauthorized, realm)
	}
	return nil
}
