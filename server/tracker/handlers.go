package tracker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/announce"
)

// maxAnnounceBody bounds an announce request body.
const maxAnnounceBody = 16 << 10

func (s *Server) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+announce.AnnouncePath, s.handleAnnounce)
	mux.HandleFunc("GET /namespace/{ns}/blobs/{digest}/metainfo", s.handleMetainfo)
	mux.HandleFunc("GET "+api.SwarmsPath, s.handleSwarms)
	mux.HandleFunc("GET "+api.SwarmsPath+"/{digest}", s.handleSwarm)
}

func (s *Server) handleAnnounce(w http.ResponseWriter, r *http.Request) {
	req, err := decodeAnnounce(w, r)
	if err != nil {
		reason := reasonMalformed
		if _, perr := announce.ParsePeerID(req.PeerID); perr == nil && announce.CheckNamespace(req.Namespace) == nil && announce.CheckDigest(req.Digest) == nil {
			if _, aerr := announce.ParseAddr(req.Addr); aerr != nil || announce.CheckAPI(req.API) != nil {
				reason = reasonAddress // a name, or an address no host has
			}
		}
		s.refuse(w, r, reason, req, "", err)
		return
	}
	who, ap, reason, err := s.addrs.checkAnnounce(r.TLS, r.RemoteAddr, req)
	if err != nil {
		s.refuse(w, r, reason, req, who.holder, err)
		return
	}
	req.Addr = ap.String() // one spelling per address, so that byAddr finds every holder
	apiAddr, err := s.addrs.checkAPI(r.TLS, who, req.API)
	if err != nil {
		s.metrics.apiDrops.Inc()
		s.refusals.droppedAPI(r.RemoteAddr, req, err)
	}
	req.API = apiAddr
	origins := s.origins.owners(req.Digest, s.cfg.Replicas)
	if len(origins) < s.cfg.Replicas {
		s.origins.wanted() // an owner is not known to answer: ask the unreachable ones now
	}
	peers, err := s.peers.announce(req, who, s.now(), origins)
	if err != nil {
		s.refuse(w, r, reasonConflict, req, who.holder, err)
		return
	}
	s.metrics.announces.WithLabelValues(resultOK).Inc()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(announce.Response{Peers: peers, IntervalSeconds: s.cfg.AnnounceInterval.Seconds()})
}

// refuse answers an announce with err, counts it under reason and logs it (sampled).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, reason string, req announce.Request, holder string, err error) {
	s.metrics.announces.WithLabelValues(resultInvalid).Inc()
	s.metrics.rejected.WithLabelValues(reason).Inc()
	s.refusals.refused(reason, r.RemoteAddr, req, holder, err)
	registry.WriteError(w, r, err)
}

// decodeAnnounce reads and validates an announce; errors are 400s (413 for a body too large)
// that say what is wrong.
func decodeAnnounce(w http.ResponseWriter, r *http.Request) (announce.Request, error) {
	var req announce.Request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAnnounceBody))
	if err := dec.Decode(&req); err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return req, err
		}
		return req, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeBodyInvalid,
			Message: fmt.Sprintf("decode announce: %v", err), Err: err}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, errcode.Errorf(http.StatusBadRequest, errcode.CodeBodyInvalid, "decode announce: data after the JSON document")
	}
	if err := req.Validate(); err != nil {
		code := errcode.CodeBodyInvalid
		switch {
		case announce.CheckNamespace(req.Namespace) != nil:
			code = errcode.CodeNameInvalid
		case announce.CheckDigest(req.Digest) != nil:
			code = errcode.CodeDigestInvalid
		}
		return req, &errcode.Error{Status: http.StatusBadRequest, Code: code, Message: err.Error(), Err: err}
	}
	return req, nil
}

func (s *Server) handleMetainfo(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	if err := backend.CheckNamespace(ns); err != nil {
		s.metrics.metainfo.WithLabelValues(resultError).Inc()
		registry.WriteError(w, r, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeNameInvalid, Message: err.Error(), Err: err})
		return
	}
	d, err := registry.ParseDigest(r.PathValue("digest"))
	if err != nil {
		s.metrics.metainfo.WithLabelValues(resultError).Inc()
		registry.WriteError(w, r, err)
		return
	}
	data, hit, err := s.metainfo(r.Context(), ns, d)
	if err != nil {
		s.metrics.metainfo.WithLabelValues(resultError).Inc()
		registry.WriteError(w, r, err)
		return
	}
	if hit {
		s.metrics.metainfo.WithLabelValues(resultHit).Inc()
	} else {
		s.metrics.metainfo.WithLabelValues(resultMiss).Inc()
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
}
