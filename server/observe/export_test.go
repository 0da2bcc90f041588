package observe

// PendingEvents is how many events w holds for its next snapshot.
func PendingEvents(w *Watcher) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events)
}
