package httpbackend_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/httpbackend"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	cfg, err := httpbackend.ParseConfig([]byte(`
url: https://objects.example.com/blobs
allow_put: true
timeout: 5s
headers:
  X-Api-Key: k1
username: alice
password: s3cret
list: json
`))
	require.NoError(t, err)
	require.Equal(t, httpbackend.Config{
		URL: "https://objects.example.com/blobs", AllowPut: true, Timeout: 5 * time.Second,
		Headers: map[string]string{"X-Api-Key": "k1"}, Username: "alice", Password: "s3cret",
		List: httpbackend.ListJSON,
	}, cfg)

	cfg, err = httpbackend.ParseConfig([]byte("url: http://127.0.0.1:8080\n"))
	require.NoError(t, err)
	require.Equal(t, httpbackend.DefaultTimeout, cfg.Timeout)
	require.Equal(t, httpbackend.ListNone, cfg.List)
	require.False(t, cfg.AllowPut)
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	for doc, wantKey := range map[string]string{
		"url: http://x\nallow_puts: true\n":                       "allow_puts",
		"":                                                        "url is required",
		"url: ftp://x/y\n":                                        "scheme",
		"url: /relative\n":                                        "url",
		"url: http://\n":                                          "no host",
		"url: http://u:p@x/\n":                                    "username and password",
		"url: http://x/?a=b\n":                                    "query",
		"url: http://x/#frag\n":                                   "fragment",
		"url: http://x\ntimeout: -1s\n":                           "timeout",
		"url: http://x\ntimeout: 30\n":                            "line 2",
		"url: http://x\npassword: p\n":                            "password",
		"url: http://x\nusername: a:b\n":                          "username",
		"url: http://x\nheaders: {\"Bad Name\": v}\n":             "headers",
		"url: http://x\nheaders: {Content-Length: \"3\"}\n":       "headers",
		"url: http://x\nheaders: {X-A: \"a\\nb\"}\n":              "headers",
		"url: http://x\nusername: a\nheaders: {Authorization: b}": "Authorization",
		"url: http://x\nlist: xml\n":                              "list",
	} {
		_, err := httpbackend.ParseConfig([]byte(doc))
		require.ErrorIs(t, err, httpbackend.ErrInvalidConfig, "%q", doc)
		require.ErrorContains(t, err, wantKey, "%q", doc)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := httpbackend.New(httpbackend.Config{URL: "not a url"}, httpbackend.Deps{})
	require.ErrorIs(t, err, httpbackend.ErrInvalidConfig)
}
