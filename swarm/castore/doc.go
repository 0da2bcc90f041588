// Package castore is the local content-addressed blob store of origins and agents: blobs named
// by their digest, written once, verified before anyone can see them, evicted least recently
// used first when a capacity is set, and cleaned by a policy (Cleanup: idle time, age, high and
// low watermarks) or by hand.
//
// # Guarantees
//
//   - A reader never sees a partial or unverified blob. Every write goes to a temporary file
//     (or a partial download) in the store's directory, is hashed, is compared with the
//     expected digest, is fsynced, and only then is renamed into place (and the directory
//     fsynced). A digest mismatch, a full store, a cancelled context or a crash changes nothing
//     already stored.
//   - Space is reserved before it is written (reserve.go): an ingest reserves its declared size
//     (IngestOptions.Size) up front, or grows its reservation chunk by chunk; an upload session
//     reserves its bytes as they arrive; OpenPartial reserves the blob's size. Reserved bytes
//     count against the capacity with the committed blobs, so eviction makes room when the
//     reservation is taken, before anything is written, and a write that cannot fit fails with
//     ErrFull at once. A commit converts the reservation; an abort releases it.
//   - Eviction never removes a blob that is open (Store.Open until Blob.Close) or held
//     (Store.Hold until its release function is called), and nothing is ever evicted by Open:
//     reservations evict, and Trim, which a caller runs at startup once it has held what it
//     must keep, trims a store found over its capacity before it serves.
//   - Cleanup (cleanup.go) removes blobs idle for a TTI, older than a TTL (from Info.Created:
//     the commit, or after a restart the file's birth time, else its mtime) and, above a high
//     watermark of the capacity (or of the file system without one), least recently used blobs
//     down to a low one; or what a manual eviction names. It is decided under the store's
//     lock, never removes a blob open, held or claimed by the caller's Keep, and its dry run
//     reports what a real run at that moment removes.
//   - A full disk is a full store: ENOSPC (or EDQUOT) at any step of a write (temporary file,
//     session data, metadata, fsync, rename) returns an error wrapping both ErrFull and the
//     cause, after an error log line, and counts in krakenctl_castore_full_total{reason="disk"}
//     (reason "capacity" when eviction could not make room). The write leaves nothing behind.
//   - A commit can be atomic with the caller's records (IngestOptions.Prepare,
//     CommitOptions.Prepare): once the bytes are verified and fsynced, Prepare runs (the origin
//     generates metainfo and queues the blob's write-back durably there), the sidecar metadata
//     it staged is written, fsynced and moved into meta/, and only then is the blob renamed into
//     blobs/. A crash at any step leaves the blob absent (and Open removes metadata without a
//     blob) or visible with its metadata; never visible without.
//     A binary built with the krakenctl_faults tag kills itself (SIGKILL) at the step named by
//     KRAKENCTL_FAULT_CRASH_AT (write, sync, prepare, meta, meta-rename, rename, renamed), so
//     test/e2e checks this against real processes; other builds compile the hook to nothing.
//   - Upload sessions (resumable, chunked uploads as in the OCI distribution API) survive a
//     process restart. Their SHA-256 state is persisted next to the data after every append, so
//     committing does not read the data again; if the state is missing, stale or for another
//     algorithm the data is re-read, so the digest check is never skipped.
//   - Partial downloads (OpenPartial: a blob written piece by piece in any order, readable
//     while it is written) survive a process restart too, with an opaque state of the
//     caller's (SaveState, e.g. a bitfield) that is written only after the data it describes
//     is fsynced. Their running hash is kept in memory, and hashing freezes the prefix it
//     covers, so Partial.Commit never reads a byte twice in one process; after a restart the
//     hash starts again from the first byte.
//   - One process at a time: Open takes an exclusive lock on the directory (ErrLocked).
//
// # Layout
//
//	DIR/LOCK                             the lock file
//	DIR/blobs/<algorithm>/<hex>          committed blobs; the file's mtime is its last use
//	DIR/meta/<algorithm>/<hex>/KIND      sidecar metadata of a blob (PutMeta), removed with it
//	DIR/uploads/<id>/data                bytes received by an upload session
//	DIR/uploads/<id>/hashstate           the persisted hash of those bytes (see hashstate.go)
//	DIR/partial/<algorithm>/<hex>/data   a partial download: a file of the blob's size,
//	                                     renamed into blobs/ by Partial.Commit
//	DIR/partial/<algorithm>/<hex>/state  the caller's state of it (Partial.SaveState)
//	DIR/tmp/                             temporary files, emptied by Open
//
// Open rebuilds the in-memory index from DIR/blobs: sizes from the files, the LRU order from
// their modification times. It removes temporary files, files in blobs/ whose name is not a
// digest, metadata whose blob is gone, and upload directories with invalid names. It keeps
// partial downloads (Store.Partials lists them) and removes the entries of partial/ that are
// not a directory named by a digest holding a data file, and those of committed blobs. Upload
// sessions of the earlier process stay resumable, and their bytes count as reserved, but they
// are the first thing evicted (before any blob) when room is needed, and by Trim.
//
// # Costs
//
// Methods that move blob bytes (Ingest, AppendUpload, CommitUpload, Partial.HashTo and
// Partial.Commit) take a ctx and stop between chunks when it is cancelled. The other methods
// touch only the index or small files, or like Partial.WriteAt and ReadAt one caller-sized
// range, and take none. Every byte of an ingest is hashed once and written once; reads go straight from the
// file (Blob implements io.WriterTo with the file's own WriteTo, so io.Copy to a TCP connection
// uses sendfile on Linux; Partial.OpenFile gives a descriptor to do the same while
// downloading). Capacity counts committed blobs and reservations: the bytes of writes in
// progress, of upload sessions and of open partial downloads. A partial download closed to be
// resumed later, temporary files and sidecar metadata are not counted.
package castore
