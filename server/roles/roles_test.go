package roles_test

import (
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/roles"
)

func TestTable(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"agent", "origin", "tracker", "proxy", "build-index"}, roles.Names())
	for _, r := range roles.All() {
		got, err := roles.Lookup(r.Name)
		require.NoError(t, err)
		require.Equal(t, r.Name, got.Name)
		a, b := r.NewConfig(), r.NewConfig()
		require.NotSame(t, a, b, "%s: NewConfig returns a fresh config each time", r.Name)
	}
	_, err := roles.Lookup("buildindex")
	require.ErrorIs(t, err, roles.ErrUnknown)
	require.EqualError(t, err, `unknown role "buildindex": want one of agent, origin, tracker, proxy, build-index`)
}

// TestExamples proves each role's example config loads through the whole pipeline and
// mentions every key of the role's Config, so it cannot go stale when a key is added.
func TestExamples(t *testing.T) {
	t.Parallel()
	for _, r := range roles.All() {
		t.Run(r.Name, func(t *testing.T) {
			t.Parallel()
			cfg := r.NewConfig()
			require.NoError(t, config.Decode(strings.NewReader(r.Example), cfg))

			present, commented := exampleKeys(t, r.Example)
			var missing []string
			for _, key := range config.Keys(cfg) {
				leaf := key[strings.LastIndexAny(key, ".]")+1:]
				if !present[key] && !commented[leaf] {
					missing = append(missing, key)
				}
			}
			require.Empty(t, missing, "keys the %s example does not mention (set them, or show them in a commented-out line)", r.Name)
		})
	}
}

// commentedKey matches a commented-out key: "# key: value", "#   - key: value".
var commentedKey = regexp.MustCompile(`(?m)^\s*#\s*(?:- )?([a-z0-9_]+):(?:\s|$)`)

// exampleKeys returns the key paths set in doc (list elements written [], a secret's
// <key>_file counted as <key>) and the keys named by commented-out lines.
func exampleKeys(t *testing.T, doc string) (present, commented map[string]bool) {
	var root yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(doc), &root))
	present = map[string]bool{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, path+"[]")
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := n.Content[i].Value
				p := key
				if path != "" {
					p = path + "." + key
				}
				// A key ending in _file is a secret's file or a key of its own (tls.cert_file).
				present[p] = true
				present[strings.TrimSuffix(p, "_file")] = true
				walk(n.Content[i+1], p)
			}
		}
	}
	walk(&root, "")
	commented = map[string]bool{}
	for _, m := range commentedKey.FindAllStringSubmatch(doc, -1) {
		commented[m[1]] = true
		commented[strings.TrimSuffix(m[1], "_file")] = true
	}
	return present, commented
}

// TestAdminListen checks every role's admin listener: on loopback by default, away from the
// role's other listeners, and named with both keys when it collides with one.
func TestAdminListen(t *testing.T) {
	t.Parallel()
	var all []config.ListenAddr
	for _, r := range roles.All() {
		cfg := r.NewConfig()
		cfg.Defaults()
		addrs := cfg.ListenAddrs()
		admin := find(t, addrs, "admin_listen")
		host, _, err := net.SplitHostPort(admin)
		require.NoError(t, err, r.Name)
		require.Equal(t, "127.0.0.1", host, "%s: the admin listener is on loopback by default", r.Name)
		for _, a := range addrs {
			all = append(all, config.ListenAddr{Key: r.Name + " " + a.Key, Addr: a.Addr})
		}

		// Bind the example's admin listener where its data API listens.
		cfg = r.NewConfig()
		require.NoError(t, config.Unmarshal([]byte(r.Example), cfg))
		listen := find(t, cfg.ListenAddrs(), "listen")
		doc := regexp.MustCompile(`(?m)^admin_listen: \S+`).ReplaceAllString(r.Example, "admin_listen: "+listen)
		err = config.Decode(strings.NewReader(doc), r.NewConfig())
		require.ErrorIs(t, err, config.ErrInvalid, r.Name)
		require.ErrorContains(t, err, `admin_listen: "`+listen+`" overlaps listen "`+listen+`"`, r.Name)

		doc = regexp.MustCompile(`(?m)^admin_listen: \S+`).ReplaceAllString(r.Example, "admin_listen: localhost")
		err = config.Decode(strings.NewReader(doc), r.NewConfig())
		require.ErrorContains(t, err, `admin_listen: "localhost" is not host:port`, r.Name)
	}
	require.Empty(t, config.CheckListenAddrs(all), "the roles' default listeners fit on one host together")
}

func find(t *testing.T, addrs []config.ListenAddr, key string) string {
	t.Helper()
	for _, a := range addrs {
		if a.Key == key {
			return a.Addr
		}
	}
	require.Failf(t, "no listener", "%s not in %v", key, addrs)
	return ""
}

// TestBadListenAddrs: every address a role binds is checked by its Validate, port range and
// all, with one problem for the key that is wrong, in the same words for every role and key.
func TestBadListenAddrs(t *testing.T) {
	t.Parallel()
	for _, r := range roles.All() {
		cfg := r.NewConfig()
		cfg.Defaults()
		for _, a := range cfg.ListenAddrs() {
			for bad, want := range map[string]string{
				"nope":            `"nope" is not host:port: `,
				"127.0.0.1:99999": `"127.0.0.1:99999": port "99999" is not a number in 0..65535`,
				"127.0.0.1:http":  `"127.0.0.1:http": port "http" is not a number in 0..65535`,
			} {
				cfg := r.NewConfig()
				require.NoError(t, config.Unmarshal([]byte(r.Example), cfg))
				require.NoError(t, config.Apply(cfg, []config.Override{{Key: a.Key, Values: []string{bad}}}))
				err := config.Check(cfg)
				require.ErrorIs(t, err, config.ErrInvalid, "%s %s: %s", r.Name, a.Key, bad)
				var about []string
				for _, p := range config.Problems(err) {
					if strings.HasPrefix(p.Error(), a.Key+": ") {
						about = append(about, p.Error())
					}
				}
				require.Len(t, about, 1, "%s %s: %s: %v", r.Name, a.Key, bad, err)
				require.True(t, strings.HasPrefix(about[0], a.Key+": "+want), "%s: %s", r.Name, about[0])
			}
		}
	}
}
