package agent

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
	"github.com/krakenctl/krakenctl/swarm/scheduler"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

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

// handleTorrents serves the scheduler's statistics as a JSON array of snapshot.TorrentStats,
// one entry per torrent (the scheduler's Stats is never nil, so an idle swarm is served as []),
// followed with ?history=1 by the torrents it retired, newest first.
func (s *Server) handleTorrents(w http.ResponseWriter, r *http.Request) {
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
	stats := s.sched.Stats()
	if history {
		stats = append(stats, s.sched.History()...)
	}
	if d != "" {
		stats = slices.DeleteFunc(stats, func(st scheduler.TorrentStats) bool { return st.Digest != d })
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(stats)
}

// handleHost serves the scheduler's snapshot.HostStats: identity, caps, connections, byte
// totals and the bans in force.
func (s *Server) handleHost(w http.ResponseWriter, _ *http.Request) {
	h := s.sched.HostStats()
	h.Role = "agent"
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(h)
}

// handleEvents streams scheduler events (snapshot.Event) until the client goes away or the agent stops:
// newline-delimited JSON, or server-sent events (event: KIND, data: JSON) when the request
// accepts text/event-stream. Events a slow client cannot take are dropped, not queued.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
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
	events, cancel := s.sched.Subscribe(eventBuffer)
	defer cancel()
	h := w.Header()
	if sse {
		h.Set("Content-Type", "text/event-stream")
	} else {
		h.Set("Content-Type", "application/x-ndjson")
	}
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
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
