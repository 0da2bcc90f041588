package httpbackend

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ErrInvalidConfig means a Config failed validation; the message names the offending key.
var ErrInvalidConfig = errors.New("httpbackend: invalid config")

// DefaultTimeout is used when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// ListFormat selects how List reads a namespace's directory from the server.
type ListFormat string

// The listing formats. See Backend.List for what each expects from the server.
const (
	// ListNone (or an empty string) means the server cannot list: List returns an error
	// wrapping ErrListUnsupported.
	ListNone ListFormat = "none"
	// ListJSON expects GET <url>/<namespace>/_objects/ to answer a JSON array whose
	// elements are either file names or objects with a "name" and an optional "type" (nginx's
	// "autoindex_format json" produces the latter; entries whose type is not "file" are
	// skipped).
	ListJSON ListFormat = "json"
	// ListHTML expects GET <url>/<namespace>/_objects/ to answer an HTML index of links, as
	// nginx's autoindex, Apache's mod_autoindex and Go's http.FileServer produce.
	ListHTML ListFormat = "html"
)

// Config configures a Backend. Its YAML form uses the snake_case keys in the field tags.
type Config struct {
	// URL is the base URL objects live under: object (namespace, name) is at
	// <url>/<namespace>/_objects/<name>. Scheme http or https, no query, fragment or user info.
	URL string `yaml:"url"`
	// AllowPut lets Upload PUT objects to the server. When false Upload returns an error
	// wrapping backend.ErrReadOnly without contacting the server.
	AllowPut bool `yaml:"allow_put"`
	// Timeout bounds how long each request waits for the server's response headers once the
	// request body has been sent. It does not bound streaming a body; the caller's context
	// does. Zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
	// Headers are added to every request (for example an API key). They may not set
	// Authorization when Username is set, nor hop-by-hop or framing headers.
	Headers map[string]string `yaml:"headers"`
	// Username and Password, when Username is set, are sent as HTTP basic authentication.
	// Password is tagged secret:"true": a role's config may give it as password_file, the
	// path of a file holding it.
	Username string `yaml:"username"`
	Password string `yaml:"password" secret:"true"`
	// List selects the directory listing format: "none" (the default), "json" or "html".
	List ListFormat `yaml:"list"`
}

// ParseConfig decodes a YAML document strictly (unknown keys are errors), applies defaults
// and validates the result.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Defaults fills in zero-valued fields.
func (c *Config) Defaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.List == "" {
		c.List = ListNone
	}
}

// forbiddenHeaders are managed by the HTTP client or describe the body framing; letting a
// config set them would corrupt requests.
var forbiddenHeaders = map[string]bool{
	"connection": true, "content-length": true, "transfer-encoding": true, "host": true,
	"te": true, "trailer": true, "upgrade": true, "keep-alive": true, "expect": true,
	"proxy-connection": true, "content-encoding": true, "range": true,
}

// Validate reports the first invalid field, naming its YAML key. It expects Defaults to have
// run (a zero Timeout is accepted and means the default).
func (c *Config) Validate() error {
	if c.URL == "" {
		return fmt.Errorf("%w: url is required", ErrInvalidConfig)
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("%w: url: %w", ErrInvalidConfig, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: url %q: scheme must be http or https", ErrInvalidConfig, c.URL)
	case u.Host == "":
		return fmt.Errorf("%w: url %q: no host", ErrInvalidConfig, c.URL)
	case u.User != nil:
		return fmt.Errorf("%w: url: put credentials in username and password, not in the URL", ErrInvalidConfig)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Errorf("%w: url %q: must not have a query or fragment", ErrInvalidConfig, c.URL)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("%w: timeout %s is negative", ErrInvalidConfig, c.Timeout)
	}
	if c.Password != "" && c.Username == "" {
		return fmt.Errorf("%w: password is set but username is empty", ErrInvalidConfig)
	}
	if strings.Contains(c.Username, ":") {
		return fmt.Errorf("%w: username must not contain ':'", ErrInvalidConfig)
	}
	for k, v := range c.Headers {
		if !validHeaderName(k) {
			return fmt.Errorf("%w: headers: %q is not a valid header name", ErrInvalidConfig, k)
		}
		lk := strings.ToLower(k)
		if forbiddenHeaders[lk] {
			return fmt.Errorf("%w: headers: %q may not be set", ErrInvalidConfig, k)
		}
		if lk == "authorization" && c.Username != "" {
			return fmt.Errorf("%w: headers: Authorization conflicts with username", ErrInvalidConfig)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("%w: headers: value of %q contains a line break or NUL", ErrInvalidConfig, k)
		}
	}
	switch c.List {
	case "", ListNone, ListJSON, ListHTML:
	default:
		return fmt.Errorf("%w: list %q: must be one of none, json, html", ErrInvalidConfig, c.List)
	}
	return nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
