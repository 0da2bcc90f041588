// Package swarmapi serves the swarm API of agents and origins (server/api's SwarmTorrentsPath,
// SwarmHostPath and SwarmEventsPath) from their swarm scheduler: one set of handlers for both
// roles, so that `krakenctl top` reads the same documents, with the same filters, from each.
package swarmapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// Swarm is what the handlers read of a swarm scheduler (swarm/scheduler.Scheduler).
type Swarm interface {
	Stats() []snapshot.TorrentStats
	History() []snapshot.TorrentStats
	HostStats() snapshot.HostStats
	Subscribe(buf int) (<-chan snapshot.Event, func())
}

// Register adds the swarm API's routes to mux, served from sw for a node of role ("agent" or
// "origin"). A nil sw (an origin that does not seed) lists no torrents and answers 404 for
// the host and the event stream. Who may call them is the caller's guard's business.
func Register(mux *http.ServeMux, role string, sw Swarm) {
	h := handlers{role: role, sw: sw, streams: make(chan struct{}, MaxEventStreams)}
	mux.HandleFunc("GET "+api.SwarmTorrentsPath, h.torrents)
	mux.HandleFunc("GET "+api.SwarmHostPath, h.host)
	mux.HandleFunc("GET "+api.SwarmEventsPath, h.events)
}

type handlers struct {
	role string
	sw   Swarm
	// streams holds a token per open event stream.
	streams chan struct{}
}

// MaxEventStreams bounds the event streams one node serves at once. Each holds a buffer of
// eventBuffer events (hundreds of KiB): without a bound, a flood of idle subscribers, on an
// origin whose API needs no certificate, would be a flood of memory. A watcher needs one.
const MaxEventStreams = 64

// eventBuffer is how many events a slow /swarm/events client may fall behind before events
// are dropped for it (the scheduler never waits for a subscriber).
const eventBuffer = 4096

// digestFilter reads the optional ?digest= of the swarm API; "" means every blob.
func digestFilter(r *http.Request) (digest.Digest, error) {
	v := r.URL.Query().Get("digest")
	if v == "" {
		return "", nil
	}
	return registry.ParseDigest(v)
}

// kindFilter reads the optional ?kind= of the event stream (repeated or comma-separated
// event kinds); nil means every kind. An unknown kind is refused, so a typo is not an empty
// stream forever.
func kindFilter(r *http.Request) (map[snapshot.EventKind]bool, error) {
	vs := r.URL.Query()[api.SwarmKindParam]
	if len(vs) == 0 {
		return nil, nil
	}
	out := map[snapshot.EventKind]bool{}
	for _, v := range vs {
		for k := range strings.SplitSeq(v, ",") {
			kind := snapshot.EventKind(strings.TrimSpace(k))
			if !slices.Contains(snapshot.EventKinds, kind) {
				return nil, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeUnsupported,
					Message: fmt.Sprintf("unknown event kind %q", k)}
			}
			out[kind] = true
		}
	}
	return out, nil
}

// historyWanted reads the optional ?history= of SwarmTorrentsPath (api.SwarmHistoryParam): a
// boolean, "1" or "true" to add the retired torrents.
func historyWanted(r *http.Request) (bool, error) {
	v := r.URL.Query().Get(api.SwarmHistoryParam)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported, "%s=%q: want 1 or 0", api.SwarmHistoryParam, v)
	}
	return b, nil
}

// torrents serves the scheduler's statistics as a JSON array of snapshot.TorrentStats,
// one entry per torrent (the scheduler's Stats is never nil, so an idle swarm is served as []),
// followed with ?history=1 by the torrents it retired, newest first.
func (h handlers) torrents(w http.ResponseWriter, r *http.Request) {
	d, err := digestFilter(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	history, err := historyWanted(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	stats := []snapshot.TorrentStats{}
	if h.sw != nil {
		stats = h.sw.Stats()
		if history {
			stats = append(stats, h.sw.History()...)
		}
	}
	if d != "" {
		stats = slices.DeleteFunc(stats, func(st snapshot.TorrentStats) bool { return st.Digest != d })
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(stats)
}

// host serves the scheduler's snapshot.HostStats: identity, caps, connections, byte
// totals and the bans in force.
func (h handlers) host(w http.ResponseWriter, _ *http.Request) {
	if h.sw == nil {
		http.Error(w, "this "+h.role+" does not seed: no peer listener configured", http.StatusNotFound)
		return
	}
	st := h.sw.HostStats()
	st.Role = h.role
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(st)
}

// events streams scheduler events (snapshot.Event) until the client goes away or the node stops:
// newline-delimited JSON, or server-sent events (event: KIND, data: JSON) when the request
// accepts text/event-stream. Events a slow client cannot take are dropped, not queued.
func (h handlers) events(w http.ResponseWriter, r *http.Request) {
	if h.sw == nil {
		http.Error(w, "this "+h.role+" does not seed: no peer listener configured", http.StatusNotFound)
		return
	}
	select {
	case h.streams <- struct{}{}:
		defer func() { <-h.streams }()
	default:
		w.Header().Set("Retry-After", "10")
		http.Error(w, fmt.Sprintf("too many event streams open (%d)", MaxEventStreams), http.StatusServiceUnavailable)
		return
	}
	d, err := digestFilter(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	kinds, err := kindFilter(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	events, cancel := h.sw.Subscribe(eventBuffer)
	defer cancel()
	hdr := w.Header()
	if sse {
		hdr.Set("Content-Type", "text/event-stream")
	} else {
		hdr.Set("Content-Type", "application/x-ndjson")
	}
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	enc := json.NewEncoder(w)
	pending := false // written and not flushed
	for {
		select {
		case <-r.Context().Done():
			return
		case e, ok := <-events:
			if !ok {
				return // the scheduler stopped
			}
			if d != "" && e.Digest != d || kinds != nil && !kinds[e.Kind] {
				// Skipped, but it may end a burst whose last event was written: flush that,
				// or it waits for the next event that passes the filter, perhaps forever.
				if pending && len(events) == 0 {
					if err := rc.Flush(); err != nil {
						return
					}
					pending = false
				}
				continue
			}
			if sse {
				if _, err := fmt.Fprintf(w, "event: %s\ndata: ", e.Kind); err != nil {
					return
				}
			}
			if err := enc.Encode(e); err != nil {
				return
			}
			if sse {
				if _, err := w.Write([]byte("\n")); err != nil {
					return
				}
			}
			// Flush once per burst rather than per event.
			pending = true
			if len(events) == 0 {
				if err := rc.Flush(); err != nil {
					return
				}
				pending = false
			}
		}
	}
}
