// Package castore is the local content-addressed blob store of origins and agents: blobs named
// by their digest, written once, verified before anyone can see them, and evicted least
// recently used first when a capacity is set.
//
// # Guarantees
//
//   - A reader never sees a partial or unverified blob. Every write goes to a temporary file in
//     the store's directory, is hashed while it is written, is compared with the expected
//     digest, is fsynced, and only then is renamed into place (and the directory fsynced). A
//     digest mismatch, a full store, a cancelled context or a crash leaves nothing behind and
//     changes nothing already stored.
//   - Eviction never removes a blob that is open (Store.Open until Blob.Close) or held
//     (Store.Hold until its release function is called), and nothing is ever evicted by Open:
//     only Ingest and CommitUpload evict, to make room for the blob they commit.
//   - Upload sessions (resumable, chunked uploads as in the OCI distribution API) survive a
//     process restart. Their SHA-256 state is persisted next to the data after every append, so
//     committing does not read the data again; if the state is missing, stale or for another
//     algorithm the data is re-read, so the digest check is never skipped.
//   - One process at a time: Open takes an exclusive lock on the directory (ErrLocked).
//
// # Layout
//
//	DIR/LOCK                         the lock file
//	DIR/blobs/<algorithm>/<hex>      committed blobs; the file's mtime is its last use
//	DIR/meta/<algorithm>/<hex>/KIND  sidecar metadata of a blob (PutMeta), removed with it
//	DIR/uploads/<id>/data            bytes received by an upload session
//	DIR/uploads/<id>/hashstate       the persisted hash of those bytes (see hashstate.go)
//	DIR/tmp/                         temporary files, emptied by Open
//
// Open rebuilds the in-memory index from DIR/blobs: sizes from the files, the LRU order from
// their modification times. It removes temporary files, files in blobs/ whose name is not a
// digest, metadata whose blob is gone, and upload directories with invalid names.
//
// # Costs
//
// Methods that move blob bytes (Ingest, AppendUpload, CommitUpload) take a ctx and stop between
// chunks when it is cancelled. The other methods touch only the index or small files and take
// none. Every byte of an ingest is hashed once and written once; reads go straight from the
// file (Blob implements io.WriterTo with the file's own WriteTo, so io.Copy to a TCP connection
// uses sendfile on Linux). Capacity counts committed blobs only: upload sessions, temporary
// files and sidecar metadata are not counted.
package castore
