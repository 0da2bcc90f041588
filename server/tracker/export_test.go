package tracker

// Sweep drops expired peers now, as the periodic sweep does, and returns how many it dropped.
func (s *Server) Sweep() int { return s.peers.sweep(s.now()) }

// MetainfoWaiting returns how many requests wait for a metainfo fetch.
func (s *Server) MetainfoWaiting() int64 { return s.waiting.Load() }
