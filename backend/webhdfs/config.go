package webhdfs

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultTimeout is used when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Config configures the WebHDFS backend. Its YAML form uses the snake_case keys in the field
// tags. Call Defaults before Validate; New does both.
type Config struct {
	// Namenodes are the base URLs of the namenodes' HTTP endpoints, e.g.
	// "http://nn1.example:9870", tried in order: a namenode that cannot be reached or answers
	// StandbyException hands the request to the next (HDFS high availability). A path is kept
	// (for a gateway such as Knox: "https://knox/gateway/default"); "/webhdfs/v1" is appended.
	Namenodes []string `yaml:"namenodes"`
	// Root is the absolute HDFS directory the objects live under, e.g. "/krakenctl".
	Root string `yaml:"root"`
	// UserName is sent as user.name (Hadoop's "simple" authentication, no Kerberos). Leave it
	// empty with a delegation token, or to be the cluster's anonymous user.
	UserName string `yaml:"user_name"`
	// DelegationTokenFile is the path of a file holding a Hadoop delegation token (its URL-safe
	// string form), sent as the delegation parameter. An absolute path; read once, at start.
	DelegationTokenFile string `yaml:"delegation_token_file"`
	// DelegationTokenEnv names an environment variable holding the delegation token, for
	// deployments that inject secrets that way. The token itself is never in the config.
	DelegationTokenEnv string `yaml:"delegation_token_env"`
	// Timeout bounds how long each request waits for its response headers once its body has
	// been sent. It does not bound streaming a body; the caller's context does. Zero means
	// DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
}

// Defaults fills in the zero-valued optional fields.
func (c *Config) Defaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

// Validate reports the first configuration error, naming the key as it is spelled in YAML. It
// does not read the token; New does.
func (c Config) Validate() error {
	if len(c.Namenodes) == 0 {
		return errors.New("namenodes: at least one namenode URL is required")
	}
	for i, nn := range c.Namenodes {
		u, err := url.Parse(nn)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("namenodes[%d]: %q must be an http or https URL with a host", i, nn)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("namenodes[%d]: %q must have no user info, query or fragment (credentials go in user_name or delegation_token_file)", i, redact(u))
		}
		if strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), "/webhdfs/v1") {
			return fmt.Errorf("namenodes[%d]: %q: give the base URL; /webhdfs/v1 is appended", i, nn)
		}
	}
	if err := checkRoot(c.Root); err != nil {
		return fmt.Errorf("root: %w", err)
	}
	if strings.ContainsAny(c.UserName, "&=?#/ \t\r\n") {
		return fmt.Errorf("user_name: %q is not a user name", c.UserName)
	}
	if c.DelegationTokenFile != "" && !filepath.IsAbs(c.DelegationTokenFile) {
		return fmt.Errorf("delegation_token_file: %q must be an absolute path", c.DelegationTokenFile)
	}
	if c.DelegationTokenFile != "" && c.DelegationTokenEnv != "" {
		return errors.New("delegation_token_env: set delegation_token_file or delegation_token_env, not both")
	}
	if c.UserName != "" && (c.DelegationTokenFile != "" || c.DelegationTokenEnv != "") {
		return errors.New("user_name: a delegation token names its user; set user_name or a delegation token, not both")
	}
	if c.Timeout < 0 {
		return fmt.Errorf("timeout: %s is negative", c.Timeout)
	}
	return nil
}

// checkRoot accepts an absolute, clean HDFS path of safe characters: the objects' paths are
// built from it, and it must not climb out of itself.
func checkRoot(root string) error {
	if root == "" {
		return errors.New(`must be set (an absolute HDFS path such as "/krakenctl")`)
	}
	if !strings.HasPrefix(root, "/") {
		return fmt.Errorf("%q must be an absolute path", root)
	}
	if root == "/" {
		return nil
	}
	for _, seg := range strings.Split(root[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%q has an empty, %q or %q segment", root, ".", "..")
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !pathByte(c) {
				return fmt.Errorf("%q has byte %q (use letters, digits, '.', '_', '-')", root, c)
			}
		}
	}
	return nil
}

// token reads the delegation token from the file or variable the config names ("" when it
// names neither). Errors never contain the token.
func (c Config) token() (string, error) {
	var tok string
	switch {
	case c.DelegationTokenFile != "":
		data, err := os.ReadFile(c.DelegationTokenFile)
		if err != nil {
			return "", fmt.Errorf("delegation_token_file: %w", err)
		}
		tok = strings.TrimRight(string(data), "\r\n")
		if tok == "" {
			return "", fmt.Errorf("delegation_token_file: %s is empty", c.DelegationTokenFile)
		}
	case c.DelegationTokenEnv != "":
		tok = os.Getenv(c.DelegationTokenEnv)
		if tok == "" {
			return "", fmt.Errorf("delegation_token_env: %s is unset or empty", c.DelegationTokenEnv)
		}
	default:
		return "", nil
	}
	if strings.ContainsAny(tok, " \t\r\n&#") {
		return "", errors.New("delegation token: has whitespace, '&' or '#'; want the token's URL-safe string form")
	}
	return tok, nil
}

func redact(u *url.URL) string {
	v := *u
	v.User = nil
	v.RawQuery = ""
	v.Fragment = ""
	return v.String()
}

// pathByte reports whether c may appear in a root path segment.
func pathByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}
