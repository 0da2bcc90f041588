package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// maxTokenLen bounds a token taken from a request before it is parsed.
const maxTokenLen = 8 << 10

// Claims are the claims of a token: the registered ones (iss, sub, aud, exp, iat, jti) and the
// access it grants, in the format of distribution's token implementation.
type Claims struct {
	jwt.RegisteredClaims
	Access []ResourceActions `json:"access"`
}

// ResourceActions are the actions a token grants on one resource.
type ResourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Granted returns the actions the claims grant on repository repo.
func (c *Claims) Granted(repo string) Action {
	var a Action
	for _, ra := range c.Access {
		if ra.Type == TypeRepository && ra.Name == repo {
			a |= actionsOf(ra.Actions)
		}
	}
	return a
}

// GrantsCatalog reports whether the claims grant registry:catalog:*, the scope of a catalog
// listing every repository the subject may pull.
func (c *Claims) GrantsCatalog() bool {
	for _, ra := range c.Access {
		if ra.Type == TypeRegistry && ra.Name == CatalogName && slices.Contains(ra.Actions, actionAll) {
			return true
		}
	}
	return false
}

// Tokens issues and verifies the proxy's tokens: JWTs signed with HMAC-SHA256 under the current
// secret, verified under the current or the previous one (chosen by the kid header).
type Tokens struct {
	keys    []tokenKey // keys[0] signs
	issuer  string
	service string
	ttl     time.Duration
	now     func() time.Time
}

type tokenKey struct {
	id     string
	secret []byte
}

// newKey derives a key's id from its secret: a tag that picks the key, not a secret.
func newKey(secret []byte) tokenKey {
	sum := sha256.Sum256(append([]byte("krakenctl token key id\x00"), secret...))
	return tokenKey{id: hex.EncodeToString(sum[:8]), secret: secret}
}

// NewTokens returns the token issuer of cfg (after Defaults and Validate). Without a secret it
// makes a random one: tokens are then good on this process only. now may be nil (time.Now).
func NewTokens(cfg TokenConfig, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	secret := []byte(cfg.Secret)
	if len(secret) == 0 {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret) // crypto/rand.Read never fails
	}
	t := &Tokens{keys: []tokenKey{newKey(secret)}, issuer: cfg.Issuer, service: cfg.Service, ttl: cfg.TTL, now: now}
	if cfg.PreviousSecret != "" {
		t.keys = append(t.keys, newKey([]byte(cfg.PreviousSecret)))
	}
	return t
}

// Issue signs a token for subject ("" for the anonymous caller) granting access, and returns
// it with the time it was issued at.
func (t *Tokens) Issue(subject string, access []ResourceActions) (string, time.Time, error) {
	now := t.now().Truncate(time.Second)
	jti := make([]byte, 16)
	_, _ = rand.Read(jti) // crypto/rand.Read never fails
	if access == nil {
		access = []ResourceActions{}
	}
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    t.issuer,
			Subject:   subject,
			Audience:  jwt.ClaimStrings{t.service},
			ExpiresAt: jwt.NewNumericDate(now.Add(t.ttl)),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        hex.EncodeToString(jti),
		},
		Access: access,
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	tok.Header["kid"] = t.keys[0].id
	s, err := tok.SignedString(t.keys[0].secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return s, now, nil
}

// TTL is how long an issued token is good for.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// ErrInvalidToken marks a token that is not good: malformed, signed with another key,
// tampered with, expired, or meant for another issuer or service.
var ErrInvalidToken = errors.New("invalid token")

// Verify checks a token's signature (HS256 under a key it knows), issuer, audience, issue
// time and expiry, and returns its claims. Every failure wraps ErrInvalidToken.
func (t *Tokens) Verify(s string) (*Claims, error) {
	if len(s) > maxTokenLen {
		return nil, fmt.Errorf("%w: %d bytes, over the limit of %d", ErrInvalidToken, len(s), maxTokenLen)
	}
	c := &Claims{}
	_, err := jwt.ParseWithClaims(s, c, t.key,
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(t.issuer),
		jwt.WithAudience(t.service),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(t.now),
		jwt.WithStrictDecoding(),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return c, nil
}

// key picks the key named by a token's kid.
func (t *Tokens) key(tok *jwt.Token) (any, error) {
	kid, _ := tok.Header["kid"].(string)
	for _, k := range t.keys {
		if k.id == kid {
			return k.secret, nil
		}
	}
	return nil, fmt.Errorf("unknown key id %q", kid)
}
