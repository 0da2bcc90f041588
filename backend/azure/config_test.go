package azure_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/azure"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() azure.Config {
		c := azure.Config{Account: "acct1", Container: "blobs", AccountKeyFile: "/run/secrets/azure-key"}
		c.Defaults()
		return c
	}
	require.NoError(t, valid().Validate())
	cases := []struct {
		key    string
		modify func(c *azure.Config)
	}{
		{"account", func(c *azure.Config) { c.Account = "" }},
		{"account", func(c *azure.Config) { c.Account = "Upper" }},
		{"account", func(c *azure.Config) { c.Account = "ab" }},
		{"account", func(c *azure.Config) { c.Account = "with-hyphen" }},
		{"container", func(c *azure.Config) { c.Container = "" }},
		{"container", func(c *azure.Config) { c.Container = "a/b" }},
		{"container", func(c *azure.Config) { c.Container = "double--hyphen" }},
		{"container", func(c *azure.Config) { c.Container = "-leading" }},
		{"container", func(c *azure.Config) { c.Container = "ab" }},
		{"prefix", func(c *azure.Config) { c.Prefix = "/abs" }},
		{"prefix", func(c *azure.Config) { c.Prefix = "trailing/" }},
		{"prefix", func(c *azure.Config) { c.Prefix = "a//b" }},
		{"prefix", func(c *azure.Config) { c.Prefix = "a/../b" }},
		{"endpoint", func(c *azure.Config) { c.Endpoint = "127.0.0.1:10000" }},
		{"endpoint", func(c *azure.Config) { c.Endpoint = "ftp://host" }},
		{"endpoint", func(c *azure.Config) { c.Endpoint = "http://" }},
		{"endpoint", func(c *azure.Config) { c.Endpoint = "https://acct1.blob.core.windows.net/?sv=1&sig=secret" }},
		{"endpoint", func(c *azure.Config) { c.Endpoint = "https://user:pw@acct1.blob.core.windows.net/" }},
		// Credentials: exactly one way, from a file (absolute path) or the environment.
		{"account_key_file", func(c *azure.Config) { c.AccountKeyFile = "" }},
		{"account_key_env", func(c *azure.Config) { c.AccountKeyEnv = "AZURE_STORAGE_KEY" }},
		{"sas_token_file", func(c *azure.Config) { c.SASTokenFile = "/run/secrets/sas" }},
		{"managed_identity", func(c *azure.Config) { c.ManagedIdentity = true }},
		{"sas_token_env", func(c *azure.Config) { c.AccountKeyFile, c.SASTokenFile, c.SASTokenEnv = "", "/x", "SAS" }},
		{"account_key_file", func(c *azure.Config) { c.AccountKeyFile = "relative/key" }},
		{"sas_token_file", func(c *azure.Config) { c.AccountKeyFile, c.SASTokenFile = "", "sas.txt" }},
		{"account_key_env", func(c *azure.Config) { c.AccountKeyFile, c.AccountKeyEnv = "", "NOT-A-NAME" }},
		{"sas_token_env", func(c *azure.Config) { c.AccountKeyFile, c.SASTokenEnv = "", "$SAS" }},
		{"client_id", func(c *azure.Config) { c.ClientID = "00000000-0000-0000-0000-000000000000" }},
		{"endpoint", func(c *azure.Config) {
			c.AccountKeyFile, c.ManagedIdentity, c.Endpoint = "", true, "http://127.0.0.1:10000/acct1"
		}},
		{"block_size", func(c *azure.Config) { c.BlockSize = azure.MinBlockSize - 1 }},
		{"block_size", func(c *azure.Config) { c.BlockSize = azure.MaxBlockSize + 1 }},
		{"concurrency", func(c *azure.Config) { c.Concurrency = -1 }},
		{"concurrency", func(c *azure.Config) { c.Concurrency = 65 }},
	}
	for _, c := range cases {
		cfg := valid()
		c.modify(&cfg)
		err := cfg.Validate()
		require.Error(t, err, "%+v", cfg)
		require.True(t, strings.HasPrefix(err.Error(), c.key+":"), "error %q should name key %s", err, c.key)
		require.NotContains(t, err.Error(), "secret", "an error must not echo a secret: %q", err)
	}

	for _, ok := range []func(c *azure.Config){
		func(c *azure.Config) { c.AccountKeyFile, c.AccountKeyEnv = "", "AZURE_STORAGE_KEY" },
		func(c *azure.Config) { c.AccountKeyFile, c.SASTokenFile = "", "/run/secrets/sas" },
		func(c *azure.Config) { c.AccountKeyFile, c.SASTokenEnv = "", "AZURE_SAS" },
		func(c *azure.Config) { c.AccountKeyFile, c.ManagedIdentity = "", true },
		func(c *azure.Config) {
			c.AccountKeyFile, c.ManagedIdentity, c.ClientID = "", true, "00000000-0000-0000-0000-000000000000"
			c.Endpoint = "https://acct1.blob.core.windows.net/"
		},
		func(c *azure.Config) {
			c.Endpoint, c.Prefix, c.BlockSize, c.Concurrency = "http://127.0.0.1:10000/devstoreaccount1", "a/b.c", azure.MaxBlockSize, 64
		},
	} {
		cfg := valid()
		ok(&cfg)
		require.NoError(t, cfg.Validate(), "%+v", cfg)
	}

	var d azure.Config
	d.Defaults()
	require.Equal(t, int64(azure.DefaultBlockSize), d.BlockSize)
	require.Equal(t, azure.DefaultConcurrency, d.Concurrency)
}

// TestNewReadsCredentials: New reads the credential the config names and says which key is
// wrong when it cannot, without ever showing the secret.
func TestNewReadsCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	base := azure.Config{Account: "acct1", Container: "blobs"}
	t.Setenv("KRAKENCTL_TEST_AZURE_KEY", fakeKey)
	t.Setenv("KRAKENCTL_TEST_AZURE_EMPTY", " ")
	t.Setenv("KRAKENCTL_TEST_AZURE_SAS", "sv=2021-08-06&sr=c&sp=rl&sig=abc%3D")

	for _, c := range []struct {
		name   string
		modify func(c *azure.Config)
		err    string // "" for success
	}{
		{"key file", func(c *azure.Config) { c.AccountKeyFile = write("key", fakeKey+"\n") }, ""},
		{"key env", func(c *azure.Config) { c.AccountKeyEnv = "KRAKENCTL_TEST_AZURE_KEY" }, ""},
		{"sas file with ?", func(c *azure.Config) { c.SASTokenFile = write("sas", "?sv=2021-08-06&sig=abc%3D\n") }, ""},
		{"sas env", func(c *azure.Config) { c.SASTokenEnv = "KRAKENCTL_TEST_AZURE_SAS" }, ""},
		{"managed identity", func(c *azure.Config) { c.ManagedIdentity = true }, ""},
		{"user-assigned identity", func(c *azure.Config) {
			c.ManagedIdentity, c.ClientID = true, "00000000-0000-0000-0000-000000000000"
		}, ""},
		{"missing key file", func(c *azure.Config) { c.AccountKeyFile = filepath.Join(dir, "nope") },
			"account_key_file: open " + filepath.Join(dir, "nope")},
		{"empty key file", func(c *azure.Config) { c.AccountKeyFile = write("empty", "\n") }, "account_key_file: " + filepath.Join(dir, "empty") + " is empty"},
		{"key not base64", func(c *azure.Config) { c.AccountKeyFile = write("bad", "not base64 at all!") },
			"account_key_file: the account key is not valid base64"},
		{"key env unset", func(c *azure.Config) { c.AccountKeyEnv = "KRAKENCTL_TEST_AZURE_UNSET" },
			"account_key_env: environment variable KRAKENCTL_TEST_AZURE_UNSET is not set"},
		{"key env empty", func(c *azure.Config) { c.AccountKeyEnv = "KRAKENCTL_TEST_AZURE_EMPTY" },
			"account_key_env: environment variable KRAKENCTL_TEST_AZURE_EMPTY is empty"},
		{"sas without sig", func(c *azure.Config) { c.SASTokenFile = write("nosig", "sv=2021-08-06&sp=rl") },
			"sas_token_file: the token has no sig= parameter"},
		{"sas env not a query", func(c *azure.Config) {
			t.Setenv("KRAKENCTL_TEST_AZURE_BADSAS", "sig=%zz")
			c.SASTokenEnv = "KRAKENCTL_TEST_AZURE_BADSAS"
		}, "sas_token_env: the token is not a query string"},
		{"invalid config", func(c *azure.Config) { c.AccountKeyFile = "relative" }, "azure backend: account_key_file:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			c.modify(&cfg)
			b, err := azure.New(cfg)
			if c.err == "" {
				require.NoError(t, err)
				require.NoError(t, b.Close())
				return
			}
			require.ErrorContains(t, err, c.err)
			require.NotContains(t, err.Error(), fakeKey)
		})
	}
}
