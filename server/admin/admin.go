// Package admin serves the endpoints every role has for operators and orchestrators: /health
// (the process is up), /readyz (the role can do its job), /metrics (Prometheus) and
// /debug/pprof. They live on a role's admin listener (loopback by default), apart from its data
// API: metrics and profiles tell a stranger too much, and a profile costs CPU. The data API
// keeps /health and /readyz only, because other components probe them (the origins' ring, the
// proxy's health checks, clients waiting for a node).
package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/singleflight"
)

// ReadyFunc reports whether the role is ready to serve; a non-nil error explains why not.
type ReadyFunc func(ctx context.Context) error

// NewRegistry returns a Prometheus registry with the Go runtime and process collectors, the
// per-process registry that a role's packages register their metrics in.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler returns the admin listener's handler: /health, /readyz, /metrics (when g is not nil)
// and /debug/pprof. ready may be nil (always ready).
func Handler(g prometheus.Gatherer, ready ReadyFunc) http.Handler {
	mux := http.NewServeMux()
	MountHealth(mux, ready)
	if g != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// Guard lets through /health and /readyz, and every other request only when allow says so.
// allow returns the caller's name (empty when anonymous) and whether it may: a refused
// anonymous caller gets 401, a refused named one 403. With TLS, metrics and profiles are for
// holders of a cluster certificate (profiles for admins) while orchestrators still probe.
func Guard(h http.Handler, allow func(r *http.Request) (name string, ok bool)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" || r.URL.Path == "/readyz" {
			h.ServeHTTP(w, r)
			return
		}
		name, ok := allow(r)
		switch {
		case ok:
			h.ServeHTTP(w, r)
		case name == "":
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "a client certificate from the cluster CA is required"})
		default:
			writeJSON(w, http.StatusForbidden, map[string]string{"error": name + " may not read " + r.URL.Path})
		}
	})
}

// ReadyTTL is how long a readiness answer is reused. A role's ready function may ask other
// components (the proxy and the agent probe the build-index and the trackers); /readyz is
// reachable by whoever reaches the port, so a flood of it must not become a flood of them.
// It is well under an orchestrator's polling period, so a change is seen on its next poll.
const ReadyTTL = time.Second

// Shared returns ready answering from its last result for ttl, with one call in flight shared
// by every caller that waits for it. The call outlives a caller that gives up, since others may
// still wait for it, bounded by readyTimeout.
func Shared(ready ReadyFunc, ttl time.Duration) ReadyFunc {
	var (
		mu    sync.Mutex
		at    time.Time
		last  error
		calls singleflight.Group
	)
	return func(ctx context.Context) error {
		mu.Lock()
		if !at.IsZero() && time.Since(at) < ttl {
			err := last
			mu.Unlock()
			return err
		}
		mu.Unlock()
		ch := calls.DoChan("ready", func() (any, error) {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
			defer cancel()
			err := ready(cctx)
			mu.Lock()
			at, last = time.Now(), err
			mu.Unlock()
			return nil, err
		})
		select {
		case r := <-ch:
			return r.Err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readyTimeout bounds one call of a ready function.
const readyTimeout = 5 * time.Second

// MountHealth registers /health and /readyz on a data API's mux. ready may be nil (always
// ready); its answers are shared as Shared describes.
func MountHealth(mux *http.ServeMux, ready ReadyFunc) {
	if ready != nil {
		ready = Shared(ready, ReadyTTL)
	}
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			defer cancel()
			if err := ready(ctx); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
