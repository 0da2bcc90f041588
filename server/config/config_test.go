package config_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/config"
)

type sample struct {
	Listen  string          `yaml:"listen"`
	Limit   config.ByteSize `yaml:"limit"`
	Timeout time.Duration   `yaml:"timeout"`
	Nested  struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"nested"`
}

func (s *sample) Defaults() {
	if s.Nested.Replicas == 0 {
		s.Nested.Replicas = 3
	}
}

func (s *sample) Validate() error {
	if s.Nested.Replicas < 1 {
		return fmt.Errorf("nested.replicas: must be at least 1, got %d", s.Nested.Replicas)
	}
	return nil
}

func TestDecode(t *testing.T) {
	t.Parallel()
	var s sample
	require.NoError(t, config.Decode(strings.NewReader("listen: :1\nlimit: 2MiB\ntimeout: 3s\n"), &s))
	require.Equal(t, ":1", s.Listen)
	require.Equal(t, config.ByteSize(2<<20), s.Limit)
	require.Equal(t, 3*time.Second, s.Timeout)
	require.Equal(t, 3, s.Nested.Replicas, "defaults applied")

	var empty sample
	require.NoError(t, config.Decode(strings.NewReader(""), &empty))
	require.Equal(t, 3, empty.Nested.Replicas)
}

func TestDecodeErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ doc, want string }{
		{"listen: :1\nlistne: :2\n", "field listne not found"},
		{"nested:\n  replica: 2\n", "line 2: field replica not found"},
		{"limit: lots\n", `size "lots"`},
		{"timeout: soon\n", "soon"},
		{"nested:\n  replicas: -1\n", "nested.replicas: must be at least 1"},
		{"listen: a\n---\nlisten: b\n", "more than one YAML document"},
		{"listen: [a\n", "yaml"},
	} {
		var s sample
		err := config.Decode(strings.NewReader(tc.doc), &s)
		require.Error(t, err, tc.doc)
		require.True(t, errors.Is(err, config.ErrInvalid), "%v", err)
		require.Contains(t, err.Error(), tc.want)
	}
}

func TestParseByteSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]config.ByteSize{
		"0": 0, "17": 17, "1KiB": 1024, "1.5MiB": 3 << 19, "2GB": 2e9, "10 GiB": 10 << 30, "5B": 5, "1M": 1 << 20,
	} {
		got, err := config.ParseByteSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "MiB", "1XB", "1e30GiB"} {
		_, err := config.ParseByteSize(in)
		require.Error(t, err, in)
	}
	require.Equal(t, "512MiB", config.ByteSize(512<<20).String())
	require.Equal(t, "1000B", config.ByteSize(1000).String())
}
