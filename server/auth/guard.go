package auth

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// TokenPath is the path of the token endpoint, the realm of the Bearer challenge.
const TokenPath = "/v2/token"

// Options are a Guard's collaborators. The zero value is valid.
type Options struct {
	// Logger receives failed logins (Warn) and refusals (Debug); nil discards.
	Logger *slog.Logger
	// Registerer receives the Guard's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock of tokens and the login limiter (tests); nil is time.Now.
	Now func() time.Time
}

// Guard authenticates and authorizes the requests of a registry API (see the package doc).
// Build it with New and put it in front of a registry.Handler with Wrap. It is safe for
// concurrent use.
type Guard struct {
	mode      string
	service   string
	realm     string
	log       *slog.Logger
	policy    *Policy
	passwords *passwords
	tokens    *Tokens
	limiter   *failLimiter
	// checks holds a slot per password check running (bcrypt), checkSlots at most.
	checks  chan struct{}
	metrics *metrics
	// peer reads the identity of a verified client certificate.
	peer func(*tls.ConnectionState) (Identity, bool)
}

// New builds the Guard of a config that passed Defaults and Validate.
func New(cfg *Config, opts Options) (*Guard, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	file, err := parseHtpasswd(cfg.Htpasswd)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	policy, err := NewPolicy(cfg)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	pw, err := newPasswords(file, cfg.Token.TTL, now)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if cfg.Token.Secret == "" && cfg.Mode == ModeToken {
		log.Warn("auth.token.secret is not set: tokens are signed with a random key and good on this process only, until it restarts")
	}
	return &Guard{
		mode: cfg.Mode, service: cfg.Token.Service, realm: cfg.Token.Realm,
		log: log, policy: policy, passwords: pw, tokens: NewTokens(cfg.Token, now),
		limiter: newFailLimiter(now), checks: make(chan struct{}, checkSlots()), metrics: m, peer: peerIdentity,
	}, nil
}

// checkSlots is how many password checks may run at once: one per core the process may use.
func checkSlots() int { return max(1, runtime.GOMAXPROCS(0)) }

// credKind is what authenticated a request.
type credKind int

const (
	credNone   credKind = iota // nothing: the anonymous caller
	credCert                   // a verified client certificate
	credBasic                  // an htpasswd user's password
	credBearer                 // a token of ours
)

// caller is the authenticated side of a request.
type caller struct {
	id     Identity
	kind   credKind
	claims *Claims // credBearer only
}

// allowed is what the caller may do to repo: what the policy allows its identity, and for a
// token only what the token also grants.
func (c caller) allowed(p *Policy, repo string) Action {
	a := p.Allowed(c.id, repo)
	if c.kind == credBearer {
		a &= c.claims.Granted(repo)
	}
	return a
}

// unauthenticated reports whether a refusal should ask the caller to log in (401) rather
// than deny it (403).
func (c caller) unauthenticated() bool { return c.id.Anonymous() }

// refusal is an answer that ends a request before the registry sees it.
type refusal struct {
	err *errcode.Error
	// challenge adds WWW-Authenticate (401 answers).
	challenge bool
	// scopes and bearerError go into a Bearer challenge.
	scopes      []string
	bearerError string
	// retryAfter is set on 429 answers.
	retryAfter time.Duration
}

func (r *refusal) Error() string { return r.err.Error() }

// Wrap returns next behind the guard: the token endpoint is answered here, every other /v2/
// request is authenticated and authorized before next sees it, and the rest goes to next
// untouched (next answers 404 for paths that are not the registry's).
func (g *Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == TokenPath {
			g.serveToken(w, r)
			return
		}
		rt, ok := registry.ParseRoute(r.URL.Path)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		c, ref := g.authenticate(r)
		if ref == nil {
			r, ref = g.authorize(r, rt, c)
		}
		if ref != nil {
			g.refuse(w, r, c, ref)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WrapAdmin returns next behind the guard for an API only admins may use, such as an agent's
// blob and swarm APIs, which name no repository the rules could be asked about. The caller
// must be in the admin group, authenticated by a certificate or a password: a token does not
// do, since it grants actions on repositories only. An anonymous caller gets 401 with a Basic
// challenge (the credentials it can use here), any other 403 DENIED.
func (g *Guard) WrapAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ref := g.authenticate(r)
		switch {
		case ref != nil:
		case c.kind == credNone:
			ref = unauthorized("authentication required: this API is for admins (a certificate or password of the admin group)")
		case c.kind == credBearer || !c.id.In(GroupAdmin):
			ref = &refusal{err: errcode.Errorf(http.StatusForbidden, errcode.CodeDenied,
				"this API is for admins: present a certificate or password of the admin group (a token does not do)")}
		}
		if ref != nil {
			if ref.challenge {
				w.Header().Set("WWW-Authenticate", `Basic realm="`+g.service+`"`)
			}
			g.refuse(w, r, c, &refusal{err: ref.err, retryAfter: ref.retryAfter})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate finds who sent r. A verified admin certificate wins over everything; then the
// Authorization header; then any other verified certificate; else the anonymous caller.
func (g *Guard) authenticate(r *http.Request) (caller, *refusal) {
	cert, hasCert := g.peer(r.TLS)
	if hasCert && cert.In(GroupAdmin) {
		return caller{id: cert, kind: credCert}, nil
	}
	h := r.Header.Get("Authorization")
	scheme, value, _ := strings.Cut(h, " ")
	switch {
	case h == "" && hasCert:
		return caller{id: cert, kind: credCert}, nil
	case h == "":
		return caller{}, nil
	case strings.EqualFold(scheme, "Basic"):
		user, password, ok := r.BasicAuth()
		if !ok {
			return caller{}, unauthorized("malformed Basic credentials")
		}
		id, ref := g.login(r, user, password)
		return caller{id: id, kind: credBasic}, ref
	case strings.EqualFold(scheme, "Bearer"):
		claims, err := g.tokens.Verify(strings.TrimSpace(value))
		if err == nil && claims.Subject != "" && !g.passwords.file.has(claims.Subject) {
			err = fmt.Errorf("%w: user %q is no longer in htpasswd", ErrInvalidToken, claims.Subject)
		}
		if err != nil {
			g.log.DebugContext(r.Context(), "token refused", "remote", r.RemoteAddr, "err", err)
			ref := unauthorized("the token is not valid (expired, or not issued here): get a new one")
			ref.bearerError = "invalid_token"
			return caller{}, ref
		}
		id := Identity{}
		if claims.Subject != "" {
			id = g.policy.User(claims.Subject)
		}
		return caller{id: id, kind: credBearer, claims: claims}, nil
	}
	return caller{}, unauthorized("unsupported authorization scheme (want Basic or Bearer)")
}

// login checks a user's password, refusing clients that failed too often of late.
func (g *Guard) login(r *http.Request, user, password string) (Identity, *refusal) {
	host := clientHost(r.RemoteAddr)
	if g.passwords.recentlyChecked(user, password) {
		return g.policy.User(user), nil
	}
	ok, wait, done := g.limiter.reserve(host)
	if !ok {
		g.metrics.logins.WithLabelValues("limited").Inc()
		// Debug: an attacker who keeps trying would otherwise fill the log; the metric counts.
		g.log.DebugContext(r.Context(), "login refused: too many failed logins from this address", "user", logName(user), "remote", r.RemoteAddr)
		return Identity{}, &refusal{retryAfter: wait, err: errcode.Errorf(http.StatusTooManyRequests, errcode.CodeTooManyRequests,
			"too many failed logins from %s; try again later", host)}
	}
	// bcrypt is the dearest thing a request can make the server do: at most checkSlots run at
	// once, whatever the number of connections, so a flood of logins queues instead of taking
	// every core.
	select {
	case g.checks <- struct{}{}:
	case <-r.Context().Done():
		done(false)
		return Identity{}, &refusal{err: errcode.Errorf(http.StatusServiceUnavailable, errcode.CodeUnavailable, "login abandoned: %v", r.Context().Err())}
	}
	matched := g.passwords.check(user, password)
	<-g.checks
	done(matched)
	if !matched {
		g.metrics.logins.WithLabelValues("failed").Inc()
		g.log.WarnContext(r.Context(), "login failed", "user", logName(user), "remote", r.RemoteAddr)
		return Identity{}, unauthorized("wrong user name or password")
	}
	g.metrics.logins.WithLabelValues("ok").Inc()
	return g.policy.User(user), nil
}

// logName bounds a user name taken from a request before it is logged.
func logName(u string) string {
	if len(u) > 64 {
		return u[:64] + "…"
	}
	return u
}

// authorize decides whether c may send r, which addresses rt. It may return a new request:
// a mount whose source c may not pull loses its mount, and is an ordinary upload.
func (g *Guard) authorize(r *http.Request, rt registry.Route, c caller) (*http.Request, *refusal) {
	switch rt.Kind {
	case registry.RoutePing:
		// The spec's way for a client to learn the challenge: 401 until it authenticates.
		if c.kind == credNone {
			return r, unauthorized("authentication required")
		}
		return r, nil
	case registry.RouteCatalog:
		if c.kind == credNone && !g.policy.AnonymousPulls() {
			ref := unauthorized("authentication required")
			ref.scopes = []string{TypeRegistry + ":" + CatalogName + ":*"}
			return r, ref
		}
		// Anyone may ask; the answer lists only what the caller may pull. A token lists that
		// only when it carries the catalog scope (registry:catalog:*); otherwise just the
		// repositories it grants, so a token for one repository does not reveal the others.
		policy, id, wide := g.policy, c.id, c.kind != credBearer || c.claims.GrantsCatalog()
		return r.WithContext(context.WithValue(r.Context(), filterKey{}, func(repo string) bool {
			if wide {
				return policy.Allowed(id, repo).Has(Pull)
			}
			return c.allowed(policy, repo).Has(Pull)
		})), nil
	}
	need := needed(rt.Kind, r.Method)
	if !c.allowed(g.policy, rt.Name).Has(need) {
		ref := g.denial(c, rt.Name, need)
		if rt.Kind == registry.RouteUploads && ref.challenge {
			if from := r.URL.Query().Get("from"); from != "" && r.URL.Query().Has("mount") {
				ref.scopes = append(ref.scopes, scopeOf(from, Pull))
			}
		}
		return r, ref
	}
	if rt.Kind == registry.RouteUploads {
		q := r.URL.Query()
		// A mount without from= would link a blob of whatever repository holds it; the
		// proxy never does that (it starts an upload), and one whose source the caller may
		// not pull becomes an ordinary upload here, as the spec allows for a mount that
		// cannot be done. Either way the answer does not tell whether the blob exists.
		if from := q.Get("from"); q.Has("mount") && from != "" && !c.allowed(g.policy, from).Has(Pull) {
			if c.kind == credBearer && g.policy.Allowed(c.id, from).Has(Pull) {
				// The token lacks a scope the caller could have: ask for a token with both
				// (the client retries with it), as distribution does.
				ref := unauthorized("the token does not grant pull on " + from + ", the source of the mount: get one that does")
				ref.scopes = []string{scopeOf(rt.Name, Push), scopeOf(from, Pull)}
				ref.bearerError = "insufficient_scope"
				return r, ref
			}
			g.log.DebugContext(r.Context(), "mount refused: no pull on its source; starting an upload", "caller", c.id.String(), "repo", rt.Name, "from", from)
			q.Del("mount")
			q.Del("from")
			r2 := r.Clone(r.Context())
			r2.URL.RawQuery = q.Encode()
			return r2, nil
		}
	}
	return r, nil
}

// needed is the action a request needs: reads pull, deletes of manifests, tags and blobs
// delete, and everything else (uploads, manifest puts, and methods the registry will refuse
// anyway) push.
func needed(kind registry.RouteKind, method string) Action {
	switch {
	case method == http.MethodGet || method == http.MethodHead:
		if kind == registry.RouteUpload {
			return Push // the status of one's own upload
		}
		return Pull
	case method == http.MethodDelete && (kind == registry.RouteManifest || kind == registry.RouteBlob):
		return Delete
	}
	return Push
}

// denial is the refusal of action on repo to c: 401 with a challenge for a caller who has not
// logged in, or whose token lacks a scope the policy would grant (the client then asks for a
// new token); 403 DENIED for one the policy refuses.
func (g *Guard) denial(c caller, repo string, action Action) *refusal {
	detail := []map[string]string{{"Type": TypeRepository, "Name": repo, "Action": action.String()}}
	switch {
	case c.unauthenticated():
		ref := unauthorized("authentication required")
		ref.err.Detail = detail
		ref.scopes = []string{scopeOf(repo, action)}
		return ref
	case c.kind == credBearer && g.policy.Allowed(c.id, repo).Has(action):
		ref := unauthorized("the token does not grant " + action.String() + " on " + repo + ": get one that does")
		ref.err.Detail = detail
		ref.scopes = []string{scopeOf(repo, action)}
		ref.bearerError = "insufficient_scope"
		return ref
	}
	return &refusal{err: &errcode.Error{Status: http.StatusForbidden, Code: errcode.CodeDenied,
		Message: "requested access to the resource is denied", Detail: detail}}
}

// scopeOf is the scope a challenge asks for to do action on repo. Pushes ask for pull too:
// a client that pushes checks what the repository holds.
func scopeOf(repo string, action Action) string {
	if action == Push {
		action |= Pull
	}
	return TypeRepository + ":" + repo + ":" + action.String()
}

func unauthorized(msg string) *refusal {
	return &refusal{challenge: true, err: &errcode.Error{Status: http.StatusUnauthorized, Code: errcode.CodeUnauthorized, Message: msg}}
}

// refuse writes a refusal: the spec's error body, with the challenge of the Guard's mode on a
// 401.
func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, c caller, ref *refusal) {
	if ref.challenge {
		w.Header().Set("WWW-Authenticate", g.challenge(r, ref))
	}
	if ref.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(ref.retryAfter.Round(time.Second)/time.Second)+1))
	}
	w.Header().Set(registry.HeaderAPIVersion, "registry/2.0")
	g.metrics.refused.WithLabelValues(string(ref.err.Code)).Inc()
	g.log.DebugContext(r.Context(), "registry request refused", "method", r.Method, "path", r.URL.Path,
		"caller", c.id.String(), "remote", r.RemoteAddr, "status", ref.err.Status, "code", ref.err.Code, "reason", ref.err.Message)
	errcode.Write(w, r, ref.err)
}

// challenge renders the WWW-Authenticate value of a 401.
func (g *Guard) challenge(r *http.Request, ref *refusal) string {
	if g.mode == ModeBasic {
		return `Basic realm="` + g.service + `"`
	}
	var b strings.Builder
	b.WriteString(`Bearer realm="` + g.realmOf(r) + `",service="` + g.service + `"`)
	if len(ref.scopes) > 0 {
		b.WriteString(`,scope="` + strings.Join(ref.scopes, " ") + `"`)
	}
	if ref.bearerError != "" {
		b.WriteString(`,error="` + ref.bearerError + `"`)
	}
	return b.String()
}

// realmOf is the token endpoint's URL as the client of r reaches it.
func (g *Guard) realmOf(r *http.Request) string {
	if g.realm != "" {
		return g.realm
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := strings.Map(func(c rune) rune {
		if c < ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return -1
		}
		return c
	}, r.Host)
	return scheme + "://" + host + TokenPath
}

// filterKey is the context key of the catalog's filter.
type filterKey struct{}

// PullFilter returns the filter a Guard put in the context of a catalog request: it reports
// whether the caller may pull a repository, and the catalog must list only those. It is nil
// when no Guard is in front (every repository is listed).
func PullFilter(ctx context.Context) func(repo string) bool {
	f, _ := ctx.Value(filterKey{}).(func(string) bool)
	return f
}
