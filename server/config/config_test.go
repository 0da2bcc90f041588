package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/config"
)

type sample struct {
	Listen      string          `yaml:"listen"`
	AdminListen string          `yaml:"admin_listen"`
	Limit       config.ByteSize `yaml:"limit"`
	Timeout     time.Duration   `yaml:"timeout"`
	Count       int             `yaml:"count"`
	Enabled     *bool           `yaml:"enabled"`
	Names       []string        `yaml:"names"`
	Nested      struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"nested"`
	Routes []route `yaml:"routes"`
	Common `yaml:",inline"`
}

type route struct {
	Namespace string `yaml:"namespace"`
	Store     *store `yaml:"store"`
}

type store struct {
	User     string `yaml:"user"`
	Password string `yaml:"password" secret:"true"`
	Token    string `yaml:"token" secret:"true"`
}

// Common is inlined into sample, as a section shared by several configs would be.
type Common struct {
	Region string `yaml:"region"`
}

func (s *sample) Defaults() {
	if s.Listen == "" {
		s.Listen = "127.0.0.1:1000"
	}
	if s.AdminListen == "" {
		s.AdminListen = "127.0.0.1:1001"
	}
	if s.Nested.Replicas == 0 {
		s.Nested.Replicas = 3
	}
}

func (s *sample) Validate() error {
	var errs []error
	if s.Nested.Replicas < 1 {
		errs = append(errs, fmt.Errorf("nested.replicas: must be at least 1, got %d", s.Nested.Replicas))
	}
	if s.Count < 0 {
		errs = append(errs, errors.New("count: must not be negative"))
	}
	if len(s.Names) == 0 {
		errs = append(errs, errors.New("names: required"))
	}
	for i, r := range s.Routes {
		if r.Store != nil && r.Store.Password != "" && r.Store.User == "" {
			errs = append(errs, fmt.Errorf("routes[%d]: store: password: needs user", i))
		}
	}
	return errors.Join(errs...)
}

func (s *sample) ListenAddrs() []config.ListenAddr {
	return []config.ListenAddr{{Key: "listen", Addr: s.Listen}, {Key: "admin_listen", Addr: s.AdminListen}}
}

// decode runs the whole pipeline on doc and returns the problems, one message each.
func decode(t *testing.T, doc string) (*sample, []string) {
	t.Helper()
	var s sample
	err := config.Decode(strings.NewReader(doc), &s)
	if err == nil {
		return &s, nil
	}
	require.ErrorIs(t, err, config.ErrInvalid)
	ce, ok := errors.AsType[*config.Error](err)
	require.True(t, ok, "%T %v", err, err)
	var msgs []string
	for _, p := range ce.Problems {
		msgs = append(msgs, p.Error())
	}
	return &s, msgs
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestDecode(t *testing.T) {
	t.Parallel()
	s, problems := decode(t, "listen: :1\nlimit: 2MiB\ntimeout: 3s\nnames: [a]\nregion: eu\nroutes:\n  - namespace: x\n    store: {user: u}\n")
	require.Empty(t, problems)
	require.Equal(t, ":1", s.Listen)
	require.Equal(t, config.ByteSize(2<<20), s.Limit)
	require.Equal(t, 3*time.Second, s.Timeout)
	require.Equal(t, 3, s.Nested.Replicas, "defaults applied")
	require.Equal(t, "eu", s.Region, "inline fields are keys of the outer mapping")
	require.Equal(t, []route{{Namespace: "x", Store: &store{User: "u"}}}, s.Routes)

	_, problems = decode(t, "")
	require.Equal(t, []string{"names: required"}, problems, "an empty document yields the defaults")
}

func TestDecodeErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	const ok = "names: [a]\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown key", ok + "listen: :1\nlistne: :2\n", "listne: line 3: field listne not found (did you mean listen?)"},
		{"unknown nested key", ok + "nested:\n  replica: 2\n", "nested.replica: line 3: field replica not found (did you mean replicas?)"},
		{"unknown key in a list", ok + "routes:\n  - namespace: a\n    stor: {}\n", "routes[0].stor: line 4: field stor not found (did you mean store?)"},
		{"unknown key in a pointer", ok + "routes:\n  - store: {usr: x}\n", "routes[0].store.usr: line 3: field usr not found"},
		{"file of a non-secret", ok + "routes:\n  - store: {user_file: /x}\n", "routes[0].store.user_file: line 3: field user_file not found (user is not a secret"},
		{"bad size", ok + "limit: lots\n", `limit: line 2: size "lots"`},
		{"bad duration", ok + "timeout: soon\n", "timeout: line 2: cannot unmarshal !!str `soon` into time.Duration"},
		{"wrong type", ok + "count: many\n", "count: line 2: cannot unmarshal !!str `many` into int"},
		{"wrong type in a list", "names: [a, [b]]\n", "names: line 1: cannot unmarshal !!seq into string"},
		{"scalar for a section", ok + "nested: 3\n", "nested: line 2: cannot unmarshal !!int into a mapping of keys"},
		{"mapping for a list", ok + "routes: {namespace: a}\n", "routes: line 2: cannot unmarshal !!map into a list"},
		{"list for the document", "[not, a, map]\n", "line 1: cannot unmarshal !!seq into a mapping of keys"},
		{"duplicate key", ok + "count: 1\ncount: 2\n", "count: line 3: key count is already set at line 2"},
		{"validation", ok + "nested:\n  replicas: -1\n", "nested.replicas: must be at least 1, got -1"},
		{"two documents", "listen: a\n---\nlisten: b\n", "line 3: more than one YAML document"},
		{"malformed flow", ok + "listen: [a\n", "listen: line 2: did not find expected ',' or ']'"},
		{"malformed on the first line", "nested: {replicas: ${X}}\n", "nested: line 1: did not find expected ',' or '}'"},
		{"malformed in a list", ok + "routes:\n  - namespace: a\n  - namespace: b\n    store:\n      user: 'x\n", "routes[1].store.user: line 6: found unexpected end of stream"},
		{"tab indentation", ok + "nested:\n\treplicas: 2\n", "nested: line 3: found character that cannot start any token"},
		{"overlapping listeners", ok + "listen: 127.0.0.1:9\nadmin_listen: 127.0.0.1:9\n",
			`admin_listen: "127.0.0.1:9" overlaps listen "127.0.0.1:9"`},
		{"every interface overlaps loopback", ok + "listen: 0.0.0.0:9\nadmin_listen: 127.0.0.1:9\n",
			`admin_listen: "127.0.0.1:9" overlaps listen "0.0.0.0:9"`},
		{"secret file missing", ok + "routes:\n  - store: {user: u, password_file: /nonexistent/pw}\n",
			"routes[0].store.password_file: open /nonexistent/pw: no such file or directory"},
		{"secret and its file", ok + "routes:\n  - store:\n      token: abc\n      token_file: /x\n",
			"routes[0].store.token_file: line 5: set token or token_file, not both (the other is at line 4)"},
		{"secret file is not a path", ok + "routes:\n  - store: {password_file: [a]}\n", "routes[0].store.password_file: line 3: want the path of a file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, problems := decode(t, tc.doc)
			require.NotEmpty(t, problems, tc.doc)
			require.Contains(t, strings.Join(problems, "\n"), tc.want)
		})
	}
}

func TestEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	doc := "count: -1\nlistne: x\nlimit: lots\nnested: {replicas: -2}\nroutes:\n  - store: {password_file: /nonexistent}\n"
	_, problems := decode(t, doc)
	require.Equal(t, []string{
		"listne: line 2: field listne not found (did you mean listen?)",
		`limit: line 3: size "lots": want a non-negative number with an optional unit such as MiB or GB`,
		"routes[0].store.password_file: open /nonexistent: no such file or directory",
		"nested.replicas: must be at least 1, got -2",
		"count: must not be negative",
		"names: required",
	}, problems)

	// A value that failed to decode is not reported again by Validate.
	_, problems = decode(t, "names: lots\n")
	require.Equal(t, []string{"names: line 1: cannot unmarshal !!str `lots` into []string"}, problems)
}

func TestErrorMessage(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "c.yaml", "count: -1\nnested: {replicas: 0}\n")
	err := config.Load(path, &sample{})
	require.EqualError(t, err, path+": invalid config (2 problems):\n  count: must not be negative\n  names: required")

	path = writeFile(t, "c.yaml", "names: [a]\ncount: -1\n")
	require.EqualError(t, config.Load(path, &sample{}), path+": invalid config: count: must not be negative")

	err = config.Load(filepath.Join(t.TempDir(), "missing.yaml"), &sample{})
	require.ErrorIs(t, err, config.ErrInvalid)
	require.ErrorContains(t, err, "missing.yaml: no such file or directory")

	require.Error(t, config.Unmarshal([]byte("a: 1"), sample{}), "not a pointer")
	require.NotErrorIs(t, config.Unmarshal([]byte("a: 1"), sample{}), config.ErrInvalid)
}

func TestSecretFromFile(t *testing.T) {
	t.Parallel()
	pw := writeFile(t, "pw", "s3cr3t\n")
	tok := writeFile(t, "tok", "line1\nline2\n\n")
	s, problems := decode(t, "names: [a]\nroutes:\n  - store: {user: u, password_file: "+pw+", token_file: "+tok+"}\n")
	require.Empty(t, problems)
	require.Equal(t, "s3cr3t", s.Routes[0].Store.Password, "one trailing newline is trimmed")
	require.Equal(t, "line1\nline2\n", s.Routes[0].Store.Token, "only one")

	crlf := writeFile(t, "crlf", "abc\r\n")
	s, problems = decode(t, "names: [a]\nroutes:\n  - store: {password_file: "+crlf+", user: u}\n")
	require.Empty(t, problems)
	require.Equal(t, "abc", s.Routes[0].Store.Password)

	// A relative path starts in the config file's directory, not the working directory.
	dir := filepath.Dir(pw)
	cfgFile := filepath.Join(dir, "c.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("names: [a]\nroutes:\n  - store: {user: u, password_file: pw}\n"), 0o600))
	var rel sample
	require.NoError(t, config.Load(cfgFile, &rel))
	require.Equal(t, "s3cr3t", rel.Routes[0].Store.Password)

	big := writeFile(t, "big", strings.Repeat("x", 65<<10))
	_, problems = decode(t, "names: [a]\nroutes:\n  - store: {password_file: "+big+"}\n")
	require.Len(t, problems, 1)
	require.Contains(t, problems[0], "routes[0].store.password_file: "+big+": larger than 64 KiB")
}

func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-do-not-print"
	pw := writeFile(t, "pw", secret)
	doc := "routes:\n  - store: {password_file: " + pw + "}\n  - store: {password: " + secret + ", password_file: " + pw + "}\n" +
		"  - store: {token: " + secret + "}\n    namespace: [x]\n"
	_, problems := decode(t, doc)
	require.Len(t, problems, 5, "%q", problems) // both set, namespace's type, names, two passwords without user
	for _, p := range problems {
		require.NotContains(t, p, secret)
	}
}

// TestEnv changes the process's environment, so it does not run in parallel.
func TestEnv(t *testing.T) {
	t.Setenv("KRAKENCTL_TEST_HOST", "10.0.0.7")
	t.Setenv("KRAKENCTL_TEST_COUNT", "12")
	t.Setenv("KRAKENCTL_TEST_EMPTY", "")
	pw := writeFile(t, "pw", "from-file")
	t.Setenv("KRAKENCTL_TEST_DIR", filepath.Dir(pw))

	s, problems := decode(t, `listen: ${KRAKENCTL_TEST_HOST}:16000
count: ${KRAKENCTL_TEST_COUNT}
names: ["${KRAKENCTL_TEST_HOST}", "a$${KRAKENCTL_TEST_HOST}", "$$5", "x${KRAKENCTL_TEST_EMPTY}y", "${KRAKENCTL_TEST_COUNT}"]
region: ${KRAKENCTL_TEST_COUNT}
routes:
  - store:
      user: ${KRAKENCTL_TEST_COUNT}
      password_file: ${KRAKENCTL_TEST_DIR}/pw
`)
	require.Empty(t, problems)
	require.Equal(t, "10.0.0.7:16000", s.Listen)
	require.Equal(t, 12, s.Count, "a plain scalar is typed after expansion")
	require.Equal(t, []string{"10.0.0.7", "a${KRAKENCTL_TEST_HOST}", "$$5", "xy", "12"}, s.Names)
	require.Equal(t, "12", s.Region, "a number is still a string where a string is wanted")
	require.Equal(t, "12", s.Routes[0].Store.User)
	require.Equal(t, "from-file", s.Routes[0].Store.Password)

	// An anchored value reached through an alias is expanded once.
	s, problems = decode(t, "names: [&a \"$${X}\", *a]\n")
	require.Empty(t, problems)
	require.Equal(t, []string{"${X}", "${X}"}, s.Names)

	for doc, want := range map[string]string{
		"names: [a, '${KRAKENCTL_TEST_UNSET}']\n":                                        "names[1]: line 1: environment variable KRAKENCTL_TEST_UNSET is not set",
		"names: [a]\nlisten: ${KRAKENCTL_TEST_UNSET}:1\n":                                "listen: line 2: environment variable KRAKENCTL_TEST_UNSET is not set",
		"names: [a]\nlisten: ${KRAKENCTL_TEST_HOST\n":                                    `listen: line 2: "${" without its closing "}"`,
		"names: [a]\nlisten: ${1X}\n":                                                    "listen: line 2: ${1X}: not an environment variable name",
		"names: [a]\nroutes:\n  - store: {password_file: \"${KRAKENCTL_TEST_UNSET}\"}\n": "routes[0].store.password_file: line 3: environment variable KRAKENCTL_TEST_UNSET is not set",
	} {
		_, problems := decode(t, doc)
		require.Contains(t, strings.Join(problems, "\n"), want, doc)
	}
}

// TestEnvIPv6HostPort: ${POD_IP}:PORT works on an IPv6 cluster, where the address must be
// bracketed to be the host of a host:port; elsewhere an IPv6 value is written as it is.
func TestEnvIPv6HostPort(t *testing.T) {
	t.Setenv("KRAKENCTL_TEST_IP6", "fd00::5")
	t.Setenv("KRAKENCTL_TEST_IP4", "10.0.0.7")
	t.Setenv("KRAKENCTL_TEST_PORT", "16000")
	t.Setenv("KRAKENCTL_TEST_MAPPED", "::ffff:10.0.0.7")
	s, problems := decode(t, `listen: ${KRAKENCTL_TEST_IP6}:16000
names: ["${KRAKENCTL_TEST_IP6}", "${KRAKENCTL_TEST_IP6}:${KRAKENCTL_TEST_PORT}", "[${KRAKENCTL_TEST_IP6}]:1", "${KRAKENCTL_TEST_IP4}:1", "${KRAKENCTL_TEST_IP6}:x", "${KRAKENCTL_TEST_MAPPED}:1", "${KRAKENCTL_TEST_IP6}:"]
`)
	require.Empty(t, problems)
	require.Equal(t, "[fd00::5]:16000", s.Listen)
	require.Equal(t, []string{"fd00::5", "[fd00::5]:16000", "[fd00::5]:1", "10.0.0.7:1", "fd00::5:x", "[::ffff:10.0.0.7]:1", "fd00::5:"}, s.Names)
}

func TestMergeKeys(t *testing.T) {
	t.Parallel()
	s, problems := decode(t, `base: &base {namespace: shared, store: {user: u}}
names: [a]
routes:
  - <<: *base
    namespace: mine
  - *base
`)
	// "base" is not a key of sample: anchors must live under a real key, and this one doesn't.
	require.Equal(t, []string{"base: line 1: field base not found"}, problems)
	require.Equal(t, "mine", s.Routes[0].Namespace, "explicit keys override merged ones")
	require.Equal(t, &store{User: "u"}, s.Routes[0].Store)
	require.Equal(t, "shared", s.Routes[1].Namespace)
}

// TestLoadOverrides: Load applies the overrides between Read and Check. A flag's problems name
// the flag once, without a line or a second "invalid config", and are not followed by Check's
// repeat of them; Check's problems about a key a flag set name the flag too, and the file's do
// not.
func TestLoadOverrides(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "c.yaml", "listen: 127.0.0.1:5\ncount: lots\n")
	var s sample
	err := config.Load(path, &s,
		config.Override{Flag: "name", Key: "names", Values: []string{"one"}},                 // a scalar into a list
		config.Override{Flag: "admin", Key: "admin_listen", Values: []string{"127.0.0.1:5"}}, // collides with the file's listen
		config.Override{Flag: "region", Key: "region", Values: []string{"eu"}},
		config.Override{Flag: "count", Key: "count", Values: []string{"-1"}},
	)
	ce, ok := errors.AsType[*config.Error](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, path, ce.File)
	var got []string
	for _, p := range ce.Problems {
		got = append(got, p.Error())
	}
	require.Equal(t, []string{
		"count: line 2: cannot unmarshal !!str `lots` into int", // the file's problem is the file's
		"--name: names: cannot unmarshal !!str `one` into []string",
		"--count: count: must not be negative",
		`--admin: admin_listen: "127.0.0.1:5" overlaps listen "127.0.0.1:5": two listeners cannot bind the same port`,
	}, got, "no names: required after the flag that failed to set names")
	require.Equal(t, 1, strings.Count(err.Error(), "invalid config"), err.Error())
	require.Equal(t, "eu", s.Region, "overrides run before Validate")

	// Read and Check are the two halves: a required key may come from a flag.
	s = sample{}
	require.NoError(t, config.Read(writeFile(t, "c.yaml", "listen: 127.0.0.1:5\n"), &s))
	require.Equal(t, 0, s.Nested.Replicas, "Read applies no defaults")
	require.ErrorContains(t, config.Check(&s), "names: required")
	require.NoError(t, config.Apply(&s, []config.Override{{Key: "names", Values: []string{"x"}, List: true}}))
	require.NoError(t, config.Check(&s))
	require.Equal(t, 3, s.Nested.Replicas)
}

func TestCheckListenAddrs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b    string
		overlap bool
	}{
		{"127.0.0.1:1", "127.0.0.1:1", true},
		{"0.0.0.0:1", "127.0.0.1:1", true},
		{"127.0.0.1:1", "[::]:1", true},
		{":1", "10.0.0.1:1", true},
		{"[::1]:1", "[0:0::1]:1", true},
		{"Host.example:1", "host.example:1", true},
		{"127.0.0.1:1", "127.0.0.2:1", false},
		{"127.0.0.1:1", "127.0.0.1:2", false},
		{"127.0.0.1:0", "127.0.0.1:0", false},
		{"", "127.0.0.1:1", false},
		{"nope", "127.0.0.1:1", false},
	} {
		errs := config.CheckListenAddrs([]config.ListenAddr{{Key: "a", Addr: tc.a}, {Key: "b", Addr: tc.b}})
		if !tc.overlap {
			require.Empty(t, errs, "%s %s", tc.a, tc.b)
			continue
		}
		require.Len(t, errs, 1, "%s %s", tc.a, tc.b)
		require.EqualError(t, errs[0], fmt.Sprintf("b: %q overlaps a %q: two listeners cannot bind the same port", tc.b, tc.a))
	}
	for addr, ok := range map[string]bool{"127.0.0.1:0": true, ":80": true, "[::1]:65535": true, "h": false, "h:65536": false, "h:http": false, "h:080": false, "h:00": false, "h:+1": false} {
		require.Equal(t, ok, config.CheckHostPort(addr) == nil, addr)
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{
		"listen", "admin_listen", "limit", "timeout", "count", "enabled", "names", "nested", "nested.replicas",
		"routes", "routes[].namespace", "routes[].store", "routes[].store.user", "routes[].store.password", "routes[].store.token",
		"region",
	}, config.Keys(&sample{}))
}

func TestSecretTagOnANonString(t *testing.T) {
	t.Parallel()
	type bad struct {
		N int `yaml:"n" secret:"true"`
	}
	require.PanicsWithValue(t, `config: config_test.bad.N: secret:"true" needs a string field`, func() { config.Keys(bad{}) })
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

// TestApply: an override sets one key through the file's decoder: the rest of the config
// stays, nested keys and lists work, types are checked and unknown keys refused, each problem
// naming the flag and the key, once, without a line; and the value is taken as given, ${...}
// and all, since the shell expanded the flag already.
func TestApply(t *testing.T) {
	type peer struct {
		Listen string          `yaml:"listen"`
		Rate   config.ByteSize `yaml:"rate"`
	}
	type cfgT struct {
		Listen   string   `yaml:"listen"`
		Trackers []string `yaml:"trackers"`
		Peer     *peer    `yaml:"peer"`
		Count    int      `yaml:"count"`
	}
	set := func(key, value string) config.Override {
		return config.Override{Flag: strings.ReplaceAll(key, ".", "-"), Key: key, Values: []string{value}}
	}
	list := func(key string, values ...string) config.Override {
		return config.Override{Flag: key, Key: key, Values: values, List: true}
	}
	var c cfgT
	require.NoError(t, config.Unmarshal([]byte("listen: a:1\ntrackers: [x:1, y:1]\ncount: 3\n"), &c))
	require.NoError(t, config.Apply(&c, []config.Override{
		set("listen", "b:2"), list("trackers", "t:1"), set("peer.listen", "0.0.0.0:9"), set("peer.rate", "2MiB"),
	}))
	require.Equal(t, cfgT{Listen: "b:2", Trackers: []string{"t:1"}, Peer: &peer{Listen: "0.0.0.0:9", Rate: 2 << 20}, Count: 3}, c)
	require.NoError(t, config.Apply(&c, []config.Override{list("trackers", "u:1", "v:1")}))
	require.Equal(t, []string{"u:1", "v:1"}, c.Trackers)

	t.Setenv("KRAKENCTL_TEST_FLAG", "expanded")
	require.NoError(t, config.Apply(&c, []config.Override{set("listen", "${KRAKENCTL_TEST_FLAG}"), set("peer.listen", "$${NOPE}")}))
	require.Equal(t, "${KRAKENCTL_TEST_FLAG}", c.Listen, "a flag is not expanded again")
	require.Equal(t, "$${NOPE}", c.Peer.Listen)

	for _, tc := range []struct {
		o    config.Override
		want string
	}{
		{set("count", "many"), "invalid config: --count: count: cannot unmarshal !!str `many` into int"},
		{set("peer.rate", "lots"), `invalid config: --peer-rate: peer.rate: size "lots": want a non-negative number with an optional unit such as MiB or GB`},
		{set("lisen", "x:1"), "invalid config: --lisen: lisen: field lisen not found (did you mean listen?)"},
		{list("listen", "x"), "invalid config: --listen: listen: cannot unmarshal !!seq into string"},
		{set("peer..listen", "x"), `invalid config: --peer--listen: bad key "peer..listen"`},
		{config.Override{Key: "", Values: []string{"x"}}, `invalid config: bad key ""`},
		{config.Override{Key: "listen"}, "invalid config: listen: want one value, got 0"},
	} {
		err := config.Apply(&c, []config.Override{tc.o})
		require.ErrorIs(t, err, config.ErrInvalid)
		require.EqualError(t, err, tc.want)
		require.Len(t, config.Problems(err), 1, "an *Error splits into its problems")
	}
}

// TestEnvValuesAreNotEchoed: a value from the environment that does not fit its key (a secret
// set in the wrong key, say) is not quoted back in the message, and one that reads "null" or
// nothing stays a string instead of silently emptying a password.
func TestEnvValuesAreNotEchoed(t *testing.T) {
	const secret = "hunter2-from-env"
	t.Setenv("KRAKENCTL_TEST_SECRET", secret)
	t.Setenv("KRAKENCTL_TEST_NULL", "null")
	s, problems := decode(t, "names: [a]\ntimeout: ${KRAKENCTL_TEST_SECRET}\nroutes:\n  - store:\n      user: u\n      password: ${KRAKENCTL_TEST_NULL}\n")
	require.Len(t, problems, 1, "%q", problems)
	require.Contains(t, problems[0], "timeout")
	require.NotContains(t, problems[0], "hunter2")
	require.Equal(t, "null", s.Routes[0].Store.Password)
}

// TestSecretFileMustBeRegular: a secret file that is a FIFO (which would block the open) or a
// directory is refused, naming the key, without hanging.
func TestSecretFileMustBeRegular(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	for _, path := range []string{fifo, t.TempDir()} {
		_, problems := decode(t, "names: [a]\nroutes:\n  - store: {user: u, password_file: "+path+"}\n")
		require.Len(t, problems, 1, "%q", problems)
		require.Contains(t, problems[0], "routes[0].store.password_file")
		require.Contains(t, problems[0], "not a regular file")
	}
}
