package ring_test

import (
	"testing"
	"testing/synctest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/ring/ringtest"
)

func TestConfigAcceptsDNSEntries(t *testing.T) {
	t.Parallel()
	cfg := ring.Config{Members: []string{"dns:///origin.kraken.svc:8080", "10.0.0.1:8080"}}
	cfg.Defaults()
	require.NoError(t, cfg.Validate())

	cfg.Members = []string{"dns://origin:8080", "dns:///origin"}
	err := cfg.Validate()
	require.ErrorIs(t, err, ring.ErrInvalidConfig)
	require.ErrorContains(t, err, "ring.members[0]")
	require.ErrorContains(t, err, "ring.members[1]")

	require.Empty(t, ring.CheckMembers("origins", []string{"dns:///origin:8080"}))
	errs := ring.CheckMembers("origins", []string{"dns:///origin:x"})
	require.Len(t, errs, 1)
	require.ErrorContains(t, errs[0], "origins[0]")

	// A ring itself holds addresses: DNS entries are resolved before it is built.
	_, err = ring.New(ring.Config{Members: []string{"dns:///origin:8080"}}, ring.Deps{})
	require.ErrorIs(t, err, ring.ErrInvalidConfig)
}

func TestSetMembers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		chk := &ringtest.Checker{}
		r, err := ring.New(ring.Config{Members: []string{"o1:1", "o2:1"}, Replicas: 2, FailThreshold: 1, PassThreshold: 1},
			ring.Deps{Checker: chk, Registerer: reg})
		require.NoError(t, err)
		chk.SetDown("o2:1")
		checkRounds(t, r, 1)
		require.False(t, status(t, r, "o2:1").Healthy)
		ch, cancel := r.Subscribe()
		defer cancel()

		// Grow 2 → 3: the new member starts healthy, the old keep their health.
		require.NoError(t, r.SetMembers([]string{"o3:1", "o2:1", "o1:1", "o3:1"}))
		require.Equal(t, []string{"o1:1", "o2:1", "o3:1"}, addrs(r.Members()))
		require.False(t, status(t, r, "o2:1").Healthy, "health survives a membership change")
		require.True(t, status(t, r, "o3:1").Healthy)
		require.Equal(t, ring.Event{Member: "o3:1", Healthy: true, Joined: true}, recv(t, ch))
		require.True(t, r.IsMember("o3:1"))
		require.Equal(t, 2, r.Replicas())
		require.InDelta(t, 1.0, metricValue(t, reg, "krakenctl_ring_member_healthy", map[string]string{"member": "o3:1"}), 0)

		// Placement is that of a ring built over the new members.
		fresh, err := ring.New(ring.Config{Members: []string{"o1:1", "o2:1", "o3:1"}, Replicas: 2}, ring.Deps{})
		require.NoError(t, err)
		for _, key := range []string{"sha256:a", "sha256:b", "sha256:c", "sha256:d"} {
			require.Equal(t, fresh.Locations(key), r.Locations(key), key)
			require.NotContains(t, r.Owners(key), "o2:1", "a down member owns nothing")
		}

		// Shrink: the departed member's series go, subscribers hear Left.
		require.NoError(t, r.SetMembers([]string{"o1:1", "o3:1"}))
		require.Equal(t, ring.Event{Member: "o2:1", Left: true}, recv(t, ch))
		require.False(t, r.IsMember("o2:1"))
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					require.NotEqual(t, "o2:1", lp.GetValue(), "series of a departed member remain in %s", mf.GetName())
				}
			}
		}
		before := chk.Checks("o2:1")
		checkRounds(t, r, 1)
		require.Equal(t, before, chk.Checks("o2:1"), "a departed member is no longer checked")
		require.Positive(t, chk.Checks("o3:1"))

		// The same set is no change and no event.
		require.NoError(t, r.SetMembers([]string{"o3:1", "o1:1"}))
		requireNoEvent(t, ch)

		// Bad sets change nothing.
		require.ErrorIs(t, r.SetMembers(nil), ring.ErrInvalidConfig)
		require.ErrorIs(t, r.SetMembers([]string{"o1:1", "dns:///x:1"}), ring.ErrInvalidConfig)
		require.Equal(t, []string{"o1:1", "o3:1"}, addrs(r.Members()))
	})
}
