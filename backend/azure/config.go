package azure

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Block sizes and upload concurrency: the bounds and the defaults.
const (
	// MinBlockSize keeps the block count of large blobs sane: 50,000 blocks of 1 MiB still
	// hold 48 GiB.
	MinBlockSize = 1 << 20
	// MaxBlockSize is Azure's limit for one Put Block (4000 MiB).
	MaxBlockSize     = 4000 << 20
	DefaultBlockSize = 16 << 20
	// maxBlocks is Azure's limit on the blocks of one committed blob.
	maxBlocks          = 50000
	DefaultConcurrency = 4
	maxConcurrency     = 64
)

// Config configures the Azure Blob backend. Call Defaults before Validate; New does both.
//
// Exactly one way to authenticate is set: the account's shared key (account_key_file or
// account_key_env), a SAS token (sas_token_file or sas_token_env), or the host's managed
// identity (managed_identity, with client_id for a user-assigned one). Secrets are never
// written in the config itself.
type Config struct {
	// Account is the storage account name.
	Account string `yaml:"account"`
	// Container holds the objects. It must exist.
	Container string `yaml:"container"`
	// Prefix is prepended, with a "/", to every blob name, so several deployments can share a
	// container. It must not start or end with "/".
	Prefix string `yaml:"prefix"`
	// Endpoint is the Blob service URL; default https://<account>.blob.core.windows.net/. For
	// Azurite it is http://127.0.0.1:PORT/<account> (path-style).
	Endpoint string `yaml:"endpoint"`

	// AccountKeyFile is the absolute path of a file holding the account's base64 shared key.
	AccountKeyFile string `yaml:"account_key_file"`
	// AccountKeyEnv names the environment variable holding the account's shared key.
	AccountKeyEnv string `yaml:"account_key_env"`
	// SASTokenFile is the absolute path of a file holding a SAS token for the container (the
	// query string, with or without its leading "?"). It needs read, write, list and delete
	// permissions.
	SASTokenFile string `yaml:"sas_token_file"`
	// SASTokenEnv names the environment variable holding the SAS token.
	SASTokenEnv string `yaml:"sas_token_env"`
	// ManagedIdentity authenticates as the Azure host's managed identity (Microsoft Entra ID),
	// which needs a data role on the container ("Storage Blob Data Contributor").
	ManagedIdentity bool `yaml:"managed_identity"`
	// ClientID selects a user-assigned managed identity; empty means the system-assigned one.
	ClientID string `yaml:"client_id"`

	// BlockSize is the largest blob sent in one Put Blob request, and the size of the blocks
	// of larger (or unknown-size) blobs, between 1 MiB and 4000 MiB; default 16 MiB. A blob
	// may have 50,000 blocks, so this also bounds the blob size.
	BlockSize int64 `yaml:"block_size"`
	// Concurrency is how many blocks of one upload are sent at once, 1 to 64; default 4. An
	// upload holds up to Concurrency+1 blocks in memory.
	Concurrency int `yaml:"concurrency"`
}

// Defaults fills in the zero-valued optional fields.
func (c *Config) Defaults() {
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
}

var (
	// Azure's naming rules: https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata
	accountName   = regexp.MustCompile(`^[a-z0-9]{3,24}$`)
	containerName = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)
	envName       = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate reports the first configuration error, naming the key as it is spelled in YAML. It
// reads no file and no environment variable; New does.
func (c Config) Validate() error {
	switch {
	case c.Account == "":
		return errors.New("account: must be set")
	case !accountName.MatchString(c.Account):
		return fmt.Errorf("account: %q is not a storage account name (3 to 24 lower-case letters and digits)", c.Account)
	case c.Container == "":
		return errors.New("container: must be set")
	case !containerName.MatchString(c.Container):
		return fmt.Errorf("container: %q is not a container name (3 to 63 lower-case letters, digits and single hyphens)", c.Container)
	}
	if c.Prefix != "" {
		for _, seg := range strings.Split(c.Prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return fmt.Errorf("prefix: %q has an empty, %q or %q segment", c.Prefix, ".", "..")
			}
		}
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			return fmt.Errorf("endpoint: %q must be an http or https URL with a host", c.Endpoint)
		case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			// A SAS in the URL would be a secret in the config.
			return fmt.Errorf("endpoint: %q must have no query, fragment or user (give a SAS token as sas_token_file or sas_token_env)", redactURL(u))
		}
	}
	var auths []string
	for _, a := range []struct {
		key string
		set bool
	}{
		{"account_key_file", c.AccountKeyFile != ""},
		{"account_key_env", c.AccountKeyEnv != ""},
		{"sas_token_file", c.SASTokenFile != ""},
		{"sas_token_env", c.SASTokenEnv != ""},
		{"managed_identity", c.ManagedIdentity},
	} {
		if a.set {
			auths = append(auths, a.key)
		}
	}
	switch len(auths) {
	case 0:
		return errors.New("account_key_file: no credentials: set one of account_key_file, account_key_env, sas_token_file, sas_token_env, managed_identity")
	case 1:
	default:
		return fmt.Errorf("%s: set exactly one of account_key_file, account_key_env, sas_token_file, sas_token_env, managed_identity; got %s", auths[1], strings.Join(auths, ", "))
	}
	for _, f := range []struct{ key, path string }{{"account_key_file", c.AccountKeyFile}, {"sas_token_file", c.SASTokenFile}} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			return fmt.Errorf("%s: %q must be an absolute path", f.key, f.path)
		}
	}
	for _, e := range []struct{ key, name string }{{"account_key_env", c.AccountKeyEnv}, {"sas_token_env", c.SASTokenEnv}} {
		if e.name != "" && !envName.MatchString(e.name) {
			return fmt.Errorf("%s: %q is not an environment variable name", e.key, e.name)
		}
	}
	if c.ClientID != "" && !c.ManagedIdentity {
		return errors.New("client_id: only applies with managed_identity: true")
	}
	if c.ManagedIdentity && c.Endpoint != "" && !strings.HasPrefix(c.Endpoint, "https:") {
		// The SDK refuses to send a bearer token over plain HTTP; say so now, not at the first
		// request.
		return fmt.Errorf("endpoint: managed_identity needs an https endpoint, not %q", c.Endpoint)
	}
	if c.BlockSize < MinBlockSize || c.BlockSize > MaxBlockSize {
		return fmt.Errorf("block_size: %d bytes is outside [%d, %d] (1 MiB to 4000 MiB)", c.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if c.Concurrency < 1 || c.Concurrency > maxConcurrency {
		return fmt.Errorf("concurrency: %d is outside [1, %d]", c.Concurrency, maxConcurrency)
	}
	return nil
}

// serviceURL is the Blob service URL without a trailing "/".
func (c Config) serviceURL() string {
	if c.Endpoint != "" {
		return strings.TrimRight(c.Endpoint, "/")
	}
	return "https://" + c.Account + ".blob.core.windows.net"
}

// secret reads the credential the config names: from the file at path or the variable env
// (one of them is set). key is the YAML key that named it, for messages; the value never
// appears in one.
func secret(fileKey, path, envKey, env string) (string, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", fileKey, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%s: %s is empty", fileKey, path)
		}
		return v, nil
	}
	v, ok := os.LookupEnv(env)
	if !ok {
		return "", fmt.Errorf("%s: environment variable %s is not set", envKey, env)
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return "", fmt.Errorf("%s: environment variable %s is empty", envKey, env)
	}
	return v, nil
}

// parseSAS checks that token looks like a SAS (a query string carrying a signature) and
// returns it without a leading "?".
func parseSAS(token string) (string, error) {
	token = strings.TrimPrefix(token, "?")
	q, err := url.ParseQuery(token)
	if err != nil {
		return "", errors.New("is not a query string")
	}
	if q.Get("sig") == "" {
		return "", errors.New("has no sig= parameter: not a SAS token")
	}
	return token, nil
}

// redactURL prints u without its query (which may hold a SAS signature) or user information.
func redactURL(u *url.URL) string {
	r := *u
	r.User = nil
	if r.RawQuery != "" {
		r.RawQuery = "REDACTED"
	}
	return r.String()
}
