package scheduler

// SetOriginDepth lets benchmarks try other origin pipeline depths.
func SetOriginDepth(n int) { originDepth = n }
