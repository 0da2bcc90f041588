package observe

// PendingEvents is how many events w holds for its next snapshot.
func PendingEvents(w *Watcher) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events)
}

// LastPending returns how many events w holds and the Piece of the newest (-1 for none).
func LastPending(w *Watcher) (int, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.events) == 0 {
		return 0, -1
	}
	return len(w.events), w.events[len(w.events)-1].Piece
}
