// Package tagstore is the build-index's replicated tag store: a map of (repository, tag) to
// manifest digest, kept consistent across nodes by Raft (hashicorp/raft, with raft-boltdb for
// the log and stable store and file snapshots).
//
// The Store owns the Raft node and exposes domain methods: Put, Delete, Get, Tags,
// Repositories, Import and Export for tags; PutLink, DeleteLink, GetLink and Links for the OCI
// registry's per-repository links (blob/, manifest/, referrer/ records kept next to the tags,
// with the same guarantees, never listed as tags); Join, Remove and Status for membership, and
// Recover, offline, for a group that lost its quorum; Changes for a feed of applied changes.
// The Raft transport runs over mutual TLS when Deps carries TLS configurations, and entries a
// node could not apply are refused before they reach its log. The FSM is a thin adapter: log
// entries are commands (a type byte and a JSON payload) dispatched through a table, and the
// state lives in copy-on-write B-trees so a snapshot is taken in O(1) and streamed while
// writes continue.
//
// Consistency: writes go through the leader; a follower answers with a *NotLeaderError that
// names the leader and its API address, for the HTTP layer to forward to. Linearizable reads
// use the read-index protocol on the leader, with concurrent readers sharing one leadership
// confirmation; stale reads are served from any node's local state. Tag names follow the OCI
// distribution grammar and digests must be sha256 or sha512; bad input returns an error
// wrapping ErrInvalid and changes nothing.
//
// See DESIGN.md next to this file for the command format, snapshots, reads, the change feed,
// membership, transport security and recovery.
package tagstore
