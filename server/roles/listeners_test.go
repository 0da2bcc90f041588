package roles

import (
	"context"
	"errors"
	"maps"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/pki"
)

// pair is a config with two listeners and one that is off.
type pair struct{}

func (*pair) Defaults()             {}
func (*pair) Validate() error       { return nil }
func (*pair) TLSConfig() pki.Config { return pki.Config{} }
func (*pair) ListenAddrs() []config.ListenAddr {
	return []config.ListenAddr{{Key: "a", Addr: "127.0.0.1:0"}, {Key: "b", Addr: "127.0.0.1:0"}, {Key: "off"}}
}

type pairDeps struct{ a, b, off net.Listener }

type pairRole struct{ pairDeps }

func (pairRole) Run(context.Context) error { return nil }

// TestStartTakesEveryListener: start builds the role only when its deps took every listener it
// bound, by keys the config has; otherwise it names the key and closes every listener, taken
// or not, without building the role.
func TestStartTakesEveryListener(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		keys []string
		want string
	}{
		{keys: []string{"a", "b", "off"}},
		{keys: []string{"a", "b"}}, // an off listener need not be taken
		{keys: []string{"a"}, want: "start: b is bound but the role does not take it"},
		{keys: []string{"a", "b", "of"}, want: `start: "of" is not a listen key of the config`},
		{keys: []string{"a", "peer.b"}, want: `start: "peer.b" is not a listen key of the config` + "\n" + "start: b is bound but the role does not take it"},
	} {
		var bound map[string]net.Listener
		built := false
		r, err := start(t.Context(), &pair{}, func(lns *listeners) pairDeps {
			bound = maps.Clone(lns.bound)
			var d pairDeps
			for _, k := range tc.keys {
				ln := lns.take(k)
				switch k {
				case "a":
					d.a = ln
				case "b":
					d.b = ln
				default:
					require.Nil(t, ln, k)
				}
			}
			return d
		}, func(_ pair, d pairDeps) (pairRole, error) {
			built = true
			return pairRole{d}, nil
		})
		require.Len(t, bound, 2, "the off listener is not bound")
		if tc.want == "" {
			require.NoError(t, err, tc.keys)
			require.True(t, built)
			d := r.(pairRole)
			require.Same(t, bound["a"], d.a)
			require.Same(t, bound["b"], d.b)
			require.Nil(t, d.off)
			for _, ln := range bound {
				require.NoError(t, ln.Close(), "the role owns the listeners")
			}
			continue
		}
		require.EqualError(t, err, tc.want, tc.keys)
		require.Nil(t, r)
		require.False(t, built, "the role is not built")
		for k, ln := range bound {
			require.ErrorIs(t, ln.Close(), net.ErrClosed, "%v: %s was closed", tc.keys, k)
		}
	}
}

// TestStartReturnsNilOnFailure: a role that fails to build is a nil server.Role, not one
// holding a nil pointer.
func TestStartReturnsNilOnFailure(t *testing.T) {
	t.Parallel()
	r, err := start(t.Context(), &pair{}, func(lns *listeners) pairDeps {
		d := pairDeps{a: lns.take("a"), b: lns.take("b")}
		require.NoError(t, errors.Join(d.a.Close(), d.b.Close()))
		return d
	}, func(pair, pairDeps) (*pairRole, error) { return nil, errors.New("no") })
	require.EqualError(t, err, "no")
	require.Equal(t, server.Role(nil), r, "not a nil *pairRole, which require.Nil would take for nil")
}
