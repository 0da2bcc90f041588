package role_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/role"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

func requireClosed(t *testing.T, ln net.Listener) {
	t.Helper()
	_, err := ln.Accept()
	require.ErrorIs(t, err, net.ErrClosed)
}

// TestFailClosesEverything: a New that fails halfway leaves nothing open, listeners included,
// and closes resources in reverse order of opening.
func TestFailClosesEverything(t *testing.T) {
	t.Parallel()
	a, b := listen(t), listen(t)
	base := role.New("thing", role.Deps{Listener: a}, nil, b)
	var order []string
	base.OnClose("first", func() error { order = append(order, "first"); return nil })
	base.OnClose("second", func() error { order = append(order, "second"); return errors.New("logged, not returned") })
	err := base.Fail(errors.New("boom"))
	require.EqualError(t, err, "new thing: boom")
	requireClosed(t, a)
	requireClosed(t, b)
	require.Equal(t, []string{"second", "first"}, order)
	require.ErrorIs(t, base.Run(t.Context()), role.ErrStarted, "a failed role cannot run")
	require.NoError(t, base.Close())
	require.Len(t, order, 2, "closed once")
}

// TestRunServesAndStops: Run serves HTTP on its listeners and runs its loops until the context
// ends, then closes what was registered, once; a second Run is refused; Close after Run does
// nothing.
func TestRunServesAndStops(t *testing.T) {
	t.Parallel()
	api, adm := listen(t), listen(t)
	base := role.New("thing", role.Deps{Listener: api, AdminListener: adm})
	base.Serve(api, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("hi")) }), httpserve.ServerOptions{})
	base.ServeAdmin(adm, nil, func(context.Context) error { return errors.New("warming up") })
	loopRan := make(chan struct{})
	base.Go(func(ctx context.Context) error { close(loopRan); <-ctx.Done(); return nil })
	closed := 0
	base.OnClose("res", func() error { closed++; return nil })
	hc := httpserve.NewClient(httpserve.ClientOptions{})
	defer hc.CloseIdleConnections()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- base.Run(ctx) }()
	<-loopRan
	get := func(url string) int {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		require.NoError(t, err)
		resp, err := hc.Do(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, get("http://"+api.Addr().String()+"/"))
	require.Equal(t, http.StatusServiceUnavailable, get("http://"+adm.Addr().String()+"/readyz"))
	require.Equal(t, http.StatusOK, get("http://"+adm.Addr().String()+"/health"))
	require.Equal(t, http.StatusOK, get("http://"+adm.Addr().String()+"/debug/pprof/"))
	require.Equal(t, http.StatusNotFound, get("http://"+adm.Addr().String()+"/metrics"), "no gatherer, no metrics")
	require.ErrorIs(t, base.Run(ctx), role.ErrStarted)
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, 1, closed)
	requireClosed(t, api)
	requireClosed(t, adm)
	require.NoError(t, base.Close())
	require.Equal(t, 1, closed)
}

// TestLoopErrorStopsRole: a failing loop stops the servers and the other loops, and Run
// returns its error.
func TestLoopErrorStopsRole(t *testing.T) {
	t.Parallel()
	api := listen(t)
	base := role.New("thing", role.Deps{Listener: api})
	base.Serve(api, http.NotFoundHandler(), httpserve.ServerOptions{})
	base.Go(func(ctx context.Context) error { <-ctx.Done(); return nil })
	base.Go(func(context.Context) error { return errors.New("disk gone") })
	closed := false
	base.OnClose("res", func() error { closed = true; return nil })
	require.EqualError(t, base.Run(t.Context()), "disk gone")
	require.True(t, closed)
	requireClosed(t, api)
}

// TestCloseNeverRun releases the listeners and resources of a role that was never run, and a
// later Run is refused.
func TestCloseNeverRun(t *testing.T) {
	t.Parallel()
	api := listen(t)
	base := role.New("thing", role.Deps{Listener: api})
	closed := 0
	base.OnClose("res", func() error { closed++; return nil })
	require.NoError(t, base.Close())
	requireClosed(t, api)
	require.Equal(t, 1, closed)
	require.ErrorIs(t, base.Run(t.Context()), role.ErrStarted)
	require.NoError(t, base.Close())
	require.Equal(t, 1, closed)
}

// TestClientOwnership: a client passed in is the caller's; one built here is the role's.
func TestClientOwnership(t *testing.T) {
	t.Parallel()
	base := role.New("thing", role.Deps{})
	mine := &http.Client{}
	require.Same(t, mine, base.Client(mine, httpserve.ClientOptions{}))
	built := base.Client(nil, httpserve.ClientOptions{})
	require.NotNil(t, built)
	require.NotSame(t, mine, built)
	require.NoError(t, base.Close())
}

// TestLoopsOutliveDrainingServers: when the role stops, a request in flight finishes while the
// loops it may depend on still run; the loops stop only after the servers have drained.
func TestLoopsOutliveDrainingServers(t *testing.T) {
	t.Parallel()
	api := listen(t)
	base := role.New("thing", role.Deps{Listener: api})
	loopStarted, loopDone := make(chan struct{}), make(chan struct{})
	base.Go(func(ctx context.Context) error {
		close(loopStarted)
		<-ctx.Done()
		close(loopDone)
		return nil
	})
	inHandler, release := make(chan struct{}), make(chan struct{})
	loopAliveInHandler := make(chan bool, 1)
	base.Serve(api, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(inHandler)
		<-release
		select {
		case <-loopDone:
			loopAliveInHandler <- false
		default:
			loopAliveInHandler <- true
		}
		w.WriteHeader(http.StatusNoContent)
	}), httpserve.ServerOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- base.Run(ctx) }()
	<-loopStarted
	hc := httpserve.NewClient(httpserve.ClientOptions{})
	defer hc.CloseIdleConnections()
	status := make(chan int, 1)
	go func() {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+api.Addr().String()+"/", nil)
		if err != nil {
			status <- 0
			return
		}
		resp, err := hc.Do(req)
		if err != nil {
			status <- 0
			return
		}
		_ = resp.Body.Close()
		status <- resp.StatusCode
	}()
	<-inHandler
	cancel() // the role is told to stop while the request is in flight
	close(release)
	require.True(t, <-loopAliveInHandler, "the loop still ran while the request finished")
	require.Equal(t, http.StatusNoContent, <-status)
	require.NoError(t, <-done)
	select {
	case <-loopDone:
	default:
		t.Fatal("the loop was not stopped")
	}
}

// TestAdminFailureIsNotTheRoles: an admin listener that fails is logged; the role keeps
// serving and stops cleanly.
func TestAdminFailureIsNotTheRoles(t *testing.T) {
	t.Parallel()
	api, adm := listen(t), listen(t)
	base := role.New("thing", role.Deps{Listener: api, AdminListener: adm})
	base.Serve(api, http.NotFoundHandler(), httpserve.ServerOptions{})
	base.ServeAdmin(adm, nil, nil)
	require.NoError(t, adm.Close()) // the admin server's Serve fails at once
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- base.Run(ctx) }()
	hc := httpserve.NewClient(httpserve.ClientOptions{})
	defer hc.CloseIdleConnections()
	require.Eventually(t, func() bool {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+api.Addr().String()+"/", nil)
		if err != nil {
			return false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusNotFound
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}

// cfg is a role config for Open: Validate fails when bad is set, after Defaults ran.
type cfg struct{ defaulted, bad bool }

func (c *cfg) Defaults() { c.defaulted = true }
func (c *cfg) Validate() error {
	if c.bad {
		return errors.New("port: out of range")
	}
	return nil
}

// TestOpen: Open applies the config's defaults, validates it and wants an API listener; a
// refusal closes every listener it was given.
func TestOpen(t *testing.T) {
	t.Parallel()
	api, adm, peer := listen(t), listen(t), listen(t)
	_, err := role.Open("thing", &cfg{bad: true}, role.Deps{Listener: api, AdminListener: adm}, peer)
	require.EqualError(t, err, "new thing: port: out of range")
	requireClosed(t, api)
	requireClosed(t, adm)
	requireClosed(t, peer)

	adm = listen(t)
	_, err = role.Open("thing", &cfg{}, role.Deps{AdminListener: adm})
	require.EqualError(t, err, "new thing: no listener")
	requireClosed(t, adm)

	c := &cfg{}
	b, err := role.Open("thing", c, role.Deps{Listener: listen(t)})
	require.NoError(t, err)
	require.True(t, c.defaulted)
	require.NoError(t, b.Close())
}
