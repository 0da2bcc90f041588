package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// htpasswd is a parsed htpasswd file: user name → bcrypt hash.
type htpasswd struct {
	users map[string][]byte
	// maxCost is the highest cost among the hashes.
	maxCost int
}

// parseHtpasswd parses the content of an htpasswd file, refusing every line that is not
// "user:bcrypt-hash" with an error naming the line (never the hash). An empty content has no
// users.
func parseHtpasswd(content string) (*htpasswd, error) {
	h := &htpasswd{users: map[string][]byte{}}
	var errs []error
	for i, line := range strings.Split(content, "\n") {
		n := i + 1
		line = strings.TrimRight(line, "\r")
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("htpasswd: line %d: want user:hash", n))
			continue
		case checkUser(user) != nil:
			errs = append(errs, fmt.Errorf("htpasswd: line %d: %w", n, checkUser(user)))
			continue
		case h.users[user] != nil:
			errs = append(errs, fmt.Errorf("htpasswd: line %d: user %q is listed twice", n, user))
			continue
		}
		cost, err := bcryptCost(hash)
		if err != nil {
			errs = append(errs, fmt.Errorf("htpasswd: line %d: user %q: %w", n, user, err))
			continue
		}
		h.users[user] = []byte(hash)
		h.maxCost = max(h.maxCost, cost)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return h, nil
}

// bcryptCost checks that hash is a bcrypt hash of a bounded cost and returns the cost.
func bcryptCost(hash string) (int, error) {
	kind := "an unknown kind of hash"
	switch {
	case strings.HasPrefix(hash, "$apr1$"):
		kind = "an MD5 (apr1) hash"
	case strings.HasPrefix(hash, "{SHA}"):
		kind = "a SHA-1 hash"
	case strings.HasPrefix(hash, "$1$"), strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$6$"):
		kind = "a crypt(3) hash"
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			return 0, fmt.Errorf("malformed bcrypt hash: %w", err)
		}
		if cost > MaxBcryptCost {
			return 0, fmt.Errorf("bcrypt cost %d is over %d (every login pays it)", cost, MaxBcryptCost)
		}
		return cost, nil
	}
	return 0, fmt.Errorf("%s, not bcrypt: only bcrypt is accepted (make one with htpasswd -B)", kind)
}

// checkUser checks a user name: not empty, no spaces or control characters.
func checkUser(u string) error {
	if u == "" {
		return errors.New("empty user name")
	}
	for _, c := range u {
		if c <= ' ' || c == 0x7f {
			return fmt.Errorf("user name %q has a space or a control character", u)
		}
	}
	return nil
}

func (h *htpasswd) has(user string) bool { _, ok := h.users[user]; return ok }

// passwords checks passwords against an htpasswd file. A password that matched is remembered
// for a while (as an HMAC under a key of this process, never in clear), so that a client
// sending Basic credentials on every request, as docker does in basic mode, pays for bcrypt
// once per interval rather than per request.
type passwords struct {
	file *htpasswd
	// dummy is compared for unknown users, so that the time of an answer does not tell which
	// users exist.
	dummy []byte
	key   []byte
	ttl   time.Duration
	now   func() time.Time

	mu     sync.Mutex
	recent map[string]verified
}

type verified struct {
	mac   []byte
	until time.Time
}

func newPasswords(file *htpasswd, ttl time.Duration, now func() time.Time) (*passwords, error) {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // crypto/rand.Read never fails
	cost := max(file.maxCost, bcrypt.MinCost)
	if len(file.users) == 0 {
		cost = bcrypt.DefaultCost
	}
	dummy, err := bcrypt.GenerateFromPassword(secret[:16], cost)
	if err != nil {
		return nil, fmt.Errorf("make the dummy hash: %w", err)
	}
	return &passwords{file: file, dummy: dummy, key: secret, ttl: ttl, now: now, recent: map[string]verified{}}, nil
}

// recentlyChecked reports whether password matched user's hash within the last interval.
// It costs one HMAC, not a bcrypt comparison.
func (p *passwords) recentlyChecked(user, password string) bool {
	p.mu.Lock()
	v, ok := p.recent[user]
	p.mu.Unlock()
	return ok && p.now().Before(v.until) && hmac.Equal(v.mac, p.mac(user, password))
}

// check reports whether password is user's, with one bcrypt comparison. Unknown users take
// the time of a comparison too.
func (p *passwords) check(user, password string) bool {
	hash, known := p.file.users[user]
	if !known {
		hash = p.dummy
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil || !known {
		return false
	}
	p.mu.Lock()
	p.recent[user] = verified{mac: p.mac(user, password), until: p.now().Add(p.ttl)}
	p.mu.Unlock()
	return true
}

func (p *passwords) mac(user, password string) []byte {
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return m.Sum(nil)
}

// HtpasswdLine returns the htpasswd line of user with password, hashed with bcrypt at cost
// (bcrypt.DefaultCost when 0), for tools that create users (`krakenctl dev up --tls`) and tests.
func HtpasswdLine(user, password string, cost int) (string, error) {
	if err := checkUser(user); err != nil {
		return "", err
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if cost > MaxBcryptCost {
		return "", fmt.Errorf("bcrypt cost %d is over %d", cost, MaxBcryptCost)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", fmt.Errorf("hash the password of %s: %w", user, err)
	}
	return user + ":" + string(h) + "\n", nil
}
