// Package origin implements the origin role: origins hold every blob in a content-addressed
// store, own slices of the digest space on a rendezvous-hash ring with R replicas, and seed the
// swarm.
//
// Writes: an upload (monolithic or chunked) is verified against its digest before it is
// committed; the committing origin then copies the blob to the other owners (synchronously,
// queued for retry when an owner is unreachable) and writes it back to the namespace's storage
// backend through a durable queue (bbolt) that survives restarts. Replicas schedule a delayed
// write-back of their own, which finds the blob stored and finishes, unless the first origin
// was lost.
//
// Reads: a blob missing from the store is pulled through, first from the other ring members
// that hold it and then from the backend; concurrent misses for one blob share one fetch.
//
// Repair: whenever a member changes health, and every repair_interval, an origin checks that
// each blob it holds is on all of its current owners, and queues copies to those that lack it.
// That moves a dead member's share to the next-ranked member and fills a member that returns.
package origin
