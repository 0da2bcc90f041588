// Package buildindex implements the build-index role: a Raft group (tagstore) that maps
// repository tags (and the registry's links) to digests, served over HTTP (the paths are in
// server/api/buildindex.go).
//
// Consistency: reads are linearizable unless the request says ?stale=true, in which case the
// answering node reads its own state. Writes, linearizable reads, membership changes and
// restores sent to a follower are forwarded to the leader (one hop, marked with
// HeaderForwardedBy so a node with a stale view answers 503 instead of forwarding again).
// While no leader is known a request waits up to a few seconds for an election, then gets 503
// UNAVAILABLE with Retry-After. A write whose outcome Raft cannot tell (leadership lost while
// it committed) gets 504 OUTCOME_UNKNOWN, never a plain failure.
//
// Membership: POST /cluster/members adds a node (as a non-voter, promoted once it caught up;
// one that never answers is removed again and the join fails with 503), DELETE
// /cluster/members/{id} removes one, refusing with 409 QUORUM_AT_RISK a removal that would
// leave the voters without a quorum of live ones unless ?force=true. When the build-index
// runs with TLS, both need a client certificate of group "admin", or a member forwarding one,
// or (for a join) the joining node's own certificate (authorizeMembership); without
// TLS they are open, as for a network trusted by construction. With TLS, Raft itself runs over
// mutual TLS with the role's certificate, which must name raft.node_id in group build-index.
// docs/operations.md is the operator's guide, including `krakenctl cluster recover` for a
// group that lost its quorum.
//
// Links: the OCI registry proxy keeps per-repository links next to the tags
// (/repositories/{repo}/links/{name}; names "blob/<digest>", "manifest/<digest>",
// "referrer/<subject>/<digest>"). They are written, replicated, read (linearizable unless
// stale=true), forwarded, written back and restored exactly as tags are, but never appear in
// tag listings nor on the HTTP change feed (api.TagChange describes tags). A PUT answers 200
// with the stored api.Link. The value must follow the registry contract: for blob/ and
// manifest/ links the sha256 digest the content is stored under (the key itself for a sha256
// key), for referrer/ links the referrer's own digest; else 400 DIGEST_INVALID. A missing
// link is 404 BLOB_UNKNOWN (blob/) or MANIFEST_UNKNOWN (the others).
//
// Content check: with verify_content (the default) the leader accepts a tag only when its
// digest exists in the origin cluster under namespace = repository and, when that content is
// an image manifest or index it can parse, so does every descriptor it references. Content
// addressed by a sha512 digest is stored on the origins under its SHA-256, so such a digest is
// first resolved through the repository's manifest/ link (the tag's manifest, an index's
// children) or blob/ link (configs, layers): a tag without one is 404 MANIFEST_UNKNOWN, a
// reference without one 400 MANIFEST_BLOB_UNKNOWN. Links are checked too: a blob/ or manifest/
// value must exist on the origins (400 BLOB_UNKNOWN, MANIFEST_BLOB_UNKNOWN), a referrer/ link
// needs the referrer's manifest/ link in the repository (400 MANIFEST_UNKNOWN).
//
// Durability to the storage backend: every node, leader or follower, follows the change feed
// of its own store and queues each batch of changes in its durable queue (bbolt, fsynced)
// before it moves its cursor past them. A write-back task does not carry values; it names tags
// and the index of the change that prompted it, and when it runs it writes the node's current
// value of each tag: the tag with its Raft index, or a tombstone when the tag is gone. Writes
// are read-compare-write against the backend: an object is replaced only by a record with a
// higher index, so tasks are idempotent, may run in any order and on any node, and a node
// that lags never rolls the backend back (a per-tag lock orders the writes of one node;
// between nodes, a lagging node's write can only win the narrow race between its read and its
// write, and it then writes the newer value itself once it applies it). A task waits until
// the node has applied the index it names, so a node replaying its log after a restart never
// writes an old value in place of a new one.
//
// Why an acknowledged change cannot be lost from the backend: it is committed in a quorum's
// logs before it is acknowledged, so every node that survives applies it (a new leader
// commits it in its term), and each of them queues it for write-back. When a node's feed can
// no longer deliver the changes since its cursor (it fell behind, or installed a snapshot), it
// queues a full reconciliation instead: every live tag, and tombstones for objects of tags
// that no longer exist. Followers delay their tasks (writeback.follower_delay) so that
// normally the leader's copy lands first and followers only confirm it; if the leader died
// right after acknowledging, the followers' tasks write the change.
//
// Backend objects live in namespace tags_namespace, named ObjectName(repo, tag), holding a
// JSON Record; a link's object is named and recorded under its stored name
// (tagstore.LinkKey), so links are written back and restored with the tags. POST /cluster/restore lists them, imports the live ones into the store and then
// rewrites every object with this cluster's indexes (a fresh cluster's log starts at 1 again;
// until then the old, higher indexes would win every comparison). Run it on a fresh cluster
// after the old one is gone; it is idempotent.
package buildindex
