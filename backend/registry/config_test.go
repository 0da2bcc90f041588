package registry_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/registry"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	cfg, err := registry.ParseConfig([]byte(`
address: registry.example.com:5000
username: alice
password: s3cret
timeout: 10s
`))
	require.NoError(t, err)
	require.Equal(t, registry.Config{Address: "registry.example.com:5000", Username: "alice", Password: "s3cret", Timeout: 10 * time.Second}, cfg)

	cfg, err = registry.ParseConfig([]byte("address: 127.0.0.1:5000\ninsecure: true\n"))
	require.NoError(t, err)
	require.Equal(t, registry.DefaultTimeout, cfg.Timeout)
	require.True(t, cfg.Insecure)

	for _, addr := range []string{"registry-1.docker.io", "[::1]:5000", "localhost:5000"} {
		_, err := registry.ParseConfig([]byte("address: \"" + addr + "\"\n"))
		require.NoError(t, err, addr)
	}
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	for doc, want := range map[string]string{
		"address: x\nadress: y\n":             "adress",
		"insecure: true\n":                    "address is required",
		"address: https://x\n":                "scheme",
		"address: x/path\n":                   "host[:port]",
		"address: u@x\n":                      "host[:port]",
		"address: x:port\n":                   "address",
		"address: x\ntimeout: -1s\n":          "timeout",
		"address: x\npassword: p\n":           "password",
		"address: x\nusername: a:b\n":         "username",
		"address: x\nusername: a\ntoken: t\n": "token",
		"address: x\ntoken: \"a b\"\n":        "token",
	} {
		_, err := registry.ParseConfig([]byte(doc))
		require.ErrorIs(t, err, registry.ErrInvalidConfig, "%q", doc)
		require.ErrorContains(t, err, want, "%q", doc)
	}
}
