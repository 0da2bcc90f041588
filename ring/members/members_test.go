package members_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/ring/members"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeResolver answers from a map that tests change between refreshes; a name mapped to an
// error fails.
type fakeResolver struct {
	mu    sync.Mutex
	addrs map[string][]string
	errs  map[string]error
	calls int
}

func (f *fakeResolver) set(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[name] = addrs
	delete(f.errs, name)
}

func (f *fakeResolver) fail(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[name] = err
}

func (f *fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if network != "ip" {
		return nil, errors.New("unexpected network " + network)
	}
	if err := f.errs[host]; err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range f.addrs[host] {
		out = append(out, netip.MustParseAddr(a))
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

func newFake() *fakeResolver {
	return &fakeResolver{addrs: map[string][]string{}, errs: map[string]error{}}
}

func TestParseDNS(t *testing.T) {
	t.Parallel()
	name, port, err := members.ParseDNS("dns:///origin.kraken.svc.cluster.local:8080")
	require.NoError(t, err)
	require.Equal(t, "origin.kraken.svc.cluster.local", name)
	require.Equal(t, uint16(8080), port)

	for _, bad := range []string{
		"dns://origin:8080",                        // authority form
		"dns:origin:8080",                          // opaque form
		"dns:///origin",                            // no port
		"dns:///origin:0",                          // port out of range
		"dns:///origin:65536",                      // port out of range
		"dns:///origin:080",                        // leading zero
		"dns:///origin:http",                       // named port
		"dns:///:8080",                             // empty name
		"dns:///10.0.0.1:8080",                     // an IP is a static entry
		"dns:///origin:8080/path",                  // path
		"dns:///origin:8080?x=1",                   // query
		"dns:///user@origin:8080",                  // user
		"dns:///[::1]:8080",                        // bracketed IPv6
		"dns:///-origin:8080",                      // label starts with '-'
		"dns:///a..b:8080",                         // empty label
		"dns:///or igin:8080",                      // space
		"dns:///" + strings.Repeat("a", 64) + ":1", // label too long
	} {
		_, _, err := members.ParseDNS(bad)
		require.ErrorIs(t, err, members.ErrInvalidEntry, bad)
		require.Contains(t, err.Error(), bad, "the error quotes the entry")
	}
}

func TestCheckNamesTheKey(t *testing.T) {
	t.Parallel()
	errs := members.Check("ring.members", []string{"10.0.0.1:8080", "dns:///ok:1", "dns://bad:1"})
	require.Len(t, errs, 1)
	require.Contains(t, errs[0].Error(), "ring.members[2]")

	_, err := members.New(t.Context(), "trackers", []string{"dns:///x"}, members.Deps{Resolver: newFake()})
	require.ErrorContains(t, err, "trackers[0]")
}

func TestListFollowsDNS(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.set("origin.test", "10.0.0.2", "10.0.0.1", "10.0.0.2")
	reg := prometheus.NewPedanticRegistry()
	l, err := members.New(t.Context(), "ring.members", []string{"dns:///origin.test:8080", "static:9000"},
		members.Deps{Resolver: f, Registerer: reg})
	require.NoError(t, err)
	require.True(t, l.Dynamic())
	require.Equal(t, []string{"10.0.0.1:8080", "10.0.0.2:8080", "static:9000"}, l.Addrs(), "sorted, de-duplicated, statics kept")

	changed, _ := l.Refresh(t.Context())
	require.False(t, changed, "same answer, no change")

	f.set("origin.test", "10.0.0.1", "10.0.0.2", "fd00::3")
	changed, addrs := l.Refresh(t.Context())
	require.True(t, changed)
	require.Equal(t, []string{"10.0.0.1:8080", "10.0.0.2:8080", "[fd00::3]:8080", "static:9000"}, addrs)

	f.set("origin.test", "10.0.0.2")
	changed, addrs = l.Refresh(t.Context())
	require.True(t, changed, "a shrinking answer is a change too")
	require.Equal(t, []string{"10.0.0.2:8080", "static:9000"}, addrs)

	// A failed lookup keeps the last good answer, and is counted.
	f.fail("origin.test", &net.DNSError{Err: "server misbehaving", Name: "origin.test", IsTemporary: true})
	changed, addrs = l.Refresh(t.Context())
	require.False(t, changed)
	require.Equal(t, []string{"10.0.0.2:8080", "static:9000"}, addrs)
	require.Equal(t, []string{"10.0.0.2:8080", "static:9000"}, l.Addrs())
	require.InDelta(t, 1, counter(t, reg, "failure"), 0)
	require.InDelta(t, 4, counter(t, reg, "success"), 0)

	// A name that disappears (NXDOMAIN) is a failure too: a Service without ready pods must
	// not empty the ring.
	f.set("origin.test")
	changed, _ = l.Refresh(t.Context())
	require.False(t, changed)
	require.Equal(t, []string{"10.0.0.2:8080", "static:9000"}, l.Addrs())
}

// counter returns the lookups counter of list ring.members with result.
func counter(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "krakenctl_members_lookups_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "result" && lp.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no lookups_total{result=%q}", result)
	return 0
}

func TestListSharesMetricsAcrossLists(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.set("a.test", "10.0.0.1")
	reg := prometheus.NewPedanticRegistry()
	_, err := members.New(t.Context(), "trackers", []string{"dns:///a.test:1"}, members.Deps{Resolver: f, Registerer: reg})
	require.NoError(t, err)
	_, err = members.New(t.Context(), "build_index", []string{"dns:///a.test:2"}, members.Deps{Resolver: f, Registerer: reg})
	require.NoError(t, err, "two lists of one role register into one registry")
	mfs, err := reg.Gather()
	require.NoError(t, err)
	n := 0
	for _, mf := range mfs {
		if mf.GetName() == "krakenctl_members_addresses" {
			n = len(mf.GetMetric())
		}
	}
	require.Equal(t, 2, n, "one series per list")
}

func TestListStartsOnlyWithAnAddress(t *testing.T) {
	t.Parallel()
	f := newFake()
	_, err := members.New(t.Context(), "origins", []string{"dns:///none.test:8080"}, members.Deps{Resolver: f})
	require.ErrorContains(t, err, "resolve origins: no address")

	// One entry failing while another answers starts, and the failed one joins later.
	f.set("b.test", "10.0.0.9")
	l, err := members.New(t.Context(), "origins", []string{"dns:///none.test:8080", "dns:///b.test:8080"}, members.Deps{Resolver: f})
	require.NoError(t, err)
	require.Equal(t, []string{"10.0.0.9:8080"}, l.Addrs())
	f.set("none.test", "10.0.0.8")
	changed, addrs := l.Refresh(t.Context())
	require.True(t, changed)
	require.Equal(t, []string{"10.0.0.8:8080", "10.0.0.9:8080"}, addrs)
}

func TestListBounded(t *testing.T) {
	t.Parallel()
	f := newFake()
	var many []string
	for i := range members.MaxAddrs + 50 {
		many = append(many, netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String())
	}
	f.set("big.test", many...)
	l, err := members.New(t.Context(), "origins", []string{"dns:///big.test:1"}, members.Deps{Resolver: f})
	require.NoError(t, err)
	require.Len(t, l.Addrs(), members.MaxAddrs)
}

func TestRunStaticReturnsAtOnce(t *testing.T) {
	t.Parallel()
	l, err := members.New(t.Context(), "origins", []string{"a:1", "b:2"}, members.Deps{})
	require.NoError(t, err)
	require.False(t, l.Dynamic())
	require.NoError(t, l.Run(t.Context(), func([]string) { t.Error("a static list never changes") }))
	require.Equal(t, []string{"a:1", "b:2"}, l.Addrs())
}

func TestRunReportsChanges(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.set("o.test", "10.0.0.1")
	l, err := members.New(t.Context(), "origins", []string{"dns:///o.test:1"},
		members.Deps{Resolver: f, Interval: 1}) // every tick: the test waits on the change, not on time
	require.NoError(t, err)
	f.set("o.test", "10.0.0.1", "10.0.0.2")
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan []string, 1)
	done := make(chan error, 1)
	go func() {
		done <- l.Run(ctx, func(a []string) {
			select {
			case got <- a:
			default:
			}
		})
	}()
	require.Equal(t, []string{"10.0.0.1:1", "10.0.0.2:1"}, <-got)
	cancel()
	require.NoError(t, <-done)
}

// TestRunFillsAnEmptyListSoon: a list allowed to start empty asks again long before its
// interval (an hour here), so a role started before its peers' pods are published finds them.
func TestRunFillsAnEmptyListSoon(t *testing.T) {
	t.Parallel()
	f := newFake()
	l, err := members.New(t.Context(), "trackers", []string{"dns:///t.test:1"},
		members.Deps{Resolver: f, Interval: time.Hour, AllowEmpty: true})
	require.NoError(t, err)
	require.Empty(t, l.Addrs())
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan []string, 1)
	done := make(chan error, 1)
	go func() {
		done <- l.Run(ctx, func(a []string) {
			select {
			case got <- a:
			default:
			}
		})
	}()
	f.set("t.test", "10.0.0.3")
	select {
	case a := <-got:
		require.Equal(t, []string{"10.0.0.3:1"}, a)
	case <-time.After(time.Minute):
		t.Fatal("an empty list was not resolved again before its hour-long interval")
	}
	cancel()
	require.NoError(t, <-done)
}

// TestRunFollowsPodsAsTheyArrive: a role that started with part of a Service's pods (the others
// not yet published) sees each of the others well before its interval (an hour here).
func TestRunFollowsPodsAsTheyArrive(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.set("o.test", "10.0.0.1")
	l, err := members.New(t.Context(), "origins", []string{"dns:///o.test:1"},
		members.Deps{Resolver: f, Interval: time.Hour})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan []string, 4)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, func(a []string) { got <- a }) }()
	for _, answer := range [][]string{{"10.0.0.1", "10.0.0.2"}, {"10.0.0.1", "10.0.0.2", "10.0.0.3"}} {
		f.set("o.test", answer...)
		select {
		case a := <-got:
			require.Len(t, a, len(answer))
		case <-time.After(time.Minute):
			t.Fatalf("the answer %v was not seen before the hour-long interval", answer)
		}
	}
	cancel()
	require.NoError(t, <-done)
}

// Addresses no member can be at are left out of an answer: link-local (the metadata service),
// multicast, unspecified; an answer of nothing else is no answer.
func TestListDropsAddressesNoMemberIsAt(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.set("origin.test", "10.0.0.1", "169.254.169.254", "224.0.0.1", "0.0.0.0", "fe80::1", "ff02::1", "127.0.0.9")
	l, err := members.New(t.Context(), "ring.members", []string{"dns:///origin.test:8080"}, members.Deps{Resolver: f})
	require.NoError(t, err)
	require.Equal(t, []string{"10.0.0.1:8080", "127.0.0.9:8080"}, l.Addrs())

	f.set("origin.test", "169.254.169.254")
	changed, addrs := l.Refresh(t.Context())
	require.False(t, changed, "nothing usable: the last good answer stays")
	require.Equal(t, []string{"10.0.0.1:8080", "127.0.0.9:8080"}, addrs)
}
