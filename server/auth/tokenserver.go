package auth

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// maxTokenForm bounds the body of a POST to the token endpoint.
const maxTokenForm = 64 << 10

// TokenResponse is the token endpoint's answer, as the distribution token spec has it (token
// and access_token hold the same token, for clients that read either).
type TokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// serveToken answers the token endpoint:
//
//	GET  /v2/token?service=&scope=...     credentials in a Basic Authorization header, or none
//	POST /v2/token                        OAuth2 form: grant_type=password, username, password,
//	                                      service, scope (what containerd tries first)
//
// The token grants, for each scope asked, the actions asked that the policy allows the caller
// (the intersection); scopes it allows nothing of are left out, and an anonymous caller gets a
// token too (for what anonymous pulls allow). Wrong credentials get 401.
func (g *Guard) serveToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	var params url.Values
	var user, password string
	var hasCreds bool
	switch r.Method {
	case http.MethodGet:
		params = r.URL.Query()
		if r.Header.Get("Authorization") != "" {
			user, password, hasCreds = r.BasicAuth()
			if !hasCreds {
				g.tokenError(w, r, unauthorized("malformed Basic credentials (the token endpoint takes Basic only)"))
				return
			}
		}
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
		if err := r.ParseForm(); err != nil {
			g.oauthError(w, "invalid_request", "cannot read the form: "+err.Error())
			return
		}
		params = r.PostForm
		if gt := params.Get("grant_type"); gt != "password" {
			g.oauthError(w, "unsupported_grant_type", "only grant_type=password is supported")
			return
		}
		user, password, hasCreds = params.Get("username"), params.Get("password"), true
	default:
		w.Header().Set("Allow", "GET, POST")
		g.tokenError(w, r, &refusal{err: errcode.Errorf(http.StatusMethodNotAllowed, errcode.CodeUnsupported, "method %s is not allowed here", r.Method)})
		return
	}
	if s := params.Get("service"); s != "" && s != g.service {
		g.tokenError(w, r, &refusal{err: errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported,
			"this token endpoint serves service %q, not %q", g.service, s)})
		return
	}
	scopes, err := ParseScopes(params["scope"])
	if err != nil {
		g.tokenError(w, r, &refusal{err: errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported, "bad scope: %v", err)})
		return
	}
	c := caller{}
	if hasCreds {
		id, ref := g.login(r, user, password)
		if ref != nil {
			g.tokenError(w, r, ref)
			return
		}
		c = caller{id: id, kind: credBasic}
	}
	access := g.grant(c, scopes)
	tok, issued, err := g.tokens.Issue(c.id.User, access)
	if err != nil {
		g.log.ErrorContext(r.Context(), "issue token", "err", err)
		g.tokenError(w, r, &refusal{err: errcode.Errorf(http.StatusInternalServerError, errcode.CodeUnknown, "internal error")})
		return
	}
	g.metrics.tokens.Inc()
	g.log.DebugContext(r.Context(), "token issued", "caller", c.id.String(), "remote", r.RemoteAddr, "access", access)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(TokenResponse{
		Token: tok, AccessToken: tok,
		ExpiresIn: int(g.tokens.TTL() / time.Second), IssuedAt: issued.UTC().Format(time.RFC3339),
	})
}

// grant is what a token for c carries of what scopes ask.
func (g *Guard) grant(c caller, scopes []Scope) []ResourceActions {
	var out []ResourceActions
	for _, s := range scopes {
		switch {
		case s.Type == TypeRepository:
			a := actionsOf(s.Actions) & c.allowed(g.policy, s.Name)
			if a == 0 {
				continue
			}
			if i := slices.IndexFunc(out, func(ra ResourceActions) bool { return ra.Type == s.Type && ra.Name == s.Name }); i >= 0 {
				out[i].Actions = (actionsOf(out[i].Actions) | a).Names()
				continue
			}
			out = append(out, ResourceActions{Type: s.Type, Name: s.Name, Actions: a.Names()})
		case s.Type == TypeRegistry && s.Name == CatalogName && slices.Contains(s.Actions, actionAll):
			// The catalog lists only what the caller may pull, so anyone who may pull
			// something may ask for it.
			if (!c.id.Anonymous() || g.policy.AnonymousPulls()) && !slices.ContainsFunc(out, func(ra ResourceActions) bool { return ra.Type == s.Type }) {
				out = append(out, ResourceActions{Type: s.Type, Name: s.Name, Actions: []string{actionAll}})
			}
		}
	}
	return out
}

// tokenError answers a failed token request with the spec's error body; a 401 asks for Basic
// credentials, the only kind the endpoint takes in a header.
func (g *Guard) tokenError(w http.ResponseWriter, r *http.Request, ref *refusal) {
	if ref.err.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="`+g.service+`"`)
	}
	g.refuse(w, r, caller{}, &refusal{err: ref.err, retryAfter: ref.retryAfter})
}

// oauthError answers a failed OAuth2 form request (RFC 6749 §5.2).
func (g *Guard) oauthError(w http.ResponseWriter, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

type metrics struct {
	logins  *prometheus.CounterVec
	tokens  prometheus.Counter
	refused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_auth_password_checks_total",
			Help: "Password checks against htpasswd, by result (ok, failed, limited: refused unchecked after too many failures).",
		}, []string{"result"}),
		tokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krakenctl_auth_tokens_issued_total", Help: "Tokens issued by the token endpoint.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_auth_refused_total", Help: "Requests refused by authentication or authorization, by error code.",
		}, []string{"code"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.logins, m.tokens, m.refused} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
