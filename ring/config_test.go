package ring_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/krakenctl/krakenctl/ring"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := ring.Config{Members: []string{"a:1"}}
	c.Defaults()
	require.Equal(t, ring.Config{
		Members:        []string{"a:1"},
		Replicas:       3,
		HealthInterval: 5 * time.Second,
		HealthTimeout:  2 * time.Second,
		FailThreshold:  3,
		PassThreshold:  2,
	}, c)
	require.NoError(t, c.Validate())

	// Explicit values, including invalid negative ones, are kept for Validate to judge.
	c = ring.Config{Members: []string{"a:1"}, Replicas: -1, HealthInterval: time.Minute, FailThreshold: 7}
	c.Defaults()
	require.Equal(t, -1, c.Replicas)
	require.Equal(t, time.Minute, c.HealthInterval)
	require.Equal(t, 7, c.FailThreshold)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() ring.Config {
		c := ring.Config{Members: []string{"origin-1:7602", "10.0.0.2:7602", "[fd00::3]:7602"}}
		c.Defaults()
		return c
	}
	for _, tc := range []struct {
		name   string
		mutate func(*ring.Config)
		want   string
	}{
		{"no members", func(c *ring.Config) { c.Members = nil }, "ring.members must list at least one origin host:port"},
		{"no port", func(c *ring.Config) { c.Members[1] = "10.0.0.2" }, `ring.members[1]: member "10.0.0.2" must be host:port`},
		{"scheme", func(c *ring.Config) { c.Members[0] = "http://origin-1:7602" }, `ring.members[0]: member "http://origin-1:7602" must be host:port, without scheme`},
		{"empty host", func(c *ring.Config) { c.Members[0] = ":7602" }, `ring.members[0]: member ":7602" has an empty host`},
		{"port zero", func(c *ring.Config) { c.Members[0] = "a:0" }, `has port "0"`},
		{"port too big", func(c *ring.Config) { c.Members[0] = "a:65536" }, `has port "65536"`},
		{"port name", func(c *ring.Config) { c.Members[0] = "a:http" }, `has port "http"`},
		{"space", func(c *ring.Config) { c.Members[0] = "a :1" }, "without scheme, path or spaces"},
		{"duplicate", func(c *ring.Config) { c.Members = append(c.Members, "10.0.0.2:7602") }, `ring.members[3]: "10.0.0.2:7602" duplicates ring.members[1]`},
		{"replicas", func(c *ring.Config) { c.Replicas = 0 }, "ring.replicas must be >= 1, got 0"},
		{"interval", func(c *ring.Config) { c.HealthInterval = -time.Second }, "ring.health_interval must be > 0, got -1s"},
		{"timeout", func(c *ring.Config) { c.HealthTimeout = 0 }, "ring.health_timeout must be > 0, got 0s"},
		{"timeout over interval", func(c *ring.Config) { c.HealthTimeout = 6 * time.Second }, "ring.health_timeout (6s) must not exceed ring.health_interval (5s)"},
		{"fail threshold", func(c *ring.Config) { c.FailThreshold = -2 }, "ring.fail_threshold must be >= 1, got -2"},
		{"pass threshold", func(c *ring.Config) { c.PassThreshold = 0 }, "ring.pass_threshold must be >= 1, got 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			require.NoError(t, c.Validate())
			tc.mutate(&c)
			err := c.Validate()
			require.ErrorIs(t, err, ring.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	c := ring.Config{Members: []string{"a"}, Replicas: -1, HealthInterval: -1, HealthTimeout: -1, FailThreshold: -1, PassThreshold: -1}
	err := c.Validate()
	require.ErrorIs(t, err, ring.ErrInvalidConfig)
	for _, key := range []string{"ring.members[0]", "ring.replicas", "ring.health_interval", "ring.health_timeout", "ring.fail_threshold", "ring.pass_threshold"} {
		require.ErrorContains(t, err, key)
	}
}

func decodeStrict(t *testing.T, doc string) (ring.Config, error) {
	t.Helper()
	var c ring.Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	return c, dec.Decode(&c)
}

func TestConfigYAML(t *testing.T) {
	t.Parallel()
	c, err := decodeStrict(t, `
members: ["origin-1:7602", "origin-2:7602"]
replicas: 2
health_interval: 1m30s
health_timeout: 500ms
fail_threshold: 4
pass_threshold: 1
`)
	require.NoError(t, err)
	require.Equal(t, ring.Config{
		Members:        []string{"origin-1:7602", "origin-2:7602"},
		Replicas:       2,
		HealthInterval: 90 * time.Second,
		HealthTimeout:  500 * time.Millisecond,
		FailThreshold:  4,
		PassThreshold:  1,
	}, c)
	require.NoError(t, c.Validate())

	// A bare number is not silently read as nanoseconds.
	_, err = decodeStrict(t, "health_interval: 5\n")
	require.Error(t, err)
	_, err = decodeStrict(t, "health_timeout: soon\n")
	require.Error(t, err)
	_, err = decodeStrict(t, "replica: 3\n")
	require.ErrorContains(t, err, "field replica not found")

	// Round trip: what we write, we read back.
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	require.NoError(t, enc.Encode(c))
	require.NoError(t, enc.Close())
	back, err := decodeStrict(t, buf.String())
	require.NoError(t, err)
	require.Equal(t, c, back)
}

func TestCheckMember(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a:1", "origin-1.example.com:7602", "10.1.2.3:65535", "[::1]:80"} {
		require.NoError(t, ring.CheckMember(ok), ok)
	}
	for _, bad := range []string{"", "a", "a:", ":1", "a:b", "a:-1", "a:+1", "a:0080", "::1:80", "a:1/x", "user@a:1", "a:1?x", "a:1\x00"} {
		err := ring.CheckMember(bad)
		require.Error(t, err, "%q", bad)
		require.NotErrorIs(t, err, ring.ErrInvalidConfig, "CheckMember is not about config")
	}
}

func TestCheckMembers(t *testing.T) {
	require.Empty(t, ring.CheckMembers("origins", []string{"127.0.0.1:1", "origin-2:15000"}))
	errs := ring.CheckMembers("origins", nil)
	require.Len(t, errs, 1)
	require.ErrorContains(t, errs[0], "origins: required")
	errs = ring.CheckMembers("origins", []string{"127.0.0.1:1", "http://x:2", "127.0.0.1:1"})
	require.Len(t, errs, 2)
	require.ErrorContains(t, errs[0], "origins[1]: member \"http://x:2\"")
	require.ErrorContains(t, errs[1], `origins[2]: "127.0.0.1:1" is listed twice`)
}
