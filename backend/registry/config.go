package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ErrInvalidConfig means a Config failed validation; the message names the offending key.
var ErrInvalidConfig = errors.New("registry: invalid config")

// DefaultTimeout is used when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Config configures a Backend. Its YAML form uses the snake_case keys in the field tags.
type Config struct {
	// Address is the registry's host with an optional port, for example "registry-1.docker.io"
	// or "127.0.0.1:5000". No scheme and no path.
	Address string `yaml:"address"`
	// Insecure talks plain HTTP to the registry and accepts an http:// token realm. Never set
	// it for a registry reached over an untrusted network: credentials travel in clear text.
	Insecure bool `yaml:"insecure"`
	// Username and Password are sent as HTTP basic credentials: to the registry when it asks
	// for basic authentication, or to its token service when it asks for a bearer token.
	// Without them the backend pulls anonymously. Password and Token are tagged
	// secret:"true": a role's config may give them as password_file and token_file, paths of
	// files holding them.
	Username string `yaml:"username"`
	Password string `yaml:"password" secret:"true"`
	// Token is a ready-made bearer token sent with every request instead of the challenge
	// flow, for registries that issue long-lived access tokens. It excludes username and
	// password.
	Token string `yaml:"token" secret:"true"`
	// Timeout bounds the wait for each response's headers and each token request. It does not
	// bound streaming a blob; the caller's context does. Zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
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
}

// Validate reports the first invalid field, naming its YAML key.
func (c *Config) Validate() error {
	if c.Address == "" {
		return fmt.Errorf("%w: address is required", ErrInvalidConfig)
	}
	if strings.Contains(c.Address, "://") {
		return fmt.Errorf("%w: address %q: give host[:port] without a scheme (use insecure for plain HTTP)", ErrInvalidConfig, c.Address)
	}
	u, err := url.Parse("//" + c.Address)
	if err != nil || u.Host != c.Address || u.User != nil || u.Hostname() == "" {
		return fmt.Errorf("%w: address %q: must be host[:port]", ErrInvalidConfig, c.Address)
	}
	if strings.Contains(c.Address, ":") && !strings.HasSuffix(c.Address, "]") {
		if _, _, err := net.SplitHostPort(c.Address); err != nil {
			return fmt.Errorf("%w: address %q: %w", ErrInvalidConfig, c.Address, err)
		}
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
	if c.Token != "" && c.Username != "" {
		return fmt.Errorf("%w: token and username are mutually exclusive", ErrInvalidConfig)
	}
	if strings.ContainsAny(c.Token, "\r\n\x00 ") {
		return fmt.Errorf("%w: token contains whitespace or NUL", ErrInvalidConfig)
	}
	return nil
}
